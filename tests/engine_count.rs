//! Smoke runs of the callgrind count's workloads whose clock stands still
//! (`bench/engine_count.rs`, `xnat-engine-count`): outside valgrind its client requests do
//! nothing and it prints how many of the measured frames the engine translated. Each run
//! checks what its workload is there to measure.

use std::process::Command;

/// Runs `xnat-engine-count LIVE PACKETS KIND` with `XNAT_BENCH_BATCH=batch`: the frames
/// translated, and what it reported on stderr.
fn count(live: u32, packets: u32, kind: &str, batch: u32) -> (u64, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xnat-engine-count"))
        .args([live.to_string(), packets.to_string(), kind.to_string()])
        .env("XNAT_BENCH_BATCH", batch.to_string())
        .output()
        .expect("xnat-engine-count runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{kind}: {err}");
    let n = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count");
    (n, err)
}

#[test]
fn new_connections_into_a_full_table_all_get_in_by_evicting() {
    for batch in [1, 64] {
        let (n, err) = count(2000, 400, "new-full", batch);
        assert_eq!(n, 400, "batch {batch}: {err}");
        assert!(err.contains("evict: "), "{err}");
    }
}

#[test]
fn new_connections_into_a_table_full_of_established_ones_are_mostly_refused() {
    for batch in [1, 64] {
        let (n, err) = count(2000, 400, "new-refused", batch);
        // The default policy never evicts an established connection: only the few SYNs
        // that find a never-answered pair (an earlier SYN of the flood) to evict get in.
        assert!(n < 100, "batch {batch}: {n} of 400 translated: {err}");
        let fill: f64 = err
            .split("fill ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .expect("the fill is reported");
        assert!(fill > 95.0, "{err}");
    }
}
