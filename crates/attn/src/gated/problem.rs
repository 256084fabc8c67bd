//! Validation of a gated linear-attention call and its inputs in f32.
//!
//! [`Problem::new`] checks everything once (shapes with both shapes in the message,
//! dtypes, devices, head dims, chunk size, `cu_seqlens`, feature maps, gates, initial
//! state, non-finite values) and converts the inputs to f32 host slices (zero-copy for
//! f32 CPU tensors). Both the reference and the fast CPU kernels read a `Problem`; a GPU
//! kernel would take the same validated sizes.

use std::borrow::Cow;

use linattn_tensor::{DType, Device, Error, Result, Tensor};

use crate::feature_map::FeatureMap;
use crate::layout::{AttnDims, MAX_HEAD_DIM, SeqSpan, sequences};
use crate::options::{AttnOptions, check_chunk_size};

/// How the state decays between tokens, as given by the caller.
#[derive(Clone, Copy, Debug)]
pub enum GateInput<'a> {
    /// No decay (plain linear attention).
    None,
    /// A constant log-decay per head, `[H]` (RetNet / Lightning-2).
    PerHead(&'a Tensor),
    /// A log-decay per token and head, `[B, T, H]` (simple GLA).
    PerToken(&'a Tensor),
    /// A log-decay per token, head and key dim, `[B, T, H, K']` (GLA).
    PerKey(&'a Tensor),
}

/// Log-decays in f32, laid out as the tensor they came from.
#[derive(Clone, Debug)]
pub(crate) enum Gates {
    None,
    PerHead(Vec<f32>),
    PerToken(Vec<f32>),
    PerKey(Vec<f32>),
}

/// A validated call with its inputs as f32 host slices.
pub(crate) struct Problem<'a> {
    pub dims: AttnDims,
    /// Key dim the recurrence sees: K, or 2F with a key feature map.
    pub rec_key_dim: usize,
    pub spans: Vec<SeqSpan>,
    pub q: Cow<'a, [f32]>,
    pub k: Cow<'a, [f32]>,
    pub v: Cow<'a, [f32]>,
    pub gates: Gates,
    pub q_map: Option<FeatureMap>,
    pub k_map: Option<FeatureMap>,
    pub scale: f32,
    pub normalize: bool,
    pub eps: f32,
    pub chunk: usize,
    /// Initial `[N, H, K', V]` state and `[N, H, K']` normalizer.
    pub initial_kv: Option<Vec<f32>>,
    pub initial_z: Option<Vec<f32>>,
    /// Keys and values of sequence position m come from position `m - key_shift`
    /// (zero for `m < key_shift`); 0 for the plain ops, W for the window hybrid.
    pub key_shift: usize,
    pub out_dtype: DType,
    pub device: Device,
}

/// A tensor's values as f32 on the host, borrowed when it already is an f32 CPU tensor.
pub(crate) fn host_f32(t: &Tensor) -> Result<Cow<'_, [f32]>> {
    if t.dtype() == DType::F32 && t.is_cpu() {
        Ok(Cow::Borrowed(t.as_slice::<f32>()?))
    } else {
        Ok(Cow::Owned(t.to_f32_vec()?))
    }
}

/// Fails unless `t` has exactly `want` as shape; the message names the tensor, its
/// shape and the expected shape with the meaning of each dimension.
pub(crate) fn expect_shape(op: &str, name: &str, t: &Tensor, want: &[usize], meaning: &str) -> Result<()> {
    if t.dims() == want {
        Ok(())
    } else {
        Err(Error::invalid(format!("{op}: `{name}` has shape {} but must be {meaning} = {want:?}", t.shape())))
    }
}

fn check_float(op: &'static str, name: &str, t: &Tensor) -> Result<()> {
    if t.dtype().is_compute_float() {
        Ok(())
    } else {
        Err(Error::UnsupportedDType { op, dtype: t.dtype(), detail: format!("`{name}` must be f32, f16 or bf16") })
    }
}

fn check_device(op: &'static str, name: &str, t: &Tensor, device: &Device) -> Result<()> {
    if t.device().same_device(device) {
        Ok(())
    } else {
        Err(Error::DeviceMismatch { op, lhs: format!("q on {device}"), rhs: format!("`{name}` on {}", t.device()) })
    }
}

impl<'a> Problem<'a> {
    /// Validates a prefill call; see the module header.
    pub fn new(
        op: &'static str,
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
        gate: GateInput<'a>,
        opts: &AttnOptions<'a>,
    ) -> Result<Problem<'a>> {
        let qd = q.dims();
        if qd.len() != 4 {
            return Err(Error::invalid(format!("{op}: `q` must be [B, T, H, K], got shape {}", q.shape())));
        }
        let (batch, seq_len, heads, key_dim) = (qd[0], qd[1], qd[2], qd[3]);
        if k.dims() != qd {
            return Err(Error::invalid(format!(
                "{op}: `k` has shape {} but `q` has shape {}; both must be [B, T, H, K]",
                k.shape(),
                q.shape()
            )));
        }
        let vd = v.dims();
        if vd.len() != 4 || vd[..3] != qd[..3] {
            return Err(Error::invalid(format!(
                "{op}: `v` has shape {} but `q` has shape {}; v must be [B, T, H, V] with the B, T, H of q",
                v.shape(),
                q.shape()
            )));
        }
        let value_dim = vd[3];
        for (name, dim) in [("K", key_dim), ("V", value_dim)] {
            if dim == 0 || dim > MAX_HEAD_DIM {
                return Err(Error::invalid(format!(
                    "{op}: head dim {name} = {dim} (q {}, v {}) must be in 1..={MAX_HEAD_DIM}",
                    q.shape(),
                    v.shape()
                )));
            }
        }
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            check_float(op, name, t)?;
        }
        if k.dtype() != q.dtype() || v.dtype() != q.dtype() {
            return Err(Error::invalid(format!(
                "{op}: q, k, v must share a dtype, got q {}, k {}, v {}",
                q.dtype(),
                k.dtype(),
                v.dtype()
            )));
        }
        let device = q.device();
        check_device(op, "k", k, &device)?;
        check_device(op, "v", v, &device)?;
        check_chunk_size(op, opts.chunk_size)?;
        let dims = AttnDims { batch, seq_len, heads, key_dim, value_dim };
        let spans = sequences(&dims, opts.cu_seqlens).map_err(|e| Error::invalid(format!("{op}: {e}")))?;

        let load_map = |name: &str, w: Option<&Tensor>| -> Result<Option<FeatureMap>> {
            w.map(|w| {
                check_device(op, name, w, &device)?;
                FeatureMap::from_tensor(op, name, w, heads, key_dim)
            })
            .transpose()
        };
        let q_map = load_map("q_feature_map", opts.q_feature_map)?;
        let k_map = load_map("k_feature_map", opts.k_feature_map)?;
        let q_rec = q_map.as_ref().map_or(key_dim, |m| m.out_dim());
        let rec_key_dim = k_map.as_ref().map_or(key_dim, |m| m.out_dim());
        if q_rec != rec_key_dim {
            return Err(Error::invalid(format!(
                "{op}: mapped query dim {q_rec} != mapped key dim {rec_key_dim}; q and k must reach the recurrence with the same size"
            )));
        }

        let gates = match gate {
            GateInput::None => Gates::None,
            GateInput::PerHead(g) => {
                expect_shape(op, "g", g, &[heads], "[H]")?;
                Gates::PerHead(load_gate(op, g, &device)?)
            }
            GateInput::PerToken(g) => {
                expect_shape(op, "g", g, &[batch, seq_len, heads], "[B, T, H]")?;
                Gates::PerToken(load_gate(op, g, &device)?)
            }
            GateInput::PerKey(g) => {
                expect_shape(op, "g", g, &[batch, seq_len, heads, rec_key_dim], "[B, T, H, K']")?;
                Gates::PerKey(load_gate(op, g, &device)?)
            }
        };

        let n = spans.len();
        let (initial_kv, initial_z) = match opts.initial_state {
            None => (None, None),
            Some(state) => {
                let want = [n, heads, rec_key_dim, value_dim];
                expect_shape(op, "initial_state.kv", &state.kv, &want, "[N, H, K', V]")?;
                if state.kv.dtype() != DType::F32 {
                    return Err(Error::UnsupportedDType {
                        op,
                        dtype: state.kv.dtype(),
                        detail: "initial_state.kv must be f32".into(),
                    });
                }
                check_device(op, "initial_state.kv", &state.kv, &device)?;
                state.kv.check_finite(op, "initial_state.kv")?;
                let z = match (&state.z, opts.normalize) {
                    (None, _) => None,
                    (Some(_), false) => {
                        return Err(Error::invalid(format!(
                            "{op}: initial_state has a normalizer z but normalize is off"
                        )));
                    }
                    (Some(z), true) => {
                        expect_shape(op, "initial_state.z", z, &want[..3], "[N, H, K']")?;
                        check_device(op, "initial_state.z", z, &device)?;
                        z.check_finite(op, "initial_state.z")?;
                        Some(z.to_f32_vec()?)
                    }
                };
                (Some(state.kv.to_f32_vec()?), z)
            }
        };

        let scale = opts.scale.unwrap_or((rec_key_dim as f32).powf(-0.5));
        if !scale.is_finite() {
            return Err(Error::invalid(format!("{op}: scale must be finite, got {scale}")));
        }
        if !(opts.eps.is_finite() && opts.eps >= 0.0) {
            return Err(Error::invalid(format!("{op}: eps must be finite and >= 0, got {}", opts.eps)));
        }
        for (name, t) in [("q", q), ("k", k), ("v", v)] {
            t.check_finite(op, name)?;
        }
        Ok(Problem {
            dims,
            rec_key_dim,
            spans,
            q: host_f32(q)?,
            k: host_f32(k)?,
            v: host_f32(v)?,
            gates,
            q_map,
            k_map,
            scale,
            normalize: opts.normalize,
            eps: opts.eps,
            chunk: opts.chunk_size,
            initial_kv,
            initial_z,
            key_shift: 0,
            out_dtype: q.dtype(),
            device,
        })
    }

    /// Width of a value row inside the kernels: V, plus one column of ones that
    /// accumulates the normalizer z when normalizing.
    pub fn value_width(&self) -> usize {
        self.dims.value_dim + usize::from(self.normalize)
    }

    /// Initial extended state `[K', V(+1)]` of sequence `n`, head `h` (zeros if none).
    pub fn initial_head_state(&self, n: usize, h: usize) -> Vec<f32> {
        let (kd, vd, vx) = (self.rec_key_dim, self.dims.value_dim, self.value_width());
        let mut s = vec![0.0f32; kd * vx];
        let base = (n * self.dims.heads + h) * kd;
        if let Some(kv) = &self.initial_kv {
            for r in 0..kd {
                s[r * vx..r * vx + vd].copy_from_slice(&kv[(base + r) * vd..][..vd]);
            }
        }
        if let Some(z) = &self.initial_z {
            for r in 0..kd {
                s[r * vx + vd] = z[base + r];
            }
        }
        s
    }
}

fn load_gate(op: &'static str, g: &Tensor, device: &Device) -> Result<Vec<f32>> {
    check_float(op, "g", g)?;
    check_device(op, "g", g, device)?;
    g.check_finite(op, "g")?;
    g.to_f32_vec()
}
