//! The machine's memory read bandwidth, measured in the same run as a benchmark so
//! quantized matvec can be reported as a fraction of it.
//!
//! Every thread of the rayon pool sums its own part of a buffer much larger than the
//! last-level cache (256 MiB of f32), with four independent accumulators per 8-lane
//! block so the loop vectorizes and is bound by loads, not by the add latency. The
//! buffer is advised to use transparent huge pages, as the benchmarked weights are. The
//! best of several passes is reported (bandwidth is a capacity; noise only lowers it).

use std::time::Instant;

use rayon::prelude::*;

/// Bytes of the scanned buffer.
pub const SCAN_BYTES: usize = 256 << 20;

fn sum_chunk(chunk: &[f32]) -> f32 {
    let mut acc = [[0f32; 8]; 4];
    let mut blocks = chunk.chunks_exact(32);
    for block in &mut blocks {
        for (a, lanes) in acc.iter_mut().zip(block.chunks_exact(8)) {
            for (x, &v) in a.iter_mut().zip(lanes) {
                *x += v;
            }
        }
    }
    let tail: f32 = blocks.remainder().iter().sum();
    acc.iter().flatten().sum::<f32>() + tail
}

/// Measured read bandwidth in GB/s (1e9 bytes per second) with all rayon threads.
pub fn read_bandwidth_gbps(passes: usize) -> f64 {
    // Huge pages, like the quantized weights it is compared with (see
    // `linattn_quant`'s weight allocation): with 4 KiB pages the scan measures TLB
    // misses and prefetcher restarts as much as memory.
    let mut storage = linattn_tensor::CpuBuffer::zeroed(SCAN_BYTES);
    let buffer = storage.as_slice_mut::<f32>().expect("a buffer of whole f32s");
    buffer.fill(1.0);
    let buffer = &*buffer;
    let threads = rayon::current_num_threads().max(1);
    let part = buffer.len().div_ceil(threads);
    let mut best = f64::INFINITY;
    let mut checksum = 0f32;
    for _ in 0..passes.max(1) {
        let start = Instant::now();
        checksum += buffer.par_chunks(part).map(sum_chunk).sum::<f32>();
        best = best.min(start.elapsed().as_secs_f64());
    }
    std::hint::black_box(checksum);
    SCAN_BYTES as f64 / best / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sum_is_exact_for_ones() {
        assert_eq!(sum_chunk(&vec![1.0; 1000]), 1000.0);
    }
}
