//! Devices: the CPU, a CUDA GPU (through cudarc) and a WebGPU adapter (through wgpu).
//!
//! Opening a device probes it safely: with no CUDA driver, no GPU, or no wgpu adapter the
//! constructor returns [`Error::DeviceUnavailable`] naming the reason; it never panics.
//! GPU devices are opened once per process and shared (cheap `Clone`).

use crate::error::{Error, Result};

/// A live device handle.
#[derive(Clone, Debug)]
pub enum Device {
    Cpu,
    Cuda(crate::cuda::CudaDevice),
    Wgpu(crate::wgpu::WgpuDevice),
}

/// The kind of a device, without a live handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    Cpu,
    Cuda,
    Wgpu,
}

impl DeviceKind {
    pub const fn name(self) -> &'static str {
        match self {
            DeviceKind::Cpu => "cpu",
            DeviceKind::Cuda => "cuda",
            DeviceKind::Wgpu => "wgpu",
        }
    }
}

impl std::fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Device {
    /// Opens CUDA device `ordinal` (shared per process).
    pub fn cuda(ordinal: usize) -> Result<Device> {
        crate::cuda::CudaDevice::open(ordinal).map(Device::Cuda)
    }

    /// Opens the default WebGPU adapter (shared per process).
    pub fn wgpu() -> Result<Device> {
        crate::wgpu::WgpuDevice::open_default().map(Device::Wgpu)
    }

    /// Parses `cpu`, `cuda`, `cuda:N` or `wgpu` and opens that device.
    pub fn parse(spec: &str) -> Result<Device> {
        let spec = spec.trim().to_ascii_lowercase();
        match spec.as_str() {
            "cpu" => Ok(Device::Cpu),
            "wgpu" | "webgpu" => Device::wgpu(),
            "cuda" | "gpu" => Device::cuda(0),
            s if s.starts_with("cuda:") => {
                let ordinal = s[5..]
                    .parse::<usize>()
                    .map_err(|_| Error::invalid(format!("device `{spec}`: expected cuda:N with N a GPU index")))?;
                Device::cuda(ordinal)
            }
            _ => Err(Error::invalid(format!("unknown device `{spec}`: expected cpu, cuda, cuda:N or wgpu"))),
        }
    }

    pub fn kind(&self) -> DeviceKind {
        match self {
            Device::Cpu => DeviceKind::Cpu,
            Device::Cuda(_) => DeviceKind::Cuda,
            Device::Wgpu(_) => DeviceKind::Wgpu,
        }
    }

    /// Human-readable name: adapter or GPU name and backend.
    pub fn name(&self) -> String {
        match self {
            Device::Cpu => format!("cpu ({} threads)", rayon::current_num_threads()),
            Device::Cuda(d) => d.name(),
            Device::Wgpu(d) => d.name(),
        }
    }

    /// Whether two handles are the same physical device.
    pub fn same_device(&self, other: &Device) -> bool {
        match (self, other) {
            (Device::Cpu, Device::Cpu) => true,
            (Device::Cuda(a), Device::Cuda(b)) => a.same_device(b),
            (Device::Wgpu(a), Device::Wgpu(b)) => a.same_device(b),
            _ => false,
        }
    }

    /// Waits until all work queued on the device has finished.
    pub fn synchronize(&self) -> Result<()> {
        match self {
            Device::Cpu => Ok(()),
            Device::Cuda(d) => d.synchronize(),
            Device::Wgpu(d) => d.synchronize(),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(d) => write!(f, "cuda:{}", d.ordinal()),
            Device::Wgpu(_) => f.write_str("wgpu"),
        }
    }
}

fn env_flag(name: &str) -> bool {
    matches!(std::env::var(name).as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// Whether GPU tests must not skip: `LINATTN_REQUIRE_GPU=1` (or `true`, `yes`).
pub fn gpu_required() -> bool {
    env_flag("LINATTN_REQUIRE_GPU")
}

/// Whether WebGPU tests must not skip: `LINATTN_REQUIRE_WGPU=1` (set by `cargo xtask ci`,
/// so CI needs Mesa lavapipe) or `LINATTN_REQUIRE_GPU=1`.
pub fn wgpu_required() -> bool {
    env_flag("LINATTN_REQUIRE_WGPU") || gpu_required()
}

/// Whether CUDA tests must not skip: `LINATTN_REQUIRE_CUDA=1` or `LINATTN_REQUIRE_GPU=1`.
pub fn cuda_required() -> bool {
    env_flag("LINATTN_REQUIRE_CUDA") || gpu_required()
}

/// Prints why a test skipped on the raw stderr handle, which the test harness does not
/// capture, so the skip shows in every log even though the test counts as passed.
pub fn report_skip(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {message}");
}
