//! The dispatch helper: bind buffers and a params uniform, dispatch, submit.
//!
//! Binding convention (bind group 0): storage buffer `i` of [`Launch::bindings`] is
//! `@binding(i)`, read-only (`var<storage, read>`) or read-write
//! (`var<storage, read_write>`) as its [`Binding`] says; when [`Launch::params`] is not
//! empty it is copied (zero-padded to 16 bytes) into a uniform buffer at
//! `@binding(bindings.len())`. Params are `#[repr(C)]` `bytemuck::Pod` structs laid out
//! like the WGSL struct (u32/f32 fields; pad to 16 bytes).
//!
//! Grids: [`Workgroups::Linear`] splits a count over x and y (each dimension is limited
//! to `max_compute_workgroups_per_dimension`, 65535 by default); the shader recovers the
//! index with `linear_workgroup(workgroup_id, num_workgroups)` and must skip indices
//! past the count, since x * y may exceed it. [`Workgroups::Grid`] dispatches as given.
//!
//! `launch` submits one dispatch; `launch_all` encodes several in order into one command
//! buffer (each sees the writes of the previous ones) and submits once.
//! Also here: making tensors from buffers and getting a tensor's buffer back.

use super::pipeline::{CachedPipeline, WgslModule};
use super::{WgpuBuffer, WgpuDevice};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::storage::Storage;
use crate::tensor::Tensor;

/// A storage buffer bound to a kernel, with its access mode.
#[derive(Clone, Copy, Debug)]
pub struct Binding<'a> {
    pub buffer: &'a WgpuBuffer,
    pub read_only: bool,
}

impl<'a> Binding<'a> {
    /// Bound as `var<storage, read>`.
    pub fn read(buffer: &'a WgpuBuffer) -> Self {
        Binding { buffer, read_only: true }
    }

    /// Bound as `var<storage, read_write>`.
    pub fn read_write(buffer: &'a WgpuBuffer) -> Self {
        Binding { buffer, read_only: false }
    }
}

/// How many workgroups to dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workgroups {
    /// `n` workgroups indexed linearly, split over x and y by the host.
    Linear(u64),
    /// An explicit grid; each dimension must be within the device limit.
    Grid([u32; 3]),
}

/// One kernel dispatch. Build it with a struct literal, e.g.
/// `Launch { module: &MY_MODULE, entry: "main", constants: &[("DTYPE", 1.0)],
/// bindings: &[Binding::read(&x), Binding::read_write(&y)], params: bytemuck::bytes_of(&p),
/// workgroups: Workgroups::Linear(n) }`, then call [`WgpuDevice::launch`].
#[derive(Clone, Copy, Debug)]
pub struct Launch<'a> {
    pub module: &'static WgslModule,
    pub entry: &'a str,
    /// Override constants (pipeline specialization), e.g. `[("DTYPE", 2.0)]`.
    pub constants: &'a [(&'a str, f64)],
    pub bindings: &'a [Binding<'a>],
    /// Uniform bytes bound after the storage buffers; empty for none.
    pub params: &'a [u8],
    pub workgroups: Workgroups,
}

impl WgpuDevice {
    /// The x, y split of `count` linear workgroups; `Err` when even x * y cannot hold it.
    pub fn split_workgroups(&self, count: u64) -> Result<[u32; 3]> {
        let max = u64::from(self.inner.limits.max_compute_workgroups_per_dimension.max(1));
        if count == 0 {
            return Ok([0, 0, 0]);
        }
        let x = count.min(max);
        let y = count.div_ceil(x);
        if y > max {
            return Err(Error::Wgpu(format!(
                "{count} workgroups exceed the device grid of {max} x {max} (max_compute_workgroups_per_dimension)"
            )));
        }
        Ok([x as u32, y as u32, 1])
    }

    /// Binds, dispatches and submits one kernel (does not wait; downloads and
    /// [`WgpuDevice::synchronize`] do).
    pub fn launch(&self, launch: &Launch<'_>) -> Result<()> {
        self.launch_all(std::slice::from_ref(launch))
    }

    /// Encodes several kernels, in order, into one command buffer and submits it once.
    /// Each dispatch sees the writes of the ones before it. Nothing is submitted when any
    /// launch is invalid.
    pub fn launch_all(&self, launches: &[Launch<'_>]) -> Result<()> {
        let prepared: Vec<(&Launch<'_>, [u32; 3], std::sync::Arc<CachedPipeline>)> = launches
            .iter()
            .map(|launch| Ok((launch, self.launch_grid(launch)?, self.launch_pipeline(launch)?)))
            .collect::<Result<_>>()?;
        let what = match launches {
            [one] => format!("dispatch {}::{}", one.module.name, one.entry),
            _ => format!("{} dispatches starting with {:?}", launches.len(), launches.first().map(|l| l.entry)),
        };
        let device = &self.inner.device;
        self.scoped(&what, || {
            let mut encoder = device.create_command_encoder(&::wgpu::CommandEncoderDescriptor { label: Some(&what) });
            for (launch, grid, cached) in &prepared {
                if grid.contains(&0) {
                    continue;
                }
                let _span =
                    tracing::debug_span!("wgpu_dispatch", module = launch.module.name, entry = launch.entry, ?grid)
                        .entered();
                let uniform = (!launch.params.is_empty()).then(|| {
                    let params = padded_params(launch.params);
                    let buffer = device.create_buffer(&::wgpu::BufferDescriptor {
                        label: Some("linattn params"),
                        size: params.len() as u64,
                        usage: ::wgpu::BufferUsages::UNIFORM | ::wgpu::BufferUsages::COPY_DST,
                        mapped_at_creation: false,
                    });
                    // Queue writes land before the submission below.
                    self.inner.queue.write_buffer(&buffer, 0, &params);
                    buffer
                });
                let mut entries: Vec<::wgpu::BindGroupEntry<'_>> = launch
                    .bindings
                    .iter()
                    .enumerate()
                    .map(|(index, binding)| ::wgpu::BindGroupEntry {
                        binding: index as u32,
                        resource: binding.buffer.raw().as_entire_binding(),
                    })
                    .collect();
                if let Some(uniform) = &uniform {
                    entries.push(::wgpu::BindGroupEntry {
                        binding: launch.bindings.len() as u32,
                        resource: uniform.as_entire_binding(),
                    });
                }
                let bind_group = device.create_bind_group(&::wgpu::BindGroupDescriptor {
                    label: Some(launch.module.name),
                    layout: &cached.bind_group_layout,
                    entries: &entries,
                });
                let mut pass = encoder.begin_compute_pass(&::wgpu::ComputePassDescriptor {
                    label: Some(launch.entry),
                    timestamp_writes: None,
                });
                pass.set_pipeline(&cached.pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(grid[0], grid[1], grid[2]);
            }
            self.inner.queue.submit([encoder.finish()]);
        })
    }

    fn launch_grid(&self, launch: &Launch<'_>) -> Result<[u32; 3]> {
        match launch.workgroups {
            Workgroups::Linear(count) => self
                .split_workgroups(count)
                .map_err(|e| Error::Wgpu(format!("{}::{}: {e}", launch.module.name, launch.entry))),
            Workgroups::Grid(grid) => {
                let max = self.inner.limits.max_compute_workgroups_per_dimension;
                if grid.iter().any(|&d| d > max) {
                    return Err(Error::Wgpu(format!(
                        "{}::{}: grid {grid:?} exceeds {max} workgroups per dimension",
                        launch.module.name, launch.entry
                    )));
                }
                Ok(grid)
            }
        }
    }

    fn launch_pipeline(&self, launch: &Launch<'_>) -> Result<std::sync::Arc<CachedPipeline>> {
        for (index, binding) in launch.bindings.iter().enumerate() {
            if !binding.buffer.device().same_device(self) {
                return Err(Error::DeviceMismatch {
                    op: "wgpu launch",
                    lhs: self.name(),
                    rhs: format!("binding {index} on {}", binding.buffer.device().name()),
                });
            }
        }
        let max_storage = self.inner.limits.max_storage_buffers_per_shader_stage as usize;
        if launch.bindings.len() > max_storage {
            return Err(Error::Wgpu(format!(
                "{}::{}: {} storage buffers exceed the device limit of {max_storage} per stage",
                launch.module.name,
                launch.entry,
                launch.bindings.len()
            )));
        }
        let read_only: Vec<bool> = launch.bindings.iter().map(|b| b.read_only).collect();
        self.cached_pipeline(
            launch.module,
            launch.entry,
            launch.constants,
            Some((read_only, !launch.params.is_empty())),
        )
    }

    /// A zero-filled tensor of `shape` and `dtype` on this device (a fresh output).
    pub fn zeros_tensor(&self, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        Tensor::zeros(shape, dtype, &Device::Wgpu(self.clone()))
    }
}

impl WgpuBuffer {
    /// Wraps this buffer as a tensor; its logical length must be the tensor's bytes.
    pub fn into_tensor(self, shape: impl Into<Shape>, dtype: DType) -> Result<Tensor> {
        Tensor::from_storage(Storage::Wgpu(self), shape, dtype)
    }
}

/// The buffer of a tensor on a WebGPU device; `Err` naming `what` and the device otherwise.
pub fn tensor_buffer<'t>(tensor: &'t Tensor, what: &str) -> Result<&'t WgpuBuffer> {
    match tensor.storage() {
        Storage::Wgpu(buffer) => Ok(buffer),
        _ => Err(Error::invalid(format!(
            "{what}: expected a tensor on wgpu, got {} {} on {}",
            tensor.dtype(),
            tensor.shape(),
            tensor.device()
        ))),
    }
}

/// `params` zero-padded to a multiple of 16 bytes (uniform structs are 16-aligned).
fn padded_params(params: &[u8]) -> Vec<u8> {
    let mut padded = params.to_vec();
    padded.resize(params.len().div_ceil(16).max(1) * 16, 0);
    padded
}
