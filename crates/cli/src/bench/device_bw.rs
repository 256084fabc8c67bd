//! Memory read bandwidth of the device a benchmark runs on, measured in the same run: the
//! peer of bandwidth-bound kernels (quantized matvec, decode steps) on that device.
//!
//! - CPU: [`membw::read_bandwidth_gbps`] (all rayon threads sum a 256 MiB buffer).
//! - CUDA / WebGPU: an f32 buffer of [`GPU_BUFFER_BYTES`] (less where the device cannot
//!   bind that much as one storage buffer) is uploaded once, holding 1.0 everywhere, and
//!   scanned on the device by `ops::first_non_finite_each`. That op is a pure read pass:
//!   every element is read once with a grid stride and, all values being finite, nothing
//!   is written but a few result bytes per scan, so bytes counted = scans x buffer bytes
//!   read (the 8-16 result bytes per scan are left out). One timed pass queues `scans`
//!   scans of the same buffer and reads their answers back once (`first_non_finite_each`
//!   waits for the device). `scans` is chosen from a first warm-up scan so that one pass
//!   lasts at least [`MIN_PASS_S`], making the launch and read-back latency small next to
//!   the streaming (on an H100 one 256 MiB scan takes ~0.1 ms). The best pass is
//!   reported (bandwidth is a capacity; noise only lowers it).
//!
//! Why not `add` or `scale`: both allocate a fresh zero-filled output on every call, so
//! the timed pass would include an allocation and a fill that are not the op's traffic.
//!
//! On Mesa lavapipe (Vulkan on the CPU) the buffer lives in host memory, so the figure is
//! the CPU's memory bandwidth as reached by a compiled WGSL shader: one 256 MiB scan takes
//! a few tens of milliseconds there, and the default of 5 passes about a second.

use std::time::Instant;

use linattn_tensor::{Device, Result, Tensor, ops};
use serde_json::{Value, json};

use super::membw;

/// Bytes of the scanned GPU buffer (capped by the device's storage-binding limit).
pub const GPU_BUFFER_BYTES: usize = 256 << 20;
/// Shortest timed pass on a GPU: more scans of the buffer are queued until it lasts this long.
pub const MIN_PASS_S: f64 = 0.02;
/// Most scans queued in one pass.
const MAX_SCANS_PER_PASS: usize = 64;

/// A measured read bandwidth and how it was measured.
#[derive(Clone, Debug)]
pub struct DeviceBandwidth {
    /// GB/s (1e9 bytes per second) of the best pass.
    pub gbps: f64,
    /// Bytes of the scanned buffer.
    pub buffer_bytes: usize,
    /// Scans of the buffer per timed pass.
    pub scans_per_pass: usize,
    /// Timed passes (the best one is reported).
    pub passes: usize,
    /// What streamed the buffer.
    pub method: &'static str,
}

impl DeviceBandwidth {
    /// The `memory_read` JSON line of this measure on `device` (`device`: cpu, wgpu or
    /// cuda:N as before GPUs were measured; `device_name`: the adapter or GPU name).
    pub fn record(&self, device: &Device) -> Value {
        json!({
            "op": "memory_read", "device": device.to_string(), "device_name": device.name(), "gbps": self.gbps,
            "bytes": self.buffer_bytes, "scans_per_pass": self.scans_per_pass, "passes": self.passes,
            "method": self.method,
        })
    }
}

/// Scans of one timed pass: enough for [`MIN_PASS_S`] given one scan's seconds, at
/// least 1 and at most [`MAX_SCANS_PER_PASS`].
pub fn scans_per_pass(one_scan_s: f64) -> usize {
    if !(one_scan_s.is_finite() && one_scan_s > 0.0) {
        return MAX_SCANS_PER_PASS;
    }
    ((MIN_PASS_S / one_scan_s).ceil() as usize).clamp(1, MAX_SCANS_PER_PASS)
}

/// Bytes of the GPU buffer for a device binding at most `max_binding_bytes` at once: the
/// default size, or the largest multiple of 4 KiB below the limit.
pub fn gpu_buffer_bytes(max_binding_bytes: u64) -> usize {
    let limit = usize::try_from(max_binding_bytes).unwrap_or(usize::MAX);
    GPU_BUFFER_BYTES.min(limit / 4096 * 4096)
}

/// The read bandwidth of `device`, best of `passes` timed passes (see the module header).
pub fn read_bandwidth(device: &Device, passes: usize) -> Result<DeviceBandwidth> {
    let passes = passes.max(1);
    let max_binding = match device {
        Device::Cpu => {
            return Ok(DeviceBandwidth {
                gbps: membw::read_bandwidth_gbps(passes),
                buffer_bytes: membw::SCAN_BYTES,
                scans_per_pass: 1,
                passes,
                method: "rayon sum over all threads",
            });
        }
        Device::Wgpu(d) => d.max_storage_buffer_bytes(),
        Device::Cuda(_) => u64::MAX,
    };
    let buffer_bytes = gpu_buffer_bytes(max_binding);
    let numel = buffer_bytes / 4;
    let buffer = Tensor::from_vec(vec![1.0f32; numel], [numel])?.to_device(device)?;
    // Warm-up scan: compiles the kernel and sizes the pass.
    let start = Instant::now();
    check_all_finite_scans(&[&buffer])?;
    let scans = scans_per_pass(start.elapsed().as_secs_f64());
    let queued: Vec<&Tensor> = vec![&buffer; scans];
    let mut best_s = f64::INFINITY;
    for _ in 0..passes {
        let start = Instant::now();
        check_all_finite_scans(&queued)?;
        best_s = best_s.min(start.elapsed().as_secs_f64());
    }
    Ok(DeviceBandwidth {
        gbps: (scans * buffer_bytes) as f64 / best_s / 1e9,
        buffer_bytes,
        scans_per_pass: scans,
        passes,
        method: "first_non_finite scan (read only)",
    })
}

/// Runs the scans and checks that they found nothing (a hit would mean a short scan).
fn check_all_finite_scans(tensors: &[&Tensor]) -> Result<()> {
    let found = ops::first_non_finite_each(tensors)?;
    match found.iter().flatten().next() {
        Some(hit) => Err(linattn_tensor::Error::invalid(format!(
            "device bandwidth: scan found {} at index {} in a buffer of ones",
            hit.value, hit.index
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_fill_the_minimum_pass() {
        assert_eq!(scans_per_pass(1.0), 1);
        assert_eq!(scans_per_pass(MIN_PASS_S), 1);
        assert_eq!(scans_per_pass(MIN_PASS_S / 4.0), 4);
        assert_eq!(scans_per_pass(1e-9), MAX_SCANS_PER_PASS);
        assert_eq!(scans_per_pass(0.0), MAX_SCANS_PER_PASS);
        assert_eq!(scans_per_pass(f64::NAN), MAX_SCANS_PER_PASS);
    }

    #[test]
    fn buffer_respects_the_binding_limit() {
        assert_eq!(gpu_buffer_bytes(u64::MAX), GPU_BUFFER_BYTES);
        assert_eq!(gpu_buffer_bytes(128 << 20), 128 << 20);
        assert_eq!(gpu_buffer_bytes((128 << 20) + 3), 128 << 20);
    }
}
