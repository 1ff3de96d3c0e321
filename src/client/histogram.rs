//! A log-linear latency histogram in the manner of HdrHistogram: 128 linear buckets per
//! power of two, so a value is known to within 1/128 (0.8%) of itself, from 1 ns to
//! about 275 s in 4,096 counters. Recording is an index computation and an add; one
//! histogram per task, merged at the end, needs no locking.

use std::time::Duration;

/// Linear buckets per power of two, as a power of two.
const SUB_BITS: u32 = 7;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two above the linear range (values up to 2^(SUB_BITS + GROUPS) ns).
const GROUPS: usize = 31;
const BUCKETS: usize = SUB * (GROUPS + 1);
/// Values at or above this (2^38 ns, about 275 s) are counted in the last bucket.
const CEILING: u64 = 1 << (SUB_BITS as usize + GROUPS);

#[derive(Clone)]
pub struct Histogram {
    counts: Box<[u64]>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("total", &self.total)
            .field("min", &self.min)
            .field("max", &self.max)
            .finish()
    }
}

fn index(nanos: u64) -> usize {
    let v = nanos.min(CEILING - 1);
    if v < SUB as u64 {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    // (v >> shift) is in [SUB, 2 * SUB): the top SUB_BITS + 1 bits of v.
    SUB * (shift as usize + 1) + ((v >> shift) as usize - SUB)
}

/// The largest value a bucket holds.
fn upper(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = (index / SUB - 1) as u32;
    let sub = (index % SUB + SUB) as u64;
    ((sub + 1) << shift) - 1
}

impl Histogram {
    pub fn new() -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            total: 0,
            min: u64::MAX,
            max: 0,
            sum: 0,
        }
    }

    pub fn record(&mut self, d: Duration) {
        self.record_nanos(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    }

    pub fn record_nanos(&mut self, nanos: u64) {
        self.counts[index(nanos)] += 1;
        self.total += 1;
        self.min = self.min.min(nanos);
        self.max = self.max.max(nanos);
        self.sum += u128::from(nanos);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.total += other.total;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.sum += other.sum;
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn min(&self) -> Duration {
        Duration::from_nanos(if self.total == 0 { 0 } else { self.min })
    }

    pub fn max(&self) -> Duration {
        Duration::from_nanos(self.max)
    }

    pub fn mean(&self) -> Duration {
        match self.total {
            0 => Duration::ZERO,
            n => Duration::from_nanos((self.sum / u128::from(n)) as u64),
        }
    }

    /// The value below which `q` (0..=1) of the recorded values fall: the upper bound of
    /// the bucket holding the rank, never above the largest value recorded.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_nanos(upper(i).clamp(self.min, self.max));
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value lands in a bucket whose range holds it, within 1/128 of the value.
    #[test]
    fn buckets_hold_their_values() {
        let mut v = 1u64;
        while v < CEILING {
            for x in [v - 1, v, v + v / 3] {
                let i = index(x);
                assert!(upper(i) >= x, "{x} above bucket {i} ({})", upper(i));
                let lower = if i == 0 { 0 } else { upper(i - 1) + 1 };
                assert!(lower <= x, "{x} below bucket {i} ({lower})");
                assert!((upper(i) - lower) as f64 <= x as f64 / 128.0 + 1.0, "{x}");
            }
            v *= 2;
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    /// Quantiles of a uniform 1..=10000 µs sample come out within 1%.
    #[test]
    fn quantiles_of_uniform_values() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        for (q, want) in [
            (0.5, 5_000.0),
            (0.9, 9_000.0),
            (0.99, 9_900.0),
            (0.999, 9_990.0),
        ] {
            let got = h.quantile(q).as_secs_f64() * 1e6;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.max(), Duration::from_micros(10_000));
        assert_eq!(h.min(), Duration::from_micros(1));
        assert_eq!(h.quantile(1.0), Duration::from_micros(10_000));
        assert_eq!(h.mean(), Duration::from_nanos(5_000_500));
    }

    /// Merging two histograms is the same as recording everything in one.
    #[test]
    fn merge_adds_up() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for n in 0..1000u64 {
            let d = Duration::from_nanos(n * n * 37);
            if n % 3 == 0 {
                a.record(d)
            } else {
                b.record(d)
            }
            all.record(d);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        for q in [0.1, 0.5, 0.99] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
        assert_eq!(
            (a.min(), a.max(), a.mean()),
            (all.min(), all.max(), all.mean())
        );
    }

    /// An empty histogram reports zeros rather than panicking.
    #[test]
    fn empty_is_zero() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), Duration::ZERO);
        assert_eq!(
            (h.min(), h.max(), h.mean()),
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        );
    }
}
