//! The PTX kernel registry shared by every linattn crate.
//!
//! A crate declares each of its PTX files once as a static [`PtxModule`] with the text
//! embedded at build time:
//! ```text
//! pub static CHUNK_FWD: PtxModule =
//!     PtxModule { name: "attn/chunk_fwd", ptx: include_str!("../../../kernels/ptx/attn/chunk_fwd.ptx") };
//! ```
//! [`CudaDevice::function`] loads a module into the device's context the first time one
//! of its entry points is asked for and caches both the module (by `name`) and the
//! resolved function (by module and entry); [`CudaDevice::kernel`] wraps the function
//! with its names and the device stream so [`KernelLaunch`] can report errors that name
//! `module::entry` and checks the pushed arguments against the PTX `.param` list
//! (see `args`). Entry points are `extern "C"` and named `<op>_<variant>_<dtype>`
//! with the dtype suffix from [`dtype_suffix`].

use std::sync::Arc;

use cudarc::driver::{CudaFunction, LaunchArgs, LaunchConfig, PushKernelArg};

use super::args::{ArgShape, KernelArg, check_args, entry_params};
use super::{CudaDevice, lock};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// One PTX file embedded in a crate. `name` must be unique across the workspace; by
/// convention it is the PTX path below `kernels/ptx` without extension (`tensor/matmul`).
#[derive(Debug)]
pub struct PtxModule {
    pub name: &'static str,
    pub ptx: &'static str,
}

impl PtxModule {
    /// The `.entry` names declared in the PTX, in file order.
    pub fn entry_names(&self) -> Vec<&'static str> {
        let ptx: &'static str = self.ptx;
        ptx.lines()
            .filter_map(|line| {
                let rest = line.trim_start().strip_prefix(".visible ").unwrap_or(line.trim_start());
                let rest = rest.strip_prefix(".entry ")?;
                let end = rest.find(|c: char| c == '(' || c.is_whitespace()).unwrap_or(rest.len());
                Some(&rest[..end])
            })
            .collect()
    }

    /// Whether the PTX declares entry point `entry`.
    pub fn has_entry(&self, entry: &str) -> bool {
        self.entry_names().contains(&entry)
    }
}

impl PtxModule {
    /// Parameter shapes of `entry` as declared in the PTX (`None`: no such entry).
    pub fn entry_params(&self, entry: &str) -> Option<Vec<ArgShape>> {
        entry_params(self.ptx, entry)
    }
}

/// The entry-point suffix of a compute dtype: `f32`, `f16` or `bf16`.
pub fn dtype_suffix(op: &'static str, dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => Err(Error::UnsupportedDType { op, dtype: other, detail: "CUDA kernels take f32, f16 or bf16".into() }),
    }
}

fn kernel_error(module: &PtxModule, entry: &str, message: impl Into<String>) -> Error {
    Error::Kernel { kernel: format!("{}::{entry}", module.name), message: message.into() }
}

impl CudaDevice {
    /// The entry point `entry` of `module`, loading the module into this device's context
    /// on first use. Modules and functions are cached per device.
    pub fn function(&self, module: &'static PtxModule, entry: &str) -> Result<CudaFunction> {
        self.function_with_params(module, entry).map(|(function, _)| function)
    }

    fn function_with_params(&self, module: &'static PtxModule, entry: &str) -> Result<(CudaFunction, Arc<[ArgShape]>)> {
        let key = (module.name, entry.to_string());
        if let Some(cached) = lock(&self.inner.functions).get(&key) {
            return Ok(cached.clone());
        }
        if entry.contains('\0') || entry.is_empty() {
            return Err(kernel_error(module, entry, "invalid entry point name"));
        }
        let loaded = self.load_module(module)?;
        let function = loaded.load_function(entry).map_err(|e| {
            let known = module.entry_names().join(", ");
            kernel_error(module, entry, format!("entry point not found ({e}); the module declares: {known}"))
        })?;
        let params: Arc<[ArgShape]> = entry_params(module.ptx, entry)
            .ok_or_else(|| kernel_error(module, entry, "cannot read the entry's .param list from the PTX"))?
            .into();
        lock(&self.inner.functions).insert(key, (function.clone(), params.clone()));
        Ok((function, params))
    }

    fn load_module(&self, module: &'static PtxModule) -> Result<Arc<cudarc::driver::CudaModule>> {
        let address = module.ptx.as_ptr() as usize;
        let mut modules = lock(&self.inner.modules);
        if let Some((loaded_from, loaded)) = modules.get(module.name) {
            if *loaded_from != address {
                return Err(kernel_error(module, "*", "two different PTX modules share this name"));
            }
            return Ok(loaded.clone());
        }
        if module.ptx.contains('\0') {
            return Err(kernel_error(module, "*", "the PTX text contains a NUL byte"));
        }
        let _span = tracing::debug_span!("cuda_module_load", module = module.name, bytes = module.ptx.len()).entered();
        let loaded = self.inner.context.load_module(cudarc::nvrtc::Ptx::from_src(module.ptx)).map_err(|e| {
            kernel_error(module, "*", format!("cannot load the PTX module on cuda:{}: {e}", self.ordinal()))
        })?;
        modules.insert(module.name, (address, loaded.clone()));
        Ok(loaded)
    }

    /// A launchable handle to `module`'s `entry` on this device.
    pub fn kernel(&self, module: &'static PtxModule, entry: &str) -> Result<CudaKernel> {
        let (function, params) = self.function_with_params(module, entry)?;
        Ok(CudaKernel { function, params, device: self.clone(), module: module.name, entry: entry.into() })
    }
}

/// An entry point resolved on one device, launched on that device's stream.
#[derive(Clone, Debug)]
pub struct CudaKernel {
    function: CudaFunction,
    /// Parameter shapes read from the PTX, checked against the pushed arguments.
    params: Arc<[ArgShape]>,
    device: CudaDevice,
    module: &'static str,
    entry: Arc<str>,
}

impl CudaKernel {
    /// `module::entry`, as used in error messages.
    pub fn name(&self) -> String {
        format!("{}::{}", self.module, self.entry)
    }

    pub fn device(&self) -> &CudaDevice {
        &self.device
    }

    pub fn function(&self) -> &CudaFunction {
        &self.function
    }

    /// Starts an argument list. Push arguments in the exact order and types of the
    /// kernel's C signature: `&CudaSlice`/`&CudaView` for pointers (`&mut` for outputs),
    /// `&u32` for `unsigned int`, `&u64` for `unsigned long long`, `&f32` for `float`.
    pub fn launch_builder(&self) -> KernelLaunch<'_> {
        KernelLaunch { args: self.device.stream().launch_builder(&self.function), pushed: Vec::new(), kernel: self }
    }
}

/// Arguments being collected for one launch of a [`CudaKernel`].
pub struct KernelLaunch<'a> {
    args: LaunchArgs<'a>,
    pushed: Vec<Option<ArgShape>>,
    kernel: &'a CudaKernel,
}

impl<'a> KernelLaunch<'a> {
    /// Appends one kernel argument (see [`CudaKernel::launch_builder`]); its size and
    /// int/float class are checked against the PTX parameter at launch.
    pub fn arg<T: KernelArg>(&mut self, arg: T) -> &mut Self
    where
        LaunchArgs<'a>: PushKernelArg<T>,
    {
        self.pushed.push(Some(T::SHAPE));
        self.args.arg(arg);
        self
    }

    /// Appends an argument of a type without a [`KernelArg`] shape (e.g. a `#[repr(C)]`
    /// struct implementing `DeviceRepr`); only its position is checked.
    pub fn arg_unchecked<T>(&mut self, arg: T) -> &mut Self
    where
        LaunchArgs<'a>: PushKernelArg<T>,
    {
        self.pushed.push(None);
        self.args.arg(arg);
        self
    }

    /// Queues the kernel on the device stream.
    ///
    /// Before launching, the grid is checked against the hardware limits and the pushed
    /// arguments against the PTX parameters (count, sizes, int/float class); a mismatch
    /// is an [`Error::Kernel`] and nothing is launched.
    ///
    /// # Safety
    /// Pointer arguments must point to buffers of the element type the kernel expects and
    /// large enough for everything it reads and writes with this `config`, and any
    /// `arg_unchecked` value must have the parameter's exact layout.
    pub unsafe fn launch(&mut self, config: LaunchConfig) -> Result<()> {
        let _span = tracing::debug_span!(
            "cuda_launch",
            kernel = %self.kernel.name(),
            grid = ?config.grid_dim,
            block = ?config.block_dim,
            shared = config.shared_mem_bytes
        )
        .entered();
        super::launch::check_config(&config)
            .map_err(|message| Error::Kernel { kernel: self.kernel.name(), message })?;
        check_args(&self.kernel.params, &self.pushed)
            .map_err(|message| Error::Kernel { kernel: self.kernel.name(), message })?;
        // SAFETY: upheld by the caller, per this function's contract.
        unsafe { self.args.launch(config) }
            .map(|_| ())
            .map_err(|e| Error::Kernel { kernel: self.kernel.name(), message: format!("launch failed: {e}") })
    }
}
