//! A log-linear latency histogram (32 sub-buckets per power of two: at most ~3 % error),
//! fixed size, no allocation after creation.

const SUB_BITS: u32 = 5;
const SUB: usize = 1 << SUB_BITS;
const BUCKETS: usize = SUB + (64 - SUB_BITS as usize) * SUB;

/// Histogram of nanosecond values.
#[derive(Clone)]
pub struct Hist {
    counts: Vec<u64>,
    n: u64,
    sum: u128,
    min: u64,
    max: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            counts: vec![0; BUCKETS],
            n: 0,
            sum: 0,
            min: u64::MAX,
            max: 0,
        }
    }
}

#[inline]
fn index(v: u64) -> usize {
    if v < SUB as u64 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros();
    let sub = (v >> (e - SUB_BITS)) as usize & (SUB - 1);
    SUB + (e - SUB_BITS) as usize * SUB + sub
}

/// Smallest value of bucket `i`.
fn lower(i: usize) -> u64 {
    if i < SUB {
        return i as u64;
    }
    let k = i - SUB;
    let e = (k / SUB) as u32 + SUB_BITS;
    ((SUB + k % SUB) as u64) << (e - SUB_BITS)
}

/// Width of bucket `i`.
fn width(i: usize) -> u64 {
    if i < SUB {
        return 1;
    }
    1u64 << ((i - SUB) / SUB)
}

impl Hist {
    /// Records one value.
    #[inline]
    pub fn record(&mut self, v: u64) {
        if let Some(c) = self.counts.get_mut(index(v)) {
            *c += 1;
        }
        self.n += 1;
        self.sum += u128::from(v);
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }

    /// Adds another histogram.
    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += *b;
        }
        self.n += o.n;
        self.sum += o.sum;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
    }

    /// Number of values.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The `q`-quantile (0..=1): the middle of its bucket, clamped to the observed range (the
    /// exact maximum for the last rank).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.n == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.n as f64).ceil() as u64).max(1);
        if rank >= self.n {
            return self.max;
        }
        let mut acc = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= rank {
                let mid = lower(i).saturating_add(width(i) / 2);
                return mid.clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Summary as JSON (nanoseconds).
    pub fn json(&self) -> serde_json::Value {
        if self.n == 0 {
            return serde_json::json!({ "samples": 0 });
        }
        serde_json::json!({
            "samples": self.count(),
            "min": self.min,
            "mean": (self.sum / u128::from(self.n)) as u64,
            "p50": self.quantile(0.50),
            "p90": self.quantile(0.90),
            "p99": self.quantile(0.99),
            "p999": self.quantile(0.999),
            "max": self.max,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_values() {
        for v in [
            0u64,
            1,
            31,
            32,
            33,
            63,
            64,
            1000,
            123_456_789,
            u64::MAX / 3,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(lower(i) <= v, "{v}: lower {}", lower(i));
            assert!(
                v - lower(i) < width(i),
                "{v}: lower {} width {}",
                lower(i),
                width(i)
            );
        }
    }

    #[test]
    fn quantiles_are_close() {
        let mut h = Hist::default();
        for v in 1..=100_000u64 {
            h.record(v);
        }
        for (q, want) in [(0.5, 50_000.0), (0.9, 90_000.0), (0.99, 99_000.0)] {
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.04, "q{q}: {got}");
        }
        assert_eq!(h.quantile(1.0), 100_000);
        let mut g = Hist::default();
        g.record(5);
        g.merge(&h);
        assert_eq!(g.count(), 100_001);
        assert_eq!(g.quantile(0.0), 1);
    }
}
