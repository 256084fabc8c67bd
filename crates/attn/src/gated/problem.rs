//! Validation of a gated linear-attention call and its inputs in f32.
//!
//! Two steps. Validation (always): shapes with both shapes in the message, dtypes,
//! devices, head dims, chunk size, `cu_seqlens`, feature maps, gate and initial-state
//! shapes, scale and eps; metadata only, no tensor data is read. Host data (only when
//! the inputs live on the CPU, or when the f64 reference runs): q, k, v, gates and the
//! initial state as f32 host slices (zero-copy for f32 CPU tensors), each scanned for
//! non-finite values in place (`Error::NonFinite`, first offending index).
//!
//! [`Problem::new`] does both on any device (the f64 reference reads host data).
//! [`Problem::for_fast_kernels`] does both for CPU inputs, except that q, k and v are
//! loaded but left unscanned (`qkv_checked` false: the CPU driver in `gated` scans them
//! up front or lets the AVX-512 kernel check them as it reads them), and only the
//! validation for GPU inputs: a GPU call then copies nothing to the host. The GPU kernels take the
//! tensors themselves, with sizes checked here (so they never index out of bounds), and
//! their data is checked for NaN / Inf on the device instead
//! ([`linattn_tensor::ops::check_all_finite`]: one read pass per tensor, one small
//! readback for all of them), after all metadata checks and in the order the CPU path
//! checks them (g, the initial state, q, k, v; q, k, v before the state for decode
//! steps), so a GPU call fails with the same `Error::NonFinite` as a CPU call.

use std::borrow::Cow;

use linattn_tensor::ops::check_all_finite;
use linattn_tensor::ops::non_finite::first_non_finite_in_slice;
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

/// A validated call; with its inputs as f32 host slices when `host_data` is set (empty
/// slices and `Gates` without values otherwise, see the module header).
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
    /// Whether q, k, v, gates and the initial state were loaded to the host.
    pub host_data: bool,
    /// Whether q, k and v were checked for non-finite values. [`Problem::for_fast_kernels`]
    /// leaves it to the CPU driver, which checks up front or, for the AVX-512 tile
    /// kernel, while gathering rows (one pass over the inputs instead of two).
    pub qkv_checked: bool,
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

/// Fails with `Error::NonFinite` at the first non-finite value of `values` (the host
/// data of tensor `name`), without copying it (the parallel scan of
/// `linattn_tensor::ops::first_non_finite`).
fn check_finite_host(op: &'static str, name: &str, values: &[f32]) -> Result<()> {
    match first_non_finite_in_slice(values) {
        Some(index) => Err(Error::NonFinite { op, tensor: name.to_string(), index, value: values[index] }),
        None => Ok(()),
    }
}

/// Decode steps: their CPU path checks q, k, v before the state, so their device check
/// uses that order too (`gated::decode` passes these op names; `tests/gpu_non_finite.rs`
/// checks that both paths report the same tensor when several hold NaN / Inf).
const DECODE_STEP_OPS: [&str; 3] = ["linear_attn_step", "simple_gla_step", "gla_step"];

/// The data of a GPU call checked on its device, in the CPU path's order (see the module
/// header); the feature-map weights were checked when they were loaded.
fn check_finite_on_device(
    op: &'static str,
    [q, k, v]: [&Tensor; 3],
    gate: Option<&Tensor>,
    state: Option<&crate::options::LinearState>,
) -> Result<()> {
    let gate: Vec<(&str, &Tensor)> = gate.map(|g| ("g", g)).into_iter().collect();
    let state: Vec<(&str, &Tensor)> = state
        .map(|s| [Some(("initial_state.kv", &s.kv)), s.z.as_ref().map(|z| ("initial_state.z", z))])
        .into_iter()
        .flatten()
        .flatten()
        .collect();
    let qkv = [("q", q), ("k", k), ("v", v)];
    let named = if DECODE_STEP_OPS.contains(&op) {
        [&gate[..], &qkv, &state].concat()
    } else {
        [&gate[..], &state, &qkv].concat()
    };
    check_all_finite(op, &named)
}

/// `t` as f32 on the host, checked for non-finite values.
fn load_checked<'t>(op: &'static str, name: &str, t: &'t Tensor) -> Result<Cow<'t, [f32]>> {
    let values = host_f32(t)?;
    check_finite_host(op, name, &values)?;
    Ok(values)
}

impl<'a> Problem<'a> {
    /// Validates a prefill call and loads the host data on any device (the f64
    /// reference, the window hybrid); see the module header.
    pub fn new(
        op: &'static str,
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
        gate: GateInput<'a>,
        opts: &AttnOptions<'a>,
    ) -> Result<Problem<'a>> {
        Self::build(op, q, k, v, gate, opts, true, true, true)
    }

    /// Validates a decode step on the CPU: loads q, k, v and gates, but leaves the
    /// initial state (validated: shape, dtype, device) for the step kernel to read in
    /// place (`initial_kv` / `initial_z` stay `None`; the kernel checks finiteness).
    pub fn for_cpu_step(
        op: &'static str,
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
        gate: GateInput<'a>,
        opts: &AttnOptions<'a>,
    ) -> Result<Problem<'a>> {
        Self::build(op, q, k, v, gate, opts, true, false, true)
    }

    /// Validates a prefill call for the device's fast kernels: loads the host data only
    /// for CPU inputs, so a GPU call copies nothing to the host. q, k and v are not yet
    /// checked for non-finite values (`qkv_checked` is false): the CPU driver does it.
    pub fn for_fast_kernels(
        op: &'static str,
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
        gate: GateInput<'a>,
        opts: &AttnOptions<'a>,
    ) -> Result<Problem<'a>> {
        Self::build(op, q, k, v, gate, opts, q.is_cpu(), q.is_cpu(), false)
    }

    /// Fails with `Error::NonFinite` at the first non-finite value of q, then k, then v.
    pub fn check_qkv_finite(&self, op: &'static str) -> Result<()> {
        check_finite_host(op, "q", &self.q)?;
        check_finite_host(op, "k", &self.k)?;
        check_finite_host(op, "v", &self.v)
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        op: &'static str,
        q: &'a Tensor,
        k: &'a Tensor,
        v: &'a Tensor,
        gate: GateInput<'a>,
        opts: &AttnOptions<'a>,
        host_data: bool,
        load_state: bool,
        check_qkv: bool,
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

        // Metadata of the gate and the initial state first; data after every metadata
        // check, on every device (so CPU and GPU calls fail with the same error).
        if let Some(g) = gate_tensor(gate) {
            let (want, meaning) = match gate {
                GateInput::PerHead(_) => (vec![heads], "[H]"),
                GateInput::PerToken(_) => (vec![batch, seq_len, heads], "[B, T, H]"),
                _ => (vec![batch, seq_len, heads, rec_key_dim], "[B, T, H, K']"),
            };
            expect_shape(op, "g", g, &want, meaning)?;
            check_float(op, "g", g)?;
            check_device(op, "g", g, &device)?;
        }
        let state_z = match opts.initial_state {
            None => None,
            Some(state) => {
                let want = [spans.len(), heads, rec_key_dim, value_dim];
                expect_shape(op, "initial_state.kv", &state.kv, &want, "[N, H, K', V]")?;
                if state.kv.dtype() != DType::F32 {
                    return Err(Error::UnsupportedDType {
                        op,
                        dtype: state.kv.dtype(),
                        detail: "initial_state.kv must be f32".into(),
                    });
                }
                check_device(op, "initial_state.kv", &state.kv, &device)?;
                match (&state.z, opts.normalize) {
                    (None, _) => None,
                    (Some(_), false) => {
                        return Err(Error::invalid(format!(
                            "{op}: initial_state has a normalizer z but normalize is off"
                        )));
                    }
                    (Some(z), true) => {
                        expect_shape(op, "initial_state.z", z, &want[..3], "[N, H, K']")?;
                        check_device(op, "initial_state.z", z, &device)?;
                        Some(z)
                    }
                }
            }
        };
        let scale = opts.scale.unwrap_or((rec_key_dim as f32).powf(-0.5));
        if !scale.is_finite() {
            return Err(Error::invalid(format!("{op}: scale must be finite, got {scale}")));
        }
        if !(opts.eps.is_finite() && opts.eps >= 0.0) {
            return Err(Error::invalid(format!("{op}: eps must be finite and >= 0, got {}", opts.eps)));
        }

        if !host_data {
            check_finite_on_device(op, [q, k, v], gate_tensor(gate), opts.initial_state)?;
        }
        let gate_values = |g: &Tensor| -> Result<Vec<f32>> {
            if host_data { Ok(load_checked(op, "g", g)?.into_owned()) } else { Ok(Vec::new()) }
        };
        let gates = match gate {
            GateInput::None => Gates::None,
            GateInput::PerHead(g) => Gates::PerHead(gate_values(g)?),
            GateInput::PerToken(g) => Gates::PerToken(gate_values(g)?),
            GateInput::PerKey(g) => Gates::PerKey(gate_values(g)?),
        };
        let (initial_kv, initial_z) = match opts.initial_state {
            Some(state) if host_data && load_state => {
                let kv = load_checked(op, "initial_state.kv", &state.kv)?.into_owned();
                let z = state_z.map(|z| load_checked(op, "initial_state.z", z).map(Cow::into_owned)).transpose()?;
                (Some(kv), z)
            }
            _ => (None, None),
        };
        let (q_host, k_host, v_host) = if host_data && check_qkv {
            (load_checked(op, "q", q)?, load_checked(op, "k", k)?, load_checked(op, "v", v)?)
        } else if host_data {
            (host_f32(q)?, host_f32(k)?, host_f32(v)?)
        } else {
            (Cow::Borrowed(&[][..]), Cow::Borrowed(&[][..]), Cow::Borrowed(&[][..]))
        };
        Ok(Problem {
            dims,
            rec_key_dim,
            spans,
            q: q_host,
            k: k_host,
            v: v_host,
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
            host_data,
            qkv_checked: host_data && check_qkv,
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

/// The tensor of a gate, if it has one.
fn gate_tensor<'a>(gate: GateInput<'a>) -> Option<&'a Tensor> {
    match gate {
        GateInput::None => None,
        GateInput::PerHead(g) | GateInput::PerToken(g) | GateInput::PerKey(g) => Some(g),
    }
}
