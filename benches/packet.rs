//! Fast-path cost of `xnat::packet`: parse alone, and parse + full SNAT rewrite (address,
//! port, TTL, MACs) per protocol, on 60-byte frames held in one buffer as in a UMEM frame;
//! and the partial-checksum completion (`offload/...`): the check on a frame whose checksum
//! is complete (what every forwarded TCP/UDP packet pays) and the completion of a partial
//! one, on 60-byte and 1514-byte UDP frames.
//!
//! Run: `cargo bench --bench packet`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use xnat::packet::builder::{
    build_icmp_echo, build_icmp_error, build_tcp_syn, build_udp, EchoKind, FrameSpec,
};
use xnat::packet::{self, forward_hop, parse, set_dst, set_inner_src, set_macs, set_src};

const HOST: u32 = 0x0a00_0002;
const REMOTE: u32 = 0xc613_0007;
const PUBLIC: u32 = 0xc612_0001;

fn frames() -> Vec<(&'static str, Vec<u8>)> {
    let spec = FrameSpec::new([2; 6], [4; 6], HOST, REMOTE);
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    let n = build_udp(&mut buf, &spec, 40000, 53).unwrap();
    out.push(("udp", buf[..n].to_vec()));
    let n = build_tcp_syn(&mut buf, &spec, 40000, 443, 1).unwrap();
    out.push(("tcp", buf[..n].to_vec()));
    let n = build_icmp_echo(&mut buf, &spec, EchoKind::Request, 7, 1).unwrap();
    out.push(("icmp_echo", buf[..n].to_vec()));
    // A "port unreachable" coming back to the public address, quoting UDP.
    let pub_spec = FrameSpec::new([2; 6], [4; 6], PUBLIC, REMOTE);
    build_udp(&mut buf, &pub_spec, 1024, 53).unwrap();
    let quoted = buf[14..14 + 28].to_vec();
    let err_spec = FrameSpec::new([4; 6], [2; 6], REMOTE, PUBLIC);
    let n = build_icmp_error(&mut buf, &err_spec, 3, 3, [0; 4], &quoted).unwrap();
    out.push(("icmp_error", buf[..n].to_vec()));
    out
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("packet");
    g.throughput(Throughput::Elements(1));
    for (name, frame) in frames() {
        g.bench_function(format!("parse/{name}"), |b| {
            b.iter(|| parse(black_box(&frame[..])))
        });
        assert!(parse(&frame).is_ok(), "{name}");
        // Each iteration restores the original frame first (a 60-byte copy, measured alone
        // by `copy_only`), so that every rewrite starts from the same bytes.
        let mut f = frame.clone();
        g.bench_function(format!("copy_only/{name}"), |b| {
            b.iter(|| black_box(&mut f[..]).copy_from_slice(&frame))
        });
        g.bench_function(format!("parse_snat_route/{name}"), |b| {
            b.iter(|| {
                f.copy_from_slice(&frame);
                let f = black_box(&mut f[..]);
                if let Ok(p) = parse(f) {
                    match p.kind() {
                        packet::L4Kind::IcmpError => {
                            set_dst(f, &p, HOST, 0);
                            set_inner_src(f, &p, HOST, 40000);
                        }
                        _ => set_src(f, &p, PUBLIC, 1024),
                    }
                    forward_hop(f, &p);
                    set_macs(f, [6; 6], [8; 6]);
                }
            })
        });
    }
    for payload in [18usize, 1472] {
        let spec = FrameSpec {
            payload_len: payload,
            ..FrameSpec::new([2; 6], [4; 6], HOST, REMOTE)
        };
        let mut buf = [0u8; 2048];
        let n = build_udp(&mut buf, &spec, 40000, 53).unwrap();
        let complete = buf[..n].to_vec();
        let p = parse(&complete).unwrap();
        // What an offloading sender hands on: the pseudo-header sum only.
        let mut partial = complete.clone();
        let ps = xnat::packet::checksum::pseudo_header_sum(HOST, REMOTE, 17, (n - 34) as u16);
        partial[40..42].copy_from_slice(&ps.to_be_bytes());
        let mut f = complete.clone();
        g.bench_function(format!("offload_check_complete/{n}B"), |b| {
            b.iter(|| packet::offload::complete_partial(black_box(&mut f[..]), &p))
        });
        g.bench_function(format!("offload_complete_partial/{n}B"), |b| {
            b.iter(|| {
                f.copy_from_slice(&partial);
                packet::offload::complete_partial(black_box(&mut f[..]), &p)
            })
        });
        g.bench_function(format!("copy_only/{n}B"), |b| {
            b.iter(|| black_box(&mut f[..]).copy_from_slice(&partial))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
