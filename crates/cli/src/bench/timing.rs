//! Timing for benchmarks: warm-up runs, then the median of repeated runs, with the
//! device synchronized around each run so GPU work is counted.

use std::time::Instant;

use linattn_tensor::{Device, Result};

/// Median, minimum and maximum of repeated runs, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
}

/// Runs `f` `warmup` times, then until `min_runs` runs and at least `min_total_s`
/// seconds (at most `max_runs`), synchronizing `device` after each run.
pub fn time_runs(
    device: &Device,
    warmup: usize,
    min_runs: usize,
    min_total_s: f64,
    mut f: impl FnMut() -> Result<()>,
) -> Result<Timing> {
    const MAX_RUNS: usize = 200;
    for _ in 0..warmup {
        f()?;
    }
    device.synchronize()?;
    let mut samples = Vec::new();
    let start_all = Instant::now();
    while samples.len() < min_runs || (start_all.elapsed().as_secs_f64() < min_total_s && samples.len() < MAX_RUNS) {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        samples.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok(summarize(&mut samples))
}

/// Median/min/max of samples in milliseconds (sorts them).
pub fn summarize(samples: &mut [f64]) -> Timing {
    samples.sort_by(|a, b| a.total_cmp(b));
    let n = samples.len();
    let median_ms = if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        samples[n / 2]
    } else {
        0.5 * (samples[n / 2 - 1] + samples[n / 2])
    };
    Timing {
        median_ms,
        min_ms: samples.first().copied().unwrap_or(f64::NAN),
        max_ms: samples.last().copied().unwrap_or(f64::NAN),
        runs: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(summarize(&mut [3.0, 1.0, 2.0]).median_ms, 2.0);
        assert_eq!(summarize(&mut [4.0, 1.0, 2.0, 3.0]).median_ms, 2.5);
    }
}
