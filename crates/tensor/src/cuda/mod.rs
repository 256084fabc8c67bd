//! CUDA backend: devices, device buffers, the PTX kernel registry and launches.
//!
//! Built on `cudarc` with dynamic loading, so the crate builds and runs where no CUDA is
//! installed: [`CudaDevice::open`] first checks that the driver library can be loaded
//! (`is_culib_present`), then initializes the driver, counts devices and checks the
//! ordinal, returning [`Error::DeviceUnavailable`] with the precise reason instead of
//! panicking. A device is opened once per process and cached per ordinal: every handle
//! to `cuda:N` shares one primary context, one stream, and one module/function cache.
//!
//! - [`CudaDevice`]: context + stream + caches; `alloc_zeroed`, `upload`, `function`,
//!   `kernel` (a launchable entry point).
//! - [`CudaBuffer`] (`buffer`): raw bytes (`CudaSlice<u8>`) on one device, with typed
//!   views for kernel arguments.
//! - [`PtxModule`], [`CudaKernel`], [`KernelLaunch`] (`registry`): PTX embedded with
//!   `include_str!` from `kernels/ptx/`, loaded once per device.
//! - `args`: pushed kernel arguments checked against the PTX parameter list.
//! - `launch`: grid helpers that respect gridDim limits (x < 2^31, y and z <= 65535).
//! - `kernels`: this crate's PTX modules; `ops`: the tensor ops on CUDA; `non_finite`:
//!   the device scan behind `crate::ops::first_non_finite`.
//!
//! All work is queued on the device's single stream, in order; `download` and
//! `synchronize` wait for it. Errors from the driver become [`Error::Cuda`] (with what
//! was being done) or [`Error::Kernel`] (naming module and entry point).

pub mod args;
pub mod buffer;
pub mod kernels;
pub mod launch;
pub mod non_finite;
pub mod ops;
pub mod registry;

#[cfg(test)]
mod gpu_tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};

pub use args::{ArgShape, KernelArg};
pub use buffer::CudaBuffer;
pub use cudarc::driver::{CudaSlice, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg};
pub use launch::{MAX_BLOCK_THREADS, MAX_GRID_X, MAX_GRID_YZ, grid_1d, grid_3d, grid_capped};
pub use registry::{CudaKernel, KernelLaunch, PtxModule, dtype_suffix};

use crate::error::{Error, Result};

/// Function cache: (module name, entry name) -> function and its PTX parameter shapes.
type FunctionCache = HashMap<(&'static str, String), (CudaFunction, Arc<[args::ArgShape]>)>;

/// A handle to one CUDA GPU (cheap to clone; all clones share the context and caches).
#[derive(Clone)]
pub struct CudaDevice {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    ordinal: usize,
    name: String,
    compute_capability: (i32, i32),
    multiprocessors: u32,
    context: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Loaded modules by `PtxModule::name`, with the address of the PTX they came from.
    modules: Mutex<HashMap<&'static str, (usize, Arc<CudaModule>)>>,
    /// Resolved entry points (with their PTX parameter shapes) by (module, entry).
    functions: Mutex<FunctionCache>,
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CudaDevice(cuda:{}, {})", self.inner.ordinal, self.inner.name)
    }
}

fn open_devices() -> &'static Mutex<HashMap<usize, CudaDevice>> {
    static DEVICES: OnceLock<Mutex<HashMap<usize, CudaDevice>>> = OnceLock::new();
    DEVICES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Locks `mutex`, recovering the data if another thread panicked while holding it (the
/// caches stay consistent: entries are inserted whole).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `Error::Cuda` with what was being done.
pub(crate) fn cuda_error(context: impl std::fmt::Display, err: impl std::fmt::Display) -> Error {
    Error::Cuda(format!("{context}: {err}"))
}

impl CudaDevice {
    /// Opens CUDA device `ordinal`, or returns the handle opened earlier in this process.
    ///
    /// Without a loadable driver library, without a GPU, or with `ordinal` out of range
    /// this is [`Error::DeviceUnavailable`] for `cuda:<ordinal>`, never a panic.
    pub fn open(ordinal: usize) -> Result<CudaDevice> {
        let mut devices = lock(open_devices());
        if let Some(device) = devices.get(&ordinal) {
            return Ok(device.clone());
        }
        let _span = tracing::info_span!("cuda_device_open", ordinal).entered();
        // cudarc panics when a driver symbol is missing (an older libcuda than the bindings);
        // turn any such panic into an unavailable device.
        let device = std::panic::catch_unwind(|| Self::create(ordinal)).unwrap_or_else(|panic| {
            let reason = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the CUDA driver bindings panicked".into());
            Err(unavailable(ordinal, format!("driver initialization failed: {reason}")))
        })?;
        tracing::info!(ordinal, name = %device.inner.name, "opened CUDA device");
        devices.insert(ordinal, device.clone());
        Ok(device)
    }

    fn create(ordinal: usize) -> Result<CudaDevice> {
        // SAFETY: `is_culib_present` only tries to dlopen the driver library by its usual
        // names and drops the handle; it calls no driver function.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(unavailable(
                ordinal,
                "the CUDA driver library (libcuda.so) is not installed or cannot be loaded",
            ));
        }
        cudarc::driver::result::init().map_err(|e| unavailable(ordinal, format!("cuInit failed: {e}")))?;
        let count =
            CudaContext::device_count().map_err(|e| unavailable(ordinal, format!("cannot count devices: {e}")))?;
        let count = usize::try_from(count).unwrap_or(0);
        if count == 0 {
            return Err(unavailable(ordinal, "the CUDA driver reports no GPU"));
        }
        if ordinal >= count {
            return Err(unavailable(
                ordinal,
                format!("ordinal {ordinal} is out of range: {count} CUDA device(s) present"),
            ));
        }
        let context =
            CudaContext::new(ordinal).map_err(|e| unavailable(ordinal, format!("cannot create a context: {e}")))?;
        let gpu_name = context.name().map_err(|e| cuda_error("cuDeviceGetName", e))?;
        let compute_capability = context.compute_capability().map_err(|e| cuda_error("compute capability", e))?;
        let multiprocessors = context
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| cuda_error("multiprocessor count", e))?;
        let stream = context.default_stream();
        let name = format!("{gpu_name} (cuda:{ordinal}, sm_{}{})", compute_capability.0, compute_capability.1);
        Ok(CudaDevice {
            inner: Arc::new(DeviceInner {
                ordinal,
                name,
                compute_capability,
                multiprocessors: u32::try_from(multiprocessors).unwrap_or(1).max(1),
                context,
                stream,
                modules: Mutex::new(HashMap::new()),
                functions: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The device index.
    pub fn ordinal(&self) -> usize {
        self.inner.ordinal
    }

    /// GPU name, ordinal and architecture, e.g. `NVIDIA H100 (cuda:0, sm_90)`.
    pub fn name(&self) -> String {
        self.inner.name.clone()
    }

    /// `(major, minor)` compute capability.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.inner.compute_capability
    }

    /// Number of streaming multiprocessors (for sizing grid-stride launches).
    pub fn multiprocessor_count(&self) -> u32 {
        self.inner.multiprocessors
    }

    /// Whether both handles are the same GPU.
    pub fn same_device(&self, other: &CudaDevice) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner) || self.inner.ordinal == other.inner.ordinal
    }

    /// The context (primary context of the GPU).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.inner.context
    }

    /// The stream every linattn op on this device is queued on. Kernels written by other
    /// crates must use it too, so work stays ordered.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.inner.stream
    }

    /// Waits until all work queued on the device's stream has finished.
    pub fn synchronize(&self) -> Result<()> {
        self.inner.stream.synchronize().map_err(|e| cuda_error(format!("synchronize cuda:{}", self.inner.ordinal), e))
    }

    /// A zero-filled buffer of `bytes` bytes.
    pub fn alloc_zeroed(&self, bytes: usize) -> Result<CudaBuffer> {
        let _span = tracing::trace_span!("cuda_alloc", bytes).entered();
        // A zero-byte allocation is rejected by the driver: keep one byte, report zero.
        let slice = self
            .inner
            .stream
            .alloc_zeros::<u8>(bytes.max(1))
            .map_err(|e| cuda_error(format!("allocate {bytes} bytes on cuda:{}", self.inner.ordinal), e))?;
        Ok(CudaBuffer::new(slice, bytes, self.clone()))
    }

    /// A buffer holding a copy of `bytes`.
    pub fn upload(&self, bytes: &[u8]) -> Result<CudaBuffer> {
        let _span = tracing::trace_span!("cuda_upload", bytes = bytes.len()).entered();
        if bytes.is_empty() {
            return self.alloc_zeroed(0);
        }
        let slice = self
            .inner
            .stream
            .clone_htod(bytes)
            .map_err(|e| cuda_error(format!("upload {} bytes to cuda:{}", bytes.len(), self.inner.ordinal), e))?;
        Ok(CudaBuffer::new(slice, bytes.len(), self.clone()))
    }
}

fn unavailable(ordinal: usize, reason: impl Into<String>) -> Error {
    Error::DeviceUnavailable { device: format!("cuda:{ordinal}"), reason: reason.into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without a GPU, opening must be a clean `DeviceUnavailable`; with a GPU,
    /// a repeated open must return the same cached device and an absurd ordinal must fail.
    #[test]
    fn open_probes_safely_and_caches() {
        match CudaDevice::open(0) {
            Ok(first) => {
                let again = CudaDevice::open(0).expect("second open of cuda:0");
                assert!(Arc::ptr_eq(&first.inner, &again.inner));
                assert!(first.name().contains("cuda:0"));
            }
            Err(Error::DeviceUnavailable { device, reason }) => {
                assert!(!crate::gpu_required(), "LINATTN_REQUIRE_GPU is set but cuda:0 is unavailable: {reason}");
                assert_eq!(device, "cuda:0");
                assert!(!reason.is_empty());
                eprintln!("cuda:0 unavailable (expected without a GPU): {reason}");
            }
            Err(other) => panic!("expected DeviceUnavailable, got {other}"),
        }
        match CudaDevice::open(4095) {
            Err(Error::DeviceUnavailable { device, reason }) => {
                assert_eq!(device, "cuda:4095");
                assert!(!reason.is_empty());
            }
            Err(other) => panic!("expected DeviceUnavailable, got {other}"),
            Ok(_) => panic!("cuda:4095 cannot exist"),
        }
    }
}
