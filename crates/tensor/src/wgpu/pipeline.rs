//! The WGSL pipeline registry: embedded shader sources and per-device pipeline caches.
//!
//! A [`WgslModule`] is a `static` naming a file under `kernels/wgsl/` and holding its
//! text (`include_str!`). Before compiling, every line `//#import common/<file>.wgsl` is
//! replaced by that common module's text ([`super::COMMON_MODULES`]; one level, exactly
//! as `cargo xtask wgsl` validates it).
//!
//! Shader modules are compiled once per device and module name; pipelines once per
//! [`PipelineKey`]: module name, entry point, override constants (specialization, e.g.
//! `DTYPE`) and the bind-group layout (the read-only flag of each storage binding and
//! whether a uniform follows), or the shader-derived layout for [`WgpuDevice::pipeline`].
//! Creation errors (WGSL parse or validation, unknown override, layout mismatch) are
//! `Err` naming the module and entry point.

use std::sync::Arc;

use super::WgpuDevice;
use crate::error::{Error, Result};

/// One WGSL source file, embedded in the binary.
///
/// `name` is the path under `kernels/wgsl/` (e.g. `"tensor/matmul.wgsl"`) and must be
/// unique: it keys the per-device caches.
#[derive(Debug)]
pub struct WgslModule {
    pub name: &'static str,
    pub source: &'static str,
}

/// The directive that pastes a common module in place.
pub const IMPORT_DIRECTIVE: &str = "//#import ";

impl WgslModule {
    /// The source with `//#import` lines replaced by the common modules they name.
    pub fn expanded_source(&self) -> Result<String> {
        let mut expanded = String::with_capacity(self.source.len() + 4096);
        for (line_no, line) in self.source.lines().enumerate() {
            match line.trim().strip_prefix(IMPORT_DIRECTIVE) {
                Some(import) => {
                    let import = import.trim();
                    let common =
                        super::COMMON_MODULES.iter().find(|m| m.name == import).ok_or_else(|| Error::Kernel {
                            kernel: self.name.to_string(),
                            message: format!(
                                "line {}: unknown import `{import}` (known: {})",
                                line_no + 1,
                                super::COMMON_MODULES.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
                            ),
                        })?;
                    expanded.push_str(common.source);
                    if !common.source.ends_with('\n') {
                        expanded.push('\n');
                    }
                }
                None => {
                    expanded.push_str(line);
                    expanded.push('\n');
                }
            }
        }
        Ok(expanded)
    }
}

/// What a cached pipeline is specialized on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    /// [`WgslModule::name`].
    pub module: &'static str,
    pub entry: String,
    /// Override constants as (name, `f64::to_bits`), in the order given.
    pub constants: Vec<(String, u64)>,
    /// Explicit layout: read-only flag per storage binding, and whether a uniform params
    /// binding follows them. `None`: the layout wgpu derives from the shader.
    pub layout: Option<(Vec<bool>, bool)>,
}

/// A compiled pipeline and the layout of its bind group 0.
pub(crate) struct CachedPipeline {
    pub(crate) pipeline: Arc<::wgpu::ComputePipeline>,
    pub(crate) bind_group_layout: ::wgpu::BindGroupLayout,
}

impl WgpuDevice {
    /// The pipeline of `entry` in `module` with default override constants and the
    /// layout derived from the shader; compiled once per device and cached.
    pub fn pipeline(&self, module: &'static WgslModule, entry: &str) -> Result<Arc<::wgpu::ComputePipeline>> {
        self.pipeline_specialized(module, entry, &[])
    }

    /// Like [`WgpuDevice::pipeline`], with override constants (e.g. `[("DTYPE", 1.0)]`),
    /// each distinct set compiled and cached separately.
    pub fn pipeline_specialized(
        &self,
        module: &'static WgslModule,
        entry: &str,
        constants: &[(&str, f64)],
    ) -> Result<Arc<::wgpu::ComputePipeline>> {
        Ok(self.cached_pipeline(module, entry, constants, None)?.pipeline.clone())
    }

    pub(crate) fn cached_pipeline(
        &self,
        module: &'static WgslModule,
        entry: &str,
        constants: &[(&str, f64)],
        layout: Option<(Vec<bool>, bool)>,
    ) -> Result<Arc<CachedPipeline>> {
        let key = PipelineKey {
            module: module.name,
            entry: entry.to_string(),
            constants: constants.iter().map(|(name, value)| (name.to_string(), value.to_bits())).collect(),
            layout,
        };
        let mut cache = self.inner.pipelines.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = cache.get(&key) {
            return Ok(found.clone());
        }
        let _span = tracing::info_span!("wgpu_pipeline", module = module.name, entry, ?constants).entered();
        let shader = self.shader_module(module)?;
        let what = format!("pipeline {}::{entry} (constants {constants:?})", module.name);
        let device = &self.inner.device;
        let created = self.scoped(&what, || {
            let explicit_layout = key.layout.as_ref().map(|(read_only, has_params)| {
                let bind_group_layout = device.create_bind_group_layout(&::wgpu::BindGroupLayoutDescriptor {
                    label: Some(module.name),
                    entries: &layout_entries(read_only, *has_params),
                });
                let pipeline_layout = device.create_pipeline_layout(&::wgpu::PipelineLayoutDescriptor {
                    label: Some(module.name),
                    bind_group_layouts: &[Some(&bind_group_layout)],
                    immediate_size: 0,
                });
                (bind_group_layout, pipeline_layout)
            });
            let pipeline = device.create_compute_pipeline(&::wgpu::ComputePipelineDescriptor {
                label: Some(&what),
                layout: explicit_layout.as_ref().map(|(_, pipeline_layout)| pipeline_layout),
                module: &shader,
                entry_point: Some(entry),
                compilation_options: ::wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: true,
                },
                cache: None,
            });
            let bind_group_layout = match explicit_layout {
                Some((bind_group_layout, _)) => bind_group_layout,
                None => pipeline.get_bind_group_layout(0),
            };
            CachedPipeline { pipeline: Arc::new(pipeline), bind_group_layout }
        })?;
        let created = Arc::new(created);
        cache.insert(key, created.clone());
        Ok(created)
    }

    fn shader_module(&self, module: &'static WgslModule) -> Result<::wgpu::ShaderModule> {
        let mut shaders = self.inner.shaders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = shaders.get(module.name) {
            return Ok(found.clone());
        }
        let source = module.expanded_source()?;
        let shader = self.scoped(&format!("compiling WGSL {}", module.name), || {
            self.inner.device.create_shader_module(::wgpu::ShaderModuleDescriptor {
                label: Some(module.name),
                source: ::wgpu::ShaderSource::Wgsl(source.into()),
            })
        })?;
        shaders.insert(module.name, shader.clone());
        Ok(shader)
    }
}

fn layout_entries(read_only: &[bool], has_params: bool) -> Vec<::wgpu::BindGroupLayoutEntry> {
    let storage = read_only.iter().enumerate().map(|(index, &read_only)| ::wgpu::BindGroupLayoutEntry {
        binding: index as u32,
        visibility: ::wgpu::ShaderStages::COMPUTE,
        ty: ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    let params = has_params.then_some(::wgpu::BindGroupLayoutEntry {
        binding: read_only.len() as u32,
        visibility: ::wgpu::ShaderStages::COMPUTE,
        ty: ::wgpu::BindingType::Buffer {
            ty: ::wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    });
    storage.chain(params).collect()
}
