//! Key sequences shared by the engine benchmarks (`benches/engine.rs`, `benches/pairs.rs`,
//! `bench/engine_count.rs`), so that xnat and its baselines are driven by the same
//! packets: which flow each packet belongs to, drawn from a seeded PRNG (deterministic:
//! the same seed gives the same sequence on every run and machine).
//!
//! - uniform: every flow equally popular;
//! - Zipf (s = 1.0): the flow of popularity rank r (1-based) carries a share proportional
//!   to 1/r; ranks are scattered over the flow numbers (a stride coprime with the count),
//!   so popular flows are not neighbours in the table's input.
//!
//! The clock: [`Clock`] advances one second every `flows × ppfs` packets (ppfs: packets per
//! flow per second, on average over the flows), as a gateway's clock advances under that
//! load; each flow's first packet in a second pays the once-a-second refresh of its pair.

#![allow(dead_code)]

/// SplitMix64: small, fast, good enough for workload generation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How popular the flows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Popularity {
    Uniform,
    /// Zipf with exponent s = 1.0.
    Zipf,
}

impl Popularity {
    pub fn name(self) -> &'static str {
        match self {
            Popularity::Uniform => "uniform",
            Popularity::Zipf => "zipf",
        }
    }
}

/// `count` flow numbers in [0, flows), drawn with the given popularity from `seed`.
pub fn sequence(flows: u64, count: usize, pop: Popularity, seed: u64) -> Vec<u32> {
    assert!(flows > 0 && flows <= u32::MAX as u64);
    let mut rng = Rng::new(seed);
    match pop {
        Popularity::Uniform => (0..count).map(|_| rng.below(flows) as u32).collect(),
        Popularity::Zipf => {
            // Cumulative weights of ranks 1..=flows, then inverse-CDF sampling.
            let mut cdf = Vec::with_capacity(flows as usize);
            let mut sum = 0.0f64;
            for r in 1..=flows {
                sum += 1.0 / r as f64;
                cdf.push(sum);
            }
            // 7919 is prime and does not divide the flow counts used (10 k, 1 M, 4 M).
            let stride = if flows.is_multiple_of(7919) { 1 } else { 7919 };
            (0..count)
                .map(|_| {
                    let u = rng.unit() * sum;
                    let rank = cdf.partition_point(|&c| c <= u).min(flows as usize - 1) as u64;
                    ((rank * stride + 13) % flows) as u32
                })
                .collect()
        }
    }
}

/// The share of `seq` taken by its most popular `top` flows (for the report).
pub fn top_share(seq: &[u32], flows: u64, top: usize) -> f64 {
    let mut n = vec![0u32; flows as usize];
    for &f in seq {
        n[f as usize] += 1;
    }
    n.sort_unstable_by(|a, b| b.cmp(a));
    n.iter().take(top).map(|&c| c as f64).sum::<f64>() / seq.len().max(1) as f64
}

/// The gateway's coarse clock under a given load: one second every `flows × ppfs` packets
/// (never, with ppfs 0).
pub struct Clock {
    pub now: u32,
    per_second: u64,
    sent: u64,
}

impl Clock {
    pub fn new(now: u32, flows: u64, ppfs: u64) -> Clock {
        Clock {
            now,
            per_second: flows * ppfs,
            sent: 0,
        }
    }
    /// Counts `n` packets sent; returns the clock (advanced if a second has passed).
    #[inline]
    pub fn tick(&mut self, n: u64) -> u32 {
        if self.per_second > 0 {
            self.sent += n;
            while self.sent >= self.per_second {
                self.sent -= self.per_second;
                self.now += 1;
            }
        }
        self.now
    }
}

/// Packets per flow per second from `XNAT_BENCH_PPFS`, else `default`.
pub fn ppfs(default: u64) -> u64 {
    std::env::var("XNAT_BENCH_PPFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
