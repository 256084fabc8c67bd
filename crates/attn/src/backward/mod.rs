//! Backward passes of the linear-attention ops on the CPU: a reference (token-by-token
//! reverse recurrence, f64 accumulation) and a chunked form (f32, chunk 64 by default,
//! rayon over sequences x heads) for every op, plus a naive f64 forward per op
//! ([`oracle`]) that the finite-difference tests differentiate.
//!
//! Layout (see [`crate::layout`]): q, k `[B, T, H, K]`, v and dO `[B, T, H, V]`,
//! scalar log-gates `[B, T, H]`, per-key-dim log-gates `[B, T, H, K]`, states and their
//! gradients `[N, H, K, V]` (N sequences: B, or `cu_seqlens.len() - 1`). Every gradient
//! has the layout of the input it belongs to and is f32.
//!
//! Ops and modules:
//! - [`linear_attn`]: `S_t = S_{t-1} + k_t v_t^T`, `o_t = s q_t^T S_t`, optionally
//!   normalized by `s q_t^T z_t + eps` with `z_t = sum_{tau<=t} k_tau`.
//! - [`simple_gla`]: `S_t = e^{g_t} S_{t-1} + k_t v_t^T`, one log-gate per head and token.
//! - [`gla`]: `S_t = diag(e^{g_t}) S_{t-1} + k_t v_t^T`, one log-gate per key dim.
//! - [`hedgehog`]: the Hedgehog feature map `[softmax(xW), softmax(-xW)]` and its
//!   composition with (normalized) linear attention.
//! - [`window`]: the LoLCATs sliding-window + linear hybrid.
//!
//! Upstream gradients come as an [`Upstream`]: dL/do, and optionally dL/d(final state)
//! and, for normalized ops, dL/d(final normalizer). The gated ops may be normalized
//! (`o_t / (s q_t^T z_t + eps)`, `z_t = diag(e^{a_t}) z_{t-1} + k_t`, as the forward
//! ops): z is then carried as one more value column of ones, so one core serves both.
//!
//! The three gated ops share one reverse recurrence (`recurrent`) and one chunked core
//! (`chunk`); `docs/kernels-backward.md` derives the chunked gradient forms.

pub mod gla;
pub mod hedgehog;
pub mod linear_attn;
pub mod oracle;
pub mod simple_gla;
pub mod window;

mod chunk;
mod recurrent;

use linattn_tensor::{Error, Result};
use rayon::prelude::*;

use crate::layout::{AttnDims, MAX_HEAD_DIM, SeqSpan, sequences};

/// Default chunk length of the chunked backward passes.
pub const DEFAULT_CHUNK_SIZE: usize = 64;

/// Upstream gradients of a backward call.
#[derive(Clone, Copy, Debug)]
pub struct Upstream<'a> {
    /// dL/do, `[B, T, H, V]`.
    pub d_out: &'a [f32],
    /// dL/d(final state), `[N, H, K, V]`; `None` means zero.
    pub d_final_state: Option<&'a [f32]>,
    /// dL/d(final normalizer z), `[N, H, K]`, normalized ops only; `None` means zero.
    pub d_final_normalizer: Option<&'a [f32]>,
}

impl<'a> Upstream<'a> {
    /// Only the output gradient; the final state (and normalizer) get no gradient.
    pub fn output(d_out: &'a [f32]) -> Self {
        Upstream { d_out, d_final_state: None, d_final_normalizer: None }
    }

    /// Adds the gradient of the final state `[N, H, K, V]`.
    pub fn with_final_state(self, d_final_state: &'a [f32]) -> Self {
        Upstream { d_final_state: Some(d_final_state), ..self }
    }

    /// Adds the gradient of the final normalizer `[N, H, K]` (normalized ops only).
    pub fn with_final_normalizer(self, d_final_normalizer: &'a [f32]) -> Self {
        Upstream { d_final_normalizer: Some(d_final_normalizer), ..self }
    }
}

/// Gradients of a gated op ([`simple_gla`], [`gla`]) with respect to its inputs.
#[derive(Clone, Debug, PartialEq)]
pub struct GatedGrads {
    /// dL/dq, `[B, T, H, K]`.
    pub dq: Vec<f32>,
    /// dL/dk, `[B, T, H, K]`.
    pub dk: Vec<f32>,
    /// dL/dv, `[B, T, H, V]`.
    pub dv: Vec<f32>,
    /// dL/dg, `[B, T, H]` for scalar gates, `[B, T, H, K]` for per-key-dim gates.
    pub dg: Vec<f32>,
    /// dL/d(initial state), `[N, H, K, V]` (also when no initial state was given: the
    /// gradient with respect to the zero state).
    pub d_initial_state: Vec<f32>,
    /// dL/d(initial normalizer), `[N, H, K]`; `Some` exactly when normalized.
    pub d_initial_normalizer: Option<Vec<f32>>,
}

/// How the log-gates of a gated recurrence are laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateKind {
    /// No gate (plain linear attention).
    None,
    /// One log-gate per head and token, `[B, T, H]`.
    Scalar,
    /// One log-gate per key dim, `[B, T, H, K]`.
    PerKey,
}

/// A validated gated-recurrence backward problem (the three gated ops lower to this).
pub(crate) struct GatedProblem<'a> {
    pub op: &'static str,
    pub dims: AttnDims,
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub gate_kind: GateKind,
    pub g: &'a [f32],
    pub scale: f32,
    pub initial_state: Option<&'a [f32]>,
    pub cu_seqlens: Option<&'a [usize]>,
    /// `Some(eps)`: normalize the output by `s q_t^T z_t + eps`, where
    /// `z_t = diag(e^{a_t}) z_{t-1} + k_t` (the state of a ones column of values).
    pub normalize: Option<f32>,
    /// Initial normalizer `[N, H, K]` (normalized only).
    pub initial_normalizer: Option<&'a [f32]>,
}

/// One (sequence, head) of a gated problem, gathered into contiguous rows. When the
/// problem is normalized, `v`, `h0` and `d_final` carry one extra column (ones, z_0,
/// dL/dz_T) and `d_out` holds the gradient of the unnormalized output and normalizer.
pub(crate) struct Local {
    pub len: usize,
    pub kd: usize,
    pub vd: usize,
    /// Gate width per token: 0 (no gate), 1 (scalar) or `kd` (per key dim).
    pub gw: usize,
    pub q: Vec<f32>,
    pub k: Vec<f32>,
    pub v: Vec<f32>,
    pub g: Vec<f32>,
    pub h0: Vec<f32>,
    pub d_out: Vec<f32>,
    pub d_final: Vec<f32>,
}

/// Gradients of one (sequence, head), rows as in [`Local`].
pub(crate) struct LocalGrads {
    pub dq: Vec<f32>,
    pub dk: Vec<f32>,
    pub dv: Vec<f32>,
    pub dg: Vec<f32>,
    pub dh0: Vec<f32>,
}

/// Checks the sizes every op shares: non-empty heads and head dims within limits.
pub(crate) fn check_dims(op: &str, dims: &AttnDims) -> Result<()> {
    if dims.heads == 0 || dims.key_dim == 0 || dims.value_dim == 0 {
        return Err(Error::invalid(format!("{op}: heads, key_dim and value_dim must be positive, got {dims:?}")));
    }
    if dims.key_dim > MAX_HEAD_DIM || dims.value_dim > MAX_HEAD_DIM {
        return Err(Error::invalid(format!(
            "{op}: head dims must be at most {MAX_HEAD_DIM}, got key_dim {} and value_dim {}",
            dims.key_dim, dims.value_dim
        )));
    }
    Ok(())
}

/// Checks that `data` (named `name`) holds `expected` elements, all finite.
pub(crate) fn check_input(op: &'static str, name: &str, data: &[f32], expected: usize, shape: &str) -> Result<()> {
    if data.len() != expected {
        return Err(Error::invalid(format!(
            "{op}: `{name}` must hold {expected} elements ({shape}), got {}",
            data.len()
        )));
    }
    if let Some(index) = data.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite { op, tensor: name.to_string(), index, value: data[index] });
    }
    Ok(())
}

/// Checks a chunk length.
pub(crate) fn check_chunk(op: &str, chunk_size: usize) -> Result<()> {
    if chunk_size == 0 {
        return Err(Error::invalid(format!("{op}: chunk_size must be positive, got 0")));
    }
    Ok(())
}

/// Resolves an optional scale (default `K^-0.5`) and checks it is finite.
pub(crate) fn resolve_scale(op: &str, scale: Option<f32>, key_dim: usize) -> Result<f32> {
    if key_dim == 0 {
        return Err(Error::invalid(format!("{op}: key_dim must be positive, got 0")));
    }
    let s = scale.unwrap_or(1.0 / (key_dim as f32).sqrt());
    if !s.is_finite() {
        return Err(Error::invalid(format!("{op}: scale must be finite, got {s}")));
    }
    Ok(s)
}

impl GatedProblem<'_> {
    fn gate_width(&self) -> usize {
        match self.gate_kind {
            GateKind::None => 0,
            GateKind::Scalar => 1,
            GateKind::PerKey => self.dims.key_dim,
        }
    }

    /// Validates every input and the upstream gradients; returns the sequences.
    fn validate(&self, up: &Upstream) -> Result<Vec<SeqSpan>> {
        let (op, d) = (self.op, &self.dims);
        check_dims(op, d)?;
        let spans = sequences(d, self.cu_seqlens)?;
        let tokens = d.batch * d.seq_len * d.heads;
        check_input(op, "q", self.q, tokens * d.key_dim, "[B, T, H, K]")?;
        check_input(op, "k", self.k, tokens * d.key_dim, "[B, T, H, K]")?;
        check_input(op, "v", self.v, tokens * d.value_dim, "[B, T, H, V]")?;
        check_input(op, "d_out", up.d_out, tokens * d.value_dim, "[B, T, H, V]")?;
        match self.gate_kind {
            GateKind::None => {}
            GateKind::Scalar => check_input(op, "g", self.g, tokens, "[B, T, H]")?,
            GateKind::PerKey => check_input(op, "g", self.g, tokens * d.key_dim, "[B, T, H, K]")?,
        }
        let states = spans.len() * d.state_len();
        if let Some(h0) = self.initial_state {
            check_input(op, "initial_state", h0, states, "[N, H, K, V]")?;
        }
        if let Some(dht) = up.d_final_state {
            check_input(op, "d_final_state", dht, states, "[N, H, K, V]")?;
        }
        let zs = spans.len() * d.heads * d.key_dim;
        match self.normalize {
            Some(eps) if !eps.is_finite() => {
                return Err(Error::invalid(format!("{op}: normalization eps must be finite, got {eps}")));
            }
            Some(_) => {
                if let Some(z0) = self.initial_normalizer {
                    check_input(op, "initial_normalizer", z0, zs, "[N, H, K]")?;
                }
                if let Some(dz) = up.d_final_normalizer {
                    check_input(op, "d_final_normalizer", dz, zs, "[N, H, K]")?;
                }
            }
            None => {
                if self.initial_normalizer.is_some() || up.d_final_normalizer.is_some() {
                    return Err(Error::invalid(format!(
                        "{op}: a normalizer (initial or its gradient) was given but normalize is off"
                    )));
                }
            }
        }
        Ok(spans)
    }

    /// Gathers sequence `span`, head `h` into contiguous rows (values, initial state
    /// and final-state gradient with the normalizer column when normalized; `d_out`
    /// as given, see [`normalize_upstream`]).
    fn gather(&self, span: &SeqSpan, h: usize, up: &Upstream) -> Local {
        let d = &self.dims;
        let (kd, vd, gw) = (d.key_dim, d.value_dim, self.gate_width());
        let extra = usize::from(self.normalize.is_some());
        let rows = |src: &[f32], width: usize, pad: Option<f32>| -> Vec<f32> {
            let mut out = Vec::with_capacity(span.len() * (width + extra));
            for t in span.start..span.end {
                let at = ((span.row * d.seq_len + t) * d.heads + h) * width;
                out.extend_from_slice(&src[at..at + width]);
                out.extend(pad);
            }
            out
        };
        let pad = self.normalize.map(|_| 1.0);
        let state = |src: Option<&[f32]>, z: Option<&[f32]>| -> Vec<f32> {
            let at = (span.index * d.heads + h) * kd;
            let mut out = Vec::with_capacity(kd * (vd + extra));
            for i in 0..kd {
                match src {
                    Some(s) => out.extend_from_slice(&s[(at + i) * vd..(at + i + 1) * vd]),
                    None => out.extend(std::iter::repeat_n(0.0, vd)),
                }
                if extra == 1 {
                    out.push(z.map_or(0.0, |z| z[at + i]));
                }
            }
            out
        };
        Local {
            len: span.len(),
            kd,
            vd: vd + extra,
            gw,
            q: rows(self.q, kd, None),
            k: rows(self.k, kd, None),
            v: rows(self.v, vd, pad),
            g: if gw == 0 { Vec::new() } else { rows(self.g, gw, None) },
            h0: state(self.initial_state, self.initial_normalizer),
            d_out: rows(up.d_out, vd, None),
            d_final: state(up.d_final_state, up.d_final_normalizer),
        }
    }

    /// Runs `solve` on every (sequence, head) (in parallel when `parallel`) and
    /// scatters the local gradients back into the global layouts. `forward` gives the
    /// unnormalized outputs of a local problem (used only when normalized).
    fn run<F, B>(&self, up: &Upstream, parallel: bool, forward: F, solve: B) -> Result<GatedGrads>
    where
        F: Fn(&Local) -> Vec<f64> + Sync,
        B: Fn(&Local) -> LocalGrads + Sync,
    {
        let spans = self.validate(up)?;
        let d = self.dims;
        let tasks: Vec<(SeqSpan, usize)> = spans.iter().flat_map(|s| (0..d.heads).map(move |h| (*s, h))).collect();
        let one = |&(span, h): &(SeqSpan, usize)| {
            let mut local = self.gather(&span, h, up);
            if let Some(eps) = self.normalize {
                let u = forward(&local);
                normalize_upstream(&mut local, &u, eps);
            }
            solve(&local)
        };
        let locals: Vec<LocalGrads> =
            if parallel { tasks.par_iter().map(one).collect() } else { tasks.iter().map(one).collect() };

        let tokens = d.batch * d.seq_len * d.heads;
        let (gw, kd, vd) = (self.gate_width(), d.key_dim, d.value_dim);
        let vx = vd + usize::from(self.normalize.is_some());
        let mut out = GatedGrads {
            dq: vec![0.0; tokens * kd],
            dk: vec![0.0; tokens * kd],
            dv: vec![0.0; tokens * vd],
            dg: vec![0.0; tokens * gw],
            d_initial_state: vec![0.0; spans.len() * d.state_len()],
            d_initial_normalizer: self.normalize.map(|_| vec![0.0; spans.len() * d.heads * kd]),
        };
        for ((span, h), l) in tasks.iter().zip(&locals) {
            for (r, t) in (span.start..span.end).enumerate() {
                let tok = (span.row * d.seq_len + t) * d.heads + h;
                out.dq[tok * kd..(tok + 1) * kd].copy_from_slice(&l.dq[r * kd..(r + 1) * kd]);
                out.dk[tok * kd..(tok + 1) * kd].copy_from_slice(&l.dk[r * kd..(r + 1) * kd]);
                out.dv[tok * vd..(tok + 1) * vd].copy_from_slice(&l.dv[r * vx..r * vx + vd]);
                out.dg[tok * gw..(tok + 1) * gw].copy_from_slice(&l.dg[r * gw..(r + 1) * gw]);
            }
            let at = (span.index * d.heads + h) * kd;
            for i in 0..kd {
                let row = &l.dh0[i * vx..(i + 1) * vx];
                out.d_initial_state[(at + i) * vd..(at + i + 1) * vd].copy_from_slice(&row[..vd]);
                if let Some(dz) = out.d_initial_normalizer.as_mut() {
                    dz[at + i] = row[vd];
                }
            }
        }
        Ok(out)
    }

    /// Reference backward: the f64 reverse recurrence, one (sequence, head) at a time.
    pub(crate) fn reference(&self, up: &Upstream) -> Result<GatedGrads> {
        let s = self.scale;
        self.run(up, false, |l| recurrent::forward(l, s), |l| recurrent::backward(l, s))
    }

    /// Chunked backward: f32, chunk `chunk_size`, rayon over sequences x heads.
    pub(crate) fn chunked(&self, up: &Upstream, chunk_size: usize) -> Result<GatedGrads> {
        check_chunk(self.op, chunk_size)?;
        let s = self.scale;
        self.run(
            up,
            true,
            |l| chunk::forward_outputs(l, s, chunk_size).into_iter().map(f64::from).collect(),
            |l| chunk::backward(l, s, chunk_size),
        )
    }
}

/// Turns dL/do of a normalized problem into the gradient of the unnormalized output
/// and of the normalizer column: with `u` the unnormalized outputs `[L, V + 1]` (last
/// column `s q_t . z_t`), `d_t = u_t[V] + eps`, `o_t = u_t[..V] / d_t`:
/// `du_t = do_t / d_t`, `dd_t = -(do_t . u_t[..V]) / d_t^2`.
fn normalize_upstream(l: &mut Local, u: &[f64], eps: f32) {
    let (vx, vd) = (l.vd, l.vd - 1);
    let mut d_out = vec![0.0f32; l.len * vx];
    for t in 0..l.len {
        let ut = &u[t * vx..(t + 1) * vx];
        let den = ut[vd] + eps as f64;
        let dot: f64 = (0..vd).map(|j| l.d_out[t * vd + j] as f64 * ut[j]).sum();
        for j in 0..vd {
            d_out[t * vx + j] = (l.d_out[t * vd + j] as f64 / den) as f32;
        }
        d_out[t * vx + vd] = (-dot / (den * den)) as f32;
    }
    l.d_out = d_out;
}
