//! Several adapters at once: a named set with an active adapter, batches where each row
//! picks its adapter, and weighted combinations into a new adapter (peft's
//! `add_weighted_adapter`).
//!
//! Combinations of adapters `i` with weights `w_i` and scalings `s_i`, per module:
//! - `Cat`: `A = [w_1 s_1 A_1; w_2 s_2 A_2; ...]` (ranks stacked), `B = [B_1, B_2, ...]`,
//!   so `B A = sum_i w_i s_i B_i A_i` exactly. Rank = sum of ranks.
//! - `Linear`: `A = sum_i sign_i sqrt(|w_i s_i|) A_i`, `B = sum_i sqrt(|w_i s_i|) B_i`
//!   (same rank required; not equal to the weighted delta sum, as in peft).
//! - `Svd { rank }`: `D = sum_i w_i s_i B_i A_i`, `D ~= U_k S_k V_k^T`, `B = U_k S_k`,
//!   `A = V_k^T` (f64 Jacobi SVD, [`crate::svd`]).
//!
//! The result uses `r = lora_alpha = new rank` and no rsLoRA, so its scaling is 1; modules
//! of lower rank are zero-padded to the adapter rank (as peft). DoRA adapters cannot be
//! combined.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use linattn_tensor::{Error, Result, Tensor};

use crate::base::BaseLinear;
use crate::config::{OrderedPatterns, TargetModules};
use crate::device::cpu_only;
use crate::forward::{PreparedModule, apply_rows, check_linear};
use crate::gpu::mixed::{SetGpuCache, apply_pack};
use crate::lora::{LoraAdapter, LoraModule};
use crate::peft_io::load_adapter;

/// How [`combine_adapters`] merges adapters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Combination {
    Cat,
    Linear,
    Svd { rank: usize },
}

/// Named adapters, one of them optionally active.
#[derive(Clone, Debug, Default)]
pub struct AdapterSet {
    names: Vec<String>,
    adapters: Vec<LoraAdapter>,
    active: Option<usize>,
    /// Device packs for GPU `forward_mixed`, per module path and device (uploaded once;
    /// reset by `insert`).
    gpu: Arc<SetGpuCache>,
}

impl AdapterSet {
    pub fn new() -> AdapterSet {
        AdapterSet::default()
    }

    /// Adds `adapter` as `name`; returns its index (used by [`AdapterSet::forward_mixed`]).
    pub fn insert(&mut self, name: &str, adapter: LoraAdapter) -> Result<usize> {
        if self.names.iter().any(|n| n == name) {
            return Err(Error::invalid(format!("adapter set: an adapter named `{name}` is already loaded")));
        }
        self.names.push(name.to_string());
        self.adapters.push(adapter);
        self.gpu = Arc::default();
        Ok(self.names.len() - 1)
    }

    /// Loads a peft adapter directory as `name`.
    pub fn load(&mut self, name: &str, dir: &Path) -> Result<usize> {
        self.insert(name, load_adapter(dir)?)
    }

    /// Names in index order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Index of the adapter called `name`.
    pub fn index_of(&self, name: &str) -> Result<usize> {
        self.names
            .iter()
            .position(|n| n == name)
            .ok_or_else(|| Error::invalid(format!("adapter set: no adapter `{name}` (loaded: {:?})", self.names)))
    }

    /// The adapter called `name`.
    pub fn get(&self, name: &str) -> Result<&LoraAdapter> {
        Ok(&self.adapters[self.index_of(name)?])
    }

    /// Makes `name` the active adapter (`None`: base model only).
    pub fn set_active(&mut self, name: Option<&str>) -> Result<()> {
        self.active = name.map(|n| self.index_of(n)).transpose()?;
        Ok(())
    }

    /// The active adapter's name.
    pub fn active(&self) -> Option<&str> {
        self.active.map(|i| self.names[i].as_str())
    }

    /// Forward of module `path` over `base` with the active adapter on every row.
    pub fn forward(&self, path: &str, base: &dyn BaseLinear, x: &Tensor) -> Result<Tensor> {
        let rows = if x.rank() == 0 { 0 } else { x.shape().rows() };
        self.forward_mixed(path, base, x, &vec![self.active; rows])
    }

    /// Forward of module `path` where row `i` of `x [..., in]` uses adapter
    /// `row_adapters[i]` (an index from [`AdapterSet::insert`]; `None` = base only). An
    /// adapter without module `path` contributes nothing to its rows.
    ///
    /// On CUDA / WebGPU the base runs once and the per-row kernels of
    /// `crate::gpu::mixed` add each row's update (LoRA or DoRA). Every adapter's module
    /// `path` is uploaded once per device into a cached pack; per call only the row table
    /// (4 bytes per row) goes to the device.
    pub fn forward_mixed(
        &self,
        path: &str,
        base: &dyn BaseLinear,
        x: &Tensor,
        row_adapters: &[Option<usize>],
    ) -> Result<Tensor> {
        let rows = if x.rank() == 0 { 0 } else { x.shape().rows() };
        if row_adapters.len() != rows {
            return Err(Error::invalid(format!(
                "forward_mixed: {} adapter choices for input {} with {rows} rows",
                row_adapters.len(),
                x.shape()
            )));
        }
        if let Some(bad) = row_adapters.iter().flatten().find(|&&i| i >= self.adapters.len()) {
            return Err(Error::invalid(format!(
                "forward_mixed: adapter index {bad} out of range ({} adapters loaded)",
                self.adapters.len()
            )));
        }
        if !x.is_cpu() {
            return self.forward_mixed_gpu(path, base, x, row_adapters);
        }
        // slot[i] = position in `prepared` of adapter i's module, if it has one.
        let mut prepared = Vec::new();
        let mut slot = vec![None; self.adapters.len()];
        for (i, adapter) in self.adapters.iter().enumerate() {
            if !row_adapters.contains(&Some(i)) {
                continue;
            }
            if let Some(module) = adapter.modules.get(path) {
                check_linear("forward_mixed", base, module, x)?;
                slot[i] = Some(prepared.len());
                prepared.push(PreparedModule::new(module, base)?);
            }
        }
        cpu_only("forward_mixed", x)?;
        let y = base.forward(x)?;
        let xv = x.to_f32_vec()?;
        let mut yv = y.to_f32_vec()?;
        let choose = |row: usize| row_adapters[row].and_then(|i| slot[i]);
        apply_rows(&xv, base.in_features(), &mut yv, base.out_features(), &prepared, &choose);
        Tensor::from_f32(&yv, x.dtype(), y.dims().to_vec())
    }

    fn forward_mixed_gpu(
        &self,
        path: &str,
        base: &dyn BaseLinear,
        x: &Tensor,
        row_adapters: &[Option<usize>],
    ) -> Result<Tensor> {
        if x.rank() == 0 || !x.dtype().is_compute_float() || x.shape().last_dim() != base.in_features() {
            return Err(Error::invalid(format!(
                "forward_mixed: input {} {} does not fit a base with {} input features",
                x.dtype(),
                x.shape(),
                base.in_features()
            )));
        }
        let modules: Vec<Option<&LoraModule>> = self.adapters.iter().map(|a| a.modules.get(path)).collect();
        for m in modules.iter().flatten() {
            check_linear("forward_mixed", base, m, x)?;
        }
        let device = x.device();
        let pack = self.gpu.pack(path, &modules, base, &device)?;
        let table: Vec<i32> = row_adapters
            .iter()
            .map(|r| match r {
                Some(i) => i32::try_from(*i).map_err(|_| Error::invalid(format!("forward_mixed: index {i} too large"))),
                None => Ok(-1),
            })
            .collect::<Result<_>>()?;
        let n = table.len();
        let row_adapter = Tensor::from_vec(table, [n])?.to_device(&device)?;
        apply_pack(&pack, base, x, &row_adapter)
    }

    /// How many module packs this set uploaded to GPUs (for `forward_mixed`).
    pub fn gpu_uploads(&self) -> usize {
        self.gpu.uploads()
    }

    /// peft's `add_weighted_adapter`: combines named adapters into a new one called
    /// `new_name`, inserted into the set; returns its index.
    pub fn add_weighted_adapter(
        &mut self,
        new_name: &str,
        weighted: &[(&str, f32)],
        combination: Combination,
    ) -> Result<usize> {
        let sources: Vec<(&LoraAdapter, f32)> =
            weighted.iter().map(|(n, w)| Ok((self.get(n)?, *w))).collect::<Result<_>>()?;
        let combined = combine_adapters(&sources, combination)?;
        self.insert(new_name, combined)
    }
}

/// Combines weighted adapters into one (see the module docs for each [`Combination`]).
pub fn combine_adapters(sources: &[(&LoraAdapter, f32)], combination: Combination) -> Result<LoraAdapter> {
    let Some((first, _)) = sources.first() else {
        return Err(Error::invalid("combine_adapters: no adapters given"));
    };
    if let Some((w_bad, _)) = sources.iter().map(|(a, w)| (w, a)).find(|(w, _)| !w.is_finite()) {
        return Err(Error::invalid(format!("combine_adapters: weight {w_bad} is not finite")));
    }
    if sources.iter().any(|(a, _)| a.is_dora()) {
        return Err(Error::invalid("combine_adapters: DoRA adapters cannot be combined"));
    }
    let mut paths: Vec<&String> = sources.iter().flat_map(|(a, _)| a.modules.keys()).collect();
    paths.sort();
    paths.dedup();
    // Per-module combined (A, B) as f32 with their own rank; padded afterwards.
    let mut parts: BTreeMap<String, (Combined, &LoraModule)> = BTreeMap::new();
    for path in paths {
        let present: Vec<(&LoraModule, f32)> =
            sources.iter().filter_map(|(a, w)| a.modules.get(path).map(|m| (m, *w))).collect();
        let proto = present[0].0;
        for (m, _) in &present {
            if (m.kind(), m.in_features(), m.out_features(), m.fan_in_fan_out())
                != (proto.kind(), proto.in_features(), proto.out_features(), proto.fan_in_fan_out())
            {
                return Err(Error::invalid(format!(
                    "combine_adapters: module `{path}` differs between adapters: A {} / B {} vs A {} / B {}",
                    proto.a().shape(),
                    proto.b().shape(),
                    m.a().shape(),
                    m.b().shape()
                )));
            }
        }
        let combined = match combination {
            Combination::Cat => combine_cat(&present)?,
            Combination::Linear => combine_linear(path, &present)?,
            Combination::Svd { rank } => combine_svd(&present, rank)?,
        };
        parts.insert(path.clone(), (combined, proto));
    }
    let new_rank = match combination {
        Combination::Svd { rank } => rank,
        _ => parts.values().map(|p| p.0.2).max().unwrap_or(1),
    };
    if new_rank == 0 {
        return Err(Error::invalid("combine_adapters: svd rank 0; the rank must be >= 1"));
    }
    let mut modules = BTreeMap::new();
    for (path, ((a, b, r), proto)) in parts {
        let (n_in, n_out) = (proto.in_features(), proto.out_features());
        let mut a_pad = vec![0f32; new_rank * n_in];
        a_pad[..r * n_in].copy_from_slice(&a);
        let mut b_pad = vec![0f32; n_out * new_rank];
        for o in 0..n_out {
            b_pad[o * new_rank..o * new_rank + r].copy_from_slice(&b[o * r..(o + 1) * r]);
        }
        let a = Tensor::from_vec(a_pad, [new_rank, n_in])?;
        let b = Tensor::from_vec(b_pad, [n_out, new_rank])?;
        let module = LoraModule::new(&path, proto.kind(), &a, &b, None, 1.0, proto.fan_in_fan_out())?;
        modules.insert(path, module);
    }
    let mut config = first.config.clone();
    config.r = new_rank;
    config.lora_alpha = new_rank as f64;
    config.use_rslora = false;
    config.rank_pattern = OrderedPatterns::default();
    config.alpha_pattern = OrderedPatterns::default();
    config.target_modules = Some(TargetModules::List(modules.keys().cloned().collect()));
    Ok(LoraAdapter { config, modules, saved_modules: BTreeMap::new(), file_dtype: first.file_dtype })
}

type Combined = (Vec<f32>, Vec<f32>, usize);

fn combine_cat(present: &[(&LoraModule, f32)]) -> Result<Combined> {
    let n_out = present[0].0.out_features();
    let total: usize = present.iter().map(|(m, _)| m.rank()).sum();
    let mut a = Vec::new();
    let mut b = vec![0f32; n_out * total];
    let mut col = 0;
    for (m, w) in present {
        let factor = w * m.scaling();
        a.extend(m.a().as_slice::<f32>()?.iter().map(|v| v * factor));
        let (bv, r) = (m.b().as_slice::<f32>()?, m.rank());
        for o in 0..n_out {
            b[o * total + col..o * total + col + r].copy_from_slice(&bv[o * r..(o + 1) * r]);
        }
        col += r;
    }
    Ok((a, b, total))
}

fn combine_linear(path: &str, present: &[(&LoraModule, f32)]) -> Result<Combined> {
    let r = present[0].0.rank();
    if let Some((m, _)) = present.iter().find(|(m, _)| m.rank() != r) {
        return Err(Error::invalid(format!(
            "combine_adapters linear: module `{path}` has ranks {r} and {}; linear needs equal ranks",
            m.rank()
        )));
    }
    let mut a = vec![0f32; present[0].0.a().numel()];
    let mut b = vec![0f32; present[0].0.b().numel()];
    for (m, w) in present {
        let ws = w * m.scaling();
        let (wa, wb) = (ws.abs().sqrt() * ws.signum(), ws.abs().sqrt());
        a.iter_mut().zip(m.a().as_slice::<f32>()?).for_each(|(acc, v)| *acc += wa * v);
        b.iter_mut().zip(m.b().as_slice::<f32>()?).for_each(|(acc, v)| *acc += wb * v);
    }
    Ok((a, b, r))
}

fn combine_svd(present: &[(&LoraModule, f32)], rank: usize) -> Result<Combined> {
    let proto = present[0].0;
    let (n_in, n_out) = (proto.in_features(), proto.out_features());
    let mut delta = vec![0f64; n_out * n_in];
    for (m, w) in present {
        for (d, v) in delta.iter_mut().zip(m.delta_weight()?) {
            *d += *w as f64 * v as f64;
        }
    }
    let f = crate::svd::svd(&delta, n_out, n_in)?;
    let k = rank.min(f.k);
    let mut a = vec![0f32; k * n_in];
    let mut b = vec![0f32; n_out * k];
    for c in 0..k {
        for i in 0..n_in {
            a[c * n_in + i] = f.vt[c * n_in + i] as f32;
        }
        for o in 0..n_out {
            b[o * k + c] = (f.u[o * f.k + c] * f.s[c]) as f32;
        }
    }
    Ok((a, b, k))
}
