//! Training support: peft initialization, dropout on the adapter input, gradients.
//!
//! Forward in training mode (peft), with `u = dropout(x)` (`u = x` at inference):
//! - LoRA: `y = base(x) + s (u A^T) B^T`
//! - DoRA: `y = base(x) + (c - 1) * (u W^T) + c * s (u A^T) B^T`, `c = m / n`, with
//!   `n = ||W + s B A||_row` treated as a constant (peft detaches it).
//!
//! Backward, given `dy [N, out]` and `t = u A^T [N, r]`, with `g = dy` (LoRA) or
//! `g = c * dy` (DoRA, per column):
//! `dB = s g^T t`, `dt = s g B`, `dA = dt^T u`,
//! `dm = sum_rows dy * (u W^T + s t B^T) / n` (DoRA),
//! `dx = dy W + mask * (dt A + ((c - 1) * dy) W)` (the last term DoRA only), where
//! `mask = keep / (1 - p)` is the dropout derivative. All in f32; `dx` is f32.
//!
//! Initialization (peft's default `init_lora_weights=True`): linear `A ~ U(-1/sqrt(in),
//! 1/sqrt(in))` (Kaiming-uniform with a = sqrt(5), as `nn.Linear`), `B = 0`; embedding
//! `A = 0`, `B ~ N(0, 1)`. The RNG is a seeded SplitMix64 (not torch's generator).

use linattn_tensor::{Error, Result, Tensor};

use crate::base::BaseLinear;
use crate::device::cpu_only;
use crate::forward::check_linear;
use crate::lora::{LoraModule, ModuleKind};

/// SplitMix64: a small seeded generator for reproducible init and dropout masks.
#[derive(Clone, Debug)]
pub struct SeededRng(u64);

impl SeededRng {
    pub fn new(seed: u64) -> SeededRng {
        SeededRng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

/// A new module initialized as peft does (see the module docs); `in_features` /
/// `out_features` are `num_embeddings` / `dim` for an embedding.
pub fn init_lora_module(
    path: &str,
    kind: ModuleKind,
    in_features: usize,
    out_features: usize,
    rank: usize,
    scaling: f32,
    seed: u64,
) -> Result<LoraModule> {
    if rank == 0 || in_features == 0 || out_features == 0 {
        return Err(Error::invalid(format!(
            "init_lora_module `{path}`: rank {rank}, in {in_features}, out {out_features} must all be >= 1"
        )));
    }
    let mut rng = SeededRng::new(seed);
    let (a, b) = match kind {
        ModuleKind::Linear => {
            let bound = 1.0 / (in_features as f32).sqrt();
            let a: Vec<f32> = (0..rank * in_features).map(|_| (2.0 * rng.uniform() - 1.0) * bound).collect();
            (a, vec![0f32; out_features * rank])
        }
        ModuleKind::Embedding => {
            (vec![0f32; rank * in_features], (0..out_features * rank).map(|_| rng.normal()).collect())
        }
    };
    let a = Tensor::from_vec(a, [rank, in_features])?;
    let b = Tensor::from_vec(b, [out_features, rank])?;
    LoraModule::new(path, kind, &a, &b, None, scaling, false)
}

/// DoRA init: the module with magnitude `m = ||W + s B A||_row` (so the adapted layer
/// starts equal to the base), `base_weight` the logical `[out, in]` weight.
pub fn init_dora_magnitude(module: &LoraModule, base_weight: &Tensor) -> Result<LoraModule> {
    let m = module.dora_weight_norm(&base_weight.to_f32_vec()?)?;
    let mag = Tensor::from_vec(m, [module.out_features()])?;
    LoraModule::new(
        module.path(),
        module.kind(),
        module.a(),
        module.b(),
        Some(&mag),
        module.scaling(),
        module.fan_in_fan_out(),
    )
}

/// A dropout mask over `[rows, in]`: kept elements are scaled by `1 / (1 - p)`.
#[derive(Clone, Debug)]
pub struct DropoutMask {
    p: f32,
    /// `keep / (1 - p)` per element: 0 or `1 / (1 - p)`.
    factor: Vec<f32>,
}

impl DropoutMask {
    /// Samples a mask with drop probability `p` in `[0, 1)` from `seed`.
    pub fn sample(p: f32, rows: usize, in_features: usize, seed: u64) -> Result<DropoutMask> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::invalid(format!("dropout probability {p} not in [0, 1)")));
        }
        let mut rng = SeededRng::new(seed);
        let keep = 1.0 / (1.0 - p);
        let factor = (0..rows * in_features).map(|_| if rng.uniform() >= p { keep } else { 0.0 }).collect();
        Ok(DropoutMask { p, factor })
    }
    pub fn p(&self) -> f32 {
        self.p
    }
    /// Per-element factors (0 or `1/(1-p)`).
    pub fn factors(&self) -> &[f32] {
        &self.factor
    }
    fn apply(&self, x: &[f32]) -> Result<Vec<f32>> {
        if x.len() != self.factor.len() {
            return Err(Error::invalid(format!(
                "dropout mask of {} elements for an input of {}",
                self.factor.len(),
                x.len()
            )));
        }
        Ok(x.iter().zip(&self.factor).map(|(v, f)| v * f).collect())
    }
}

/// Gradients of one LoRA / DoRA module.
#[derive(Clone, Debug)]
pub struct LoraGrads {
    /// `[r, in]`
    pub d_a: Tensor,
    /// `[out, r]`
    pub d_b: Tensor,
    /// `[out]`, DoRA only.
    pub d_magnitude: Option<Tensor>,
    /// `[..., in]` f32: gradient with respect to the layer input (base path included).
    pub d_x: Tensor,
}

/// Everything the training forward and backward share.
struct Pass {
    rows: usize,
    n_in: usize,
    n_out: usize,
    r: usize,
    s: f32,
    u: Vec<f32>,
    w: Vec<f32>,
    a: Vec<f32>,
    b: Vec<f32>,
    /// DoRA: (m, n).
    dora: Option<(Vec<f32>, Vec<f32>)>,
    /// `t = u A^T [rows, r]`.
    t: Vec<f32>,
}

fn prepare(
    base: &dyn BaseLinear,
    module: &LoraModule,
    x: &Tensor,
    dropout: Option<&DropoutMask>,
    norm_override: Option<&[f32]>,
) -> Result<Pass> {
    check_linear("lora_train", base, module, x)?;
    cpu_only("lora_train", x)?;
    let (n_in, n_out, r, rows) = (module.in_features(), module.out_features(), module.rank(), x.shape().rows());
    let xv = x.to_f32_vec()?;
    let u = match dropout {
        Some(d) => d.apply(&xv)?,
        None => xv,
    };
    let w = base.dequantized()?.to_f32_vec()?;
    let (a, b) = (module.a().to_f32_vec()?, module.b().to_f32_vec()?);
    let dora = match module.magnitude() {
        None => None,
        Some(m) => {
            let n = match norm_override {
                Some(n) => n.to_vec(),
                None => module.dora_weight_norm(&w)?,
            };
            Some((m.to_f32_vec()?, n))
        }
    };
    let mut t = vec![0f32; rows * r];
    for row in 0..rows {
        for j in 0..r {
            t[row * r + j] = (0..n_in).map(|i| u[row * n_in + i] * a[j * n_in + i]).sum();
        }
    }
    Ok(Pass { rows, n_in, n_out, r, s: module.scaling(), u, w, a, b, dora, t })
}

impl Pass {
    /// `(u W^T)[row, o]` and `(t B^T)[row, o]`.
    fn base_and_lora(&self, row: usize, o: usize) -> (f32, f32) {
        let uw = (0..self.n_in).map(|i| self.u[row * self.n_in + i] * self.w[o * self.n_in + i]).sum();
        let tb = (0..self.r).map(|j| self.t[row * self.r + j] * self.b[o * self.r + j]).sum();
        (uw, tb)
    }
}

/// Training forward with the DoRA norm `n` given instead of computed (for checking
/// gradients, which treat `n` as a constant, against finite differences).
pub fn forward_with_fixed_norm(
    base: &dyn BaseLinear,
    module: &LoraModule,
    x: &Tensor,
    dropout: Option<&DropoutMask>,
    dora_norm: Option<&[f32]>,
) -> Result<Tensor> {
    forward_train_impl(base, module, x, dropout, dora_norm)
}

fn forward_train_impl(
    base: &dyn BaseLinear,
    module: &LoraModule,
    x: &Tensor,
    dropout: Option<&DropoutMask>,
    norm_override: Option<&[f32]>,
) -> Result<Tensor> {
    let p = prepare(base, module, x, dropout, norm_override)?;
    let y_base = base.forward(x)?;
    let mut y = y_base.to_f32_vec()?;
    for row in 0..p.rows {
        for o in 0..p.n_out {
            let (uw, tb) = p.base_and_lora(row, o);
            y[row * p.n_out + o] += match &p.dora {
                None => p.s * tb,
                Some((m, n)) => {
                    let c = m[o] / n[o];
                    (c - 1.0) * uw + c * p.s * tb
                }
            };
        }
    }
    Tensor::from_f32(&y, x.dtype(), y_base.dims().to_vec())
}

/// Training-mode forward (dropout on the adapter input when `dropout` is given).
pub fn lora_forward_train(
    base: &dyn BaseLinear,
    module: &LoraModule,
    x: &Tensor,
    dropout: Option<&DropoutMask>,
) -> Result<Tensor> {
    forward_train_impl(base, module, x, dropout, None)
}

fn backward_impl(
    base: &dyn BaseLinear,
    module: &LoraModule,
    x: &Tensor,
    dy: &Tensor,
    dropout: Option<&DropoutMask>,
    norm_override: Option<&[f32]>,
) -> Result<LoraGrads> {
    let p = prepare(base, module, x, dropout, norm_override)?;
    if dy.shape().rows() != p.rows || dy.shape().last_dim() != p.n_out || dy.rank() != x.rank() {
        return Err(Error::invalid(format!(
            "lora_backward: dy {} does not match input {} and {} outputs",
            dy.shape(),
            x.shape(),
            p.n_out
        )));
    }
    let dyv = dy.to_f32_vec()?;
    let (rows, n_in, n_out, r, s) = (p.rows, p.n_in, p.n_out, p.r, p.s);
    let c: Vec<f32> = match &p.dora {
        None => vec![1.0; n_out],
        Some((m, n)) => m.iter().zip(n).map(|(m, n)| m / n).collect(),
    };
    let mut d_b = vec![0f32; n_out * r];
    let mut dt = vec![0f32; rows * r];
    let mut d_m = vec![0f32; n_out];
    for row in 0..rows {
        for o in 0..n_out {
            let g = c[o] * dyv[row * n_out + o];
            for j in 0..r {
                d_b[o * r + j] += s * g * p.t[row * r + j];
                dt[row * r + j] += s * g * p.b[o * r + j];
            }
            if let Some((_, n)) = &p.dora {
                let (uw, tb) = p.base_and_lora(row, o);
                d_m[o] += dyv[row * n_out + o] * (uw + s * tb) / n[o];
            }
        }
    }
    let mut d_a = vec![0f32; r * n_in];
    let mut d_x = vec![0f32; rows * n_in];
    for row in 0..rows {
        for i in 0..n_in {
            // Base path: dy W.
            let mut base_grad = 0f32;
            let mut adapter_grad = 0f32;
            for o in 0..n_out {
                let g = dyv[row * n_out + o];
                base_grad += g * p.w[o * n_in + i];
                adapter_grad += (c[o] - 1.0) * g * p.w[o * n_in + i];
            }
            for j in 0..r {
                d_a[j * n_in + i] += dt[row * r + j] * p.u[row * n_in + i];
                adapter_grad += dt[row * r + j] * p.a[j * n_in + i];
            }
            let mask = dropout.map_or(1.0, |d| d.factor[row * n_in + i]);
            d_x[row * n_in + i] = base_grad + mask * adapter_grad;
        }
    }
    Ok(LoraGrads {
        d_a: Tensor::from_vec(d_a, [r, n_in])?,
        d_b: Tensor::from_vec(d_b, [n_out, r])?,
        d_magnitude: match p.dora {
            Some(_) => Some(Tensor::from_vec(d_m, [n_out])?),
            None => None,
        },
        d_x: Tensor::from_vec(d_x, x.dims().to_vec())?,
    })
}

/// Gradients of a LoRA / DoRA module for upstream `dy` (same `dropout` as the forward).
pub fn lora_backward(
    base: &dyn BaseLinear,
    module: &LoraModule,
    x: &Tensor,
    dy: &Tensor,
    dropout: Option<&DropoutMask>,
) -> Result<LoraGrads> {
    backward_impl(base, module, x, dy, dropout, None)
}
