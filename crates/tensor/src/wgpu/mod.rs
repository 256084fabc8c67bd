//! WebGPU device through wgpu 30: adapter probing, buffers, the WGSL pipeline registry
//! and the dispatch helper every crate's WGSL kernels use.
//!
//! - [`WgpuDevice`]: one per process (`open_default`, cached in a `OnceLock`). No adapter,
//!   a failing device request or a panicking driver give [`Error::DeviceUnavailable`]
//!   naming the reason. Optional features `SHADER_F16`, `SUBGROUP`, `SUBGROUP_BARRIER`
//!   are requested when the adapter has them and recorded ([`WgpuDevice::features`]);
//!   limits are the adapter's own (`adapter.limits()`), so kernels may bind more than
//!   the default 4 storage buffers.
//! - [`WgpuBuffer`] (`buffer.rs`): storage buffers whose allocation is the logical byte
//!   length rounded up to a multiple of 4; f16/bf16 tensors are read in shaders as packed
//!   `u32` words (`kernels/wgsl/common/elements.wgsl`).
//! - [`WgslModule`], [`WgpuDevice::pipeline`] (`pipeline.rs`): WGSL sources embedded with
//!   `include_str!`, `//#import common/...` expansion, pipelines compiled once per
//!   (module, entry, override constants, binding layout) and cached.
//! - [`Launch`] (`launch.rs`): binds storage buffers and a uniform params struct,
//!   dispatches (splitting large workgroup counts over y) and submits.
//! - [`ops`]: the tensor ops (add, mul, scale, tiled matmul, softmax, RMSNorm);
//!   [`non_finite`]: the device scan behind `crate::ops::first_non_finite`.
//!
//! Errors: wgpu reports validation and out-of-memory errors through error scopes; every
//! call that can fail runs inside scopes ([`WgpuDevice::scoped`]) so they become `Err`,
//! and an uncaptured-error handler records stray errors (returned by `synchronize`)
//! instead of wgpu's default panic.

mod buffer;
mod launch;
mod modules;
pub mod non_finite;
pub mod ops;
mod pipeline;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

pub use self::buffer::WgpuBuffer;
pub use self::launch::{Binding, Launch, Workgroups, tensor_buffer};
pub use self::modules::{
    COMMON_ELEMENTS, COMMON_MODULES, TENSOR_BINARY, TENSOR_MATMUL, TENSOR_MODULES, TENSOR_NON_FINITE, TENSOR_RMS_NORM,
    TENSOR_SCALE, TENSOR_SOFTMAX,
};
pub use self::pipeline::{PipelineKey, WgslModule};

use crate::error::{Error, Result};

/// Optional device features this backend asks for when the adapter offers them.
pub const OPTIONAL_FEATURES: ::wgpu::Features =
    ::wgpu::Features::SHADER_F16.union(::wgpu::Features::SUBGROUP).union(::wgpu::Features::SUBGROUP_BARRIER);

/// A WebGPU device and queue, shared by every tensor on it (cheap `Clone`).
#[derive(Clone)]
pub struct WgpuDevice {
    inner: Arc<DeviceInner>,
}

struct DeviceInner {
    device: ::wgpu::Device,
    queue: ::wgpu::Queue,
    info: ::wgpu::AdapterInfo,
    limits: ::wgpu::Limits,
    features: ::wgpu::Features,
    shaders: Mutex<HashMap<&'static str, ::wgpu::ShaderModule>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<pipeline::CachedPipeline>>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
}

static DEFAULT_DEVICE: OnceLock<std::result::Result<WgpuDevice, String>> = OnceLock::new();

impl WgpuDevice {
    /// Opens the default adapter once per process: high-performance preference, native
    /// backends (Vulkan, Metal, DX12) before GL; `WGPU_BACKEND` and the other wgpu
    /// environment variables are honored.
    pub fn open_default() -> Result<WgpuDevice> {
        DEFAULT_DEVICE
            .get_or_init(|| {
                let _span = tracing::info_span!("wgpu_init").entered();
                match std::panic::catch_unwind(probe) {
                    Ok(result) => result,
                    Err(panic) => Err(format!("the wgpu driver panicked while probing: {}", panic_message(&panic))),
                }
            })
            .clone()
            .map_err(|reason| Error::DeviceUnavailable { device: "wgpu".into(), reason })
    }

    /// Adapter name and backend, e.g. `llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)`.
    pub fn name(&self) -> String {
        format!("{} ({:?})", self.inner.info.name, self.inner.info.backend)
    }

    /// The adapter description (vendor, driver, backend, subgroup sizes).
    pub fn adapter_info(&self) -> &::wgpu::AdapterInfo {
        &self.inner.info
    }

    /// The device limits (the adapter's own limits were requested).
    pub fn limits(&self) -> &::wgpu::Limits {
        &self.inner.limits
    }

    /// The optional features granted (a subset of [`OPTIONAL_FEATURES`]).
    pub fn features(&self) -> ::wgpu::Features {
        self.inner.features
    }

    /// Whether shaders may use `enable f16;`.
    pub fn has_shader_f16(&self) -> bool {
        self.inner.features.contains(::wgpu::Features::SHADER_F16)
    }

    /// Whether shaders may use subgroup operations (sizes vary: 8 on lavapipe, 32 on NVIDIA).
    pub fn has_subgroups(&self) -> bool {
        self.inner.features.contains(::wgpu::Features::SUBGROUP)
    }

    /// The largest buffer this device can bind as one storage buffer, in bytes.
    pub fn max_storage_buffer_bytes(&self) -> u64 {
        self.inner.limits.max_storage_buffer_binding_size.min(self.inner.limits.max_buffer_size)
    }

    /// The raw wgpu device, for kernels that need more than [`Launch`] offers.
    pub fn raw_device(&self) -> &::wgpu::Device {
        &self.inner.device
    }

    /// The raw wgpu queue.
    pub fn raw_queue(&self) -> &::wgpu::Queue {
        &self.inner.queue
    }

    /// Whether two handles are the same device.
    pub fn same_device(&self, other: &WgpuDevice) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Waits until all submitted work has finished; reports errors wgpu raised outside
    /// an error scope since the last call.
    pub fn synchronize(&self) -> Result<()> {
        self.inner
            .device
            .poll(::wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Wgpu(format!("waiting for the device: {e}")))?;
        self.take_uncaptured_errors()
    }

    fn take_uncaptured_errors(&self) -> Result<()> {
        let mut errors = self.inner.uncaptured.lock().unwrap_or_else(|e| e.into_inner());
        if errors.is_empty() {
            return Ok(());
        }
        let joined = errors.join("; ");
        errors.clear();
        Err(Error::Wgpu(format!("uncaptured device error: {joined}")))
    }

    /// Runs `f` inside out-of-memory, validation and internal error scopes and turns the
    /// first captured error into `Err(Error::Wgpu("{what}: ..."))`.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> T) -> Result<T> {
        let device = &self.inner.device;
        let oom = device.push_error_scope(::wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(::wgpu::ErrorFilter::Validation);
        let internal = device.push_error_scope(::wgpu::ErrorFilter::Internal);
        let value = f();
        let errors =
            [pollster::block_on(internal.pop()), pollster::block_on(validation.pop()), pollster::block_on(oom.pop())];
        match errors.into_iter().flatten().next() {
            Some(err) => Err(Error::Wgpu(format!("{what}: {}", describe_wgpu_error(&err)))),
            None => Ok(value),
        }
    }
}

impl std::fmt::Debug for WgpuDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WgpuDevice({})", self.name())
    }
}

fn describe_wgpu_error(err: &::wgpu::Error) -> String {
    use std::error::Error as _;
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".into()
    }
}

fn probe() -> std::result::Result<WgpuDevice, String> {
    // Native backends first (Vulkan, Metal, DX12); GL only when none has an adapter, which
    // also keeps EGL probing quiet on headless machines. `WGPU_BACKEND` overrides both.
    let backend_override = std::env::var_os("WGPU_BACKEND").is_some();
    let attempts: &[::wgpu::Backends] =
        if backend_override { &[::wgpu::Backends::all()] } else { &[::wgpu::Backends::PRIMARY, ::wgpu::Backends::GL] };
    let mut failures = Vec::new();
    let mut found = None;
    for &backends in attempts {
        let mut descriptor = ::wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        if !backend_override {
            descriptor.backends = backends;
        }
        let instance = ::wgpu::Instance::new(descriptor);
        let options = ::wgpu::RequestAdapterOptions {
            power_preference: ::wgpu::PowerPreference::HighPerformance,
            ..Default::default()
        };
        match pollster::block_on(instance.request_adapter(&options)) {
            Ok(adapter) => {
                found = Some(adapter);
                break;
            }
            Err(e) => failures.push(format!("{backends:?}: {e}")),
        }
    }
    let adapter = found.ok_or_else(|| format!("no WebGPU adapter found ({})", failures.join("; ")))?;
    let info = adapter.get_info();
    let features = adapter.features() & OPTIONAL_FEATURES;
    let limits = adapter.limits();
    tracing::info!(adapter = %info.name, backend = ?info.backend, ?features, "wgpu adapter");
    let (device, queue) = pollster::block_on(adapter.request_device(&::wgpu::DeviceDescriptor {
        label: Some("linattn"),
        required_features: features,
        required_limits: limits.clone(),
        ..Default::default()
    }))
    .map_err(|e| format!("adapter {} ({:?}) refused a device: {e}", info.name, info.backend))?;
    let uncaptured = Arc::new(Mutex::new(Vec::new()));
    let sink = uncaptured.clone();
    device.on_uncaptured_error(Arc::new(move |err: ::wgpu::Error| {
        let text = describe_wgpu_error(&err);
        tracing::error!(error = %text, "uncaptured wgpu error");
        sink.lock().unwrap_or_else(|e| e.into_inner()).push(text);
    }));
    let limits = device.limits();
    Ok(WgpuDevice {
        inner: Arc::new(DeviceInner {
            device,
            queue,
            info,
            limits,
            features,
            shaders: Mutex::new(HashMap::new()),
            pipelines: Mutex::new(HashMap::new()),
            uncaptured,
        }),
    })
}
