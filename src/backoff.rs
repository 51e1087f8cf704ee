//! The one backoff policy: used by delivery and by the spool writer's retries.

use std::time::Duration;

use backon::BackoffBuilder;

/// Exponential backoff with full jitter: attempt n waits a uniform random time in
/// `[0, min(max, initial * 2^n)]`. backon supplies the capped exponential sequence; its own
/// jitter only adds to the delay, so the full jitter is drawn here.
pub struct Backoff {
    caps: backon::ExponentialBackoff,
    last_cap: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, rng: fastrand::Rng) -> Backoff {
        let caps = backon::ExponentialBuilder::default()
            .with_min_delay(initial)
            .with_max_delay(max)
            .with_factor(2.0)
            .without_max_times()
            .build();
        Backoff {
            caps,
            last_cap: max,
            rng,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let cap = self.caps.next().unwrap_or(self.last_cap);
        self.last_cap = cap;
        Duration::from_millis(self.rng.u64(0..=cap.as_millis() as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over many seeds, attempt n's delay spans the whole of [0, min(max, initial * 2^n)]:
    /// never above the cap, up to near it, and about half of it on average (full jitter, not
    /// "cap plus a little").
    #[test]
    fn full_jitter_spans_a_doubling_capped_bound() {
        let caps = [100u64, 200, 400, 800, 1000, 1000, 1000];
        let runs = 2000;
        let mut draws = vec![Vec::new(); caps.len()];
        for seed in 0..runs {
            let mut b = Backoff::new(
                Duration::from_millis(100),
                Duration::from_millis(1000),
                fastrand::Rng::with_seed(seed),
            );
            for d in draws.iter_mut() {
                d.push(b.next_delay().as_millis() as u64);
            }
        }
        for (d, cap) in draws.iter().zip(caps) {
            let max = *d.iter().max().unwrap();
            let mean = d.iter().sum::<u64>() as f64 / runs as f64;
            assert!(max <= cap, "attempt capped at {cap}: max {max}");
            assert!(max * 10 >= cap * 9, "reaches near {cap}: max {max}");
            let half = cap as f64 / 2.0;
            assert!(
                (mean - half).abs() < half * 0.1,
                "mean {mean} for cap {cap}"
            );
        }
    }
}
