//! A bounded, deterministic fuzz run on stable Rust: every fuzz target's corpus, then
//! random mutations of it (bit flips, byte changes, truncation, extension, splicing),
//! through the same checks the cargo-fuzz targets run (`xnat::fuzzing`). Coverage-guided
//! fuzzing runs with `cargo +nightly fuzz run TARGET` (see fuzz/).

use std::path::Path;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read(e.path()).ok())
        .collect();
    assert!(!v.is_empty(), "empty corpus {}", dir.display());
    v.sort();
    v
}

fn mutate(rng: &mut Rng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut d = base.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] ^= 1 << rng.below(8);
            }
            1 if !d.is_empty() => {
                let i = rng.below(d.len());
                d[i] = rng.next() as u8;
            }
            2 => {
                let n = rng.below(d.len() + 1);
                d.truncate(n);
            }
            3 => {
                for _ in 0..rng.below(16) {
                    d.push(rng.next() as u8);
                }
            }
            4 if !other.is_empty() => {
                let at = rng.below(d.len() + 1);
                let from = rng.below(other.len());
                d.splice(at..at, other[from..].iter().copied().take(32));
            }
            _ if !d.is_empty() => {
                // Interesting values at a random offset.
                let i = rng.below(d.len());
                d[i] = [0u8, 1, 4, 5, 6, 17, 0x40, 0x45, 0x7f, 0x80, 0xff][rng.below(11)];
            }
            _ => {}
        }
    }
    d
}

fn run(target: &str, iterations: usize, mut check: impl FnMut(&[u8])) {
    let seeds = corpus(target);
    for s in &seeds {
        check(s);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..iterations {
        let a = &seeds[rng.below(seeds.len())];
        let b = &seeds[rng.below(seeds.len())];
        let m = mutate(&mut rng, a, b);
        check(&m);
    }
}

#[test]
fn frames() {
    run("parse_frame", 200_000, xnat::fuzzing::frame);
}

#[test]
fn nat_engine() {
    let mut e = xnat::fuzzing::engine();
    run("nat_translate", 100_000, |d| {
        xnat::fuzzing::nat_translate(&mut e, d)
    });
}

#[test]
fn config_files() {
    run("config", 20_000, xnat::fuzzing::config);
}

#[test]
fn control_requests() {
    run("control_request", 50_000, xnat::fuzzing::control_request);
}
