//! Batched decode step of the window hybrid: one new token per sequence.
//!
//! Per sequence and head, with `m = tokens_seen` the new token's position:
//! 1. if `m >= W`, the token in ring slot `m % W` (position `m - W`) leaves the window:
//!    `S += phi_k(k_old) v_old^T`, `z += phi_k(k_old)`;
//! 2. the new key / value are written to slot `m % W`, `tokens_seen = m + 1`;
//! 3. the output is the definition's formula over the `min(m + 1, W)` cached tokens and
//!    `S`, `z` (window terms by the same `super::chunked::window_terms` as prefill).
//!
//! Layout: q, k `[N, H, D]`, v `[N, H, V]`, `window_factor [H]`; state as in the module
//! header of `window`; output `[N, H, V]` in q's dtype. f32 throughout.

use linattn_tensor::ops::check_all_finite;
use linattn_tensor::{DType, Device, Error, Result, Tensor};
use rayon::prelude::*;

use super::chunked::window_terms;
use super::{WindowOptions, WindowOutput, WindowProblem, WindowState};
use crate::gated::Engine;
use crate::gated::decode::as_one_token;
use crate::gated::problem::expect_shape;
use crate::options::LinearState;
use crate::vecops::{axpy, dot};

/// One decode step of [`super::window_linear`] from `state` (use [`WindowState::empty`]
/// to start from nothing). `opts.cu_seqlens` must be `None`; `opts.chunk_size` is unused.
pub fn window_linear_step(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    window_factor: &Tensor,
    state: &WindowState,
    opts: &WindowOptions,
) -> Result<WindowOutput> {
    const OP: &str = "window_linear_step";
    if opts.cu_seqlens.is_some() {
        return Err(Error::invalid(format!("{OP}: decode steps take one token per sequence; cu_seqlens must be None")));
    }
    let q4 = as_one_token(OP, "q", q, "[N, H, D]")?;
    let k4 = as_one_token(OP, "k", k, "[N, H, D]")?;
    let v4 = as_one_token(OP, "v", v, "[N, H, V]")?;
    let p = WindowProblem::new(OP, &q4, &k4, &v4, window_factor, opts, Engine::Fast)?;
    let lp = &p.linear;
    let d = lp.dims;
    let (n, heads, kd, hd, vd, w) = (d.batch, d.heads, lp.rec_key_dim, d.key_dim, d.value_dim, p.window);
    let z = state.linear.z.as_ref().ok_or_else(|| Error::invalid(format!("{OP}: state.linear.z is missing")))?;
    for (name, t, want, meaning) in [
        ("state.linear.kv", &state.linear.kv, vec![n, heads, kd, vd], "[N, H, K', V]"),
        ("state.linear.z", z, vec![n, heads, kd], "[N, H, K']"),
        ("state.keys", &state.keys, vec![n, heads, w, hd], "[N, H, W, D]"),
        ("state.values", &state.values, vec![n, heads, w, vd], "[N, H, W, V]"),
    ] {
        expect_shape(OP, name, t, &want, meaning)?;
        if t.dtype() != DType::F32 {
            return Err(Error::UnsupportedDType { op: OP, dtype: t.dtype(), detail: format!("`{name}` must be f32") });
        }
    }
    // On the state's device: a scan on the CPU, a read pass and one small readback on a GPU.
    check_all_finite(
        OP,
        &[
            ("state.linear.kv", &state.linear.kv),
            ("state.linear.z", z),
            ("state.keys", &state.keys),
            ("state.values", &state.values),
        ],
    )?;
    expect_shape(OP, "state.tokens_seen", &state.tokens_seen, &[n], "[N]")?;
    let seen =
        state.tokens_seen.to_vec::<i64>().map_err(|e| Error::invalid(format!("{OP}: state.tokens_seen: {e}")))?;
    if let Some(i) = seen.iter().position(|&s| s < 0) {
        return Err(Error::invalid(format!("{OP}: state.tokens_seen[{i}] = {} is negative", seen[i])));
    }
    // Device dispatch: the one place this op picks a kernel.
    match &lp.device {
        Device::Cpu => {}
        Device::Cuda(_) | Device::Wgpu(_) => {
            let (output, kv, z, keys, values) = crate::gpu::window_step(&crate::gpu::WindowStepCall {
                q,
                k,
                v,
                q_map: lp.q_map.as_ref(),
                k_map: lp.k_map.as_ref(),
                factor: &p.factor,
                kv: &state.linear.kv,
                z,
                keys: &state.keys,
                values: &state.values,
                seen: &seen,
                score_scale: p.score_scale,
                window: w,
            })?;
            let seen: Vec<i64> = seen.iter().map(|s| s + 1).collect();
            return Ok(WindowOutput {
                output,
                state: WindowState {
                    linear: LinearState { kv, z: Some(z) },
                    keys,
                    values,
                    tokens_seen: Tensor::from_vec(seen, [n])?.to_device(&lp.device)?,
                },
            });
        }
    }
    let mut kv = state.linear.kv.to_f32_vec()?;
    let mut zs = z.to_f32_vec()?;
    let mut keys = state.keys.to_f32_vec()?;
    let mut values = state.values.to_f32_vec()?;
    let mut out = vec![0.0f32; n * heads * vd];
    kv.par_chunks_mut(kd * vd)
        .zip(zs.par_chunks_mut(kd))
        .zip(keys.par_chunks_mut(w * hd))
        .zip(values.par_chunks_mut(w * vd))
        .zip(out.par_chunks_mut(vd))
        .enumerate()
        .for_each(|(task, ((((s, z), keys), values), o))| {
            let (seq, h) = (task / heads, task % heads);
            let m = seen[seq] as usize;
            let slot = m % w;
            let mut mapped = vec![0.0f32; kd];
            if m >= w {
                map_row(lp.k_map.as_ref(), h, &keys[slot * hd..(slot + 1) * hd], &mut mapped);
                let old_v = &values[slot * vd..(slot + 1) * vd];
                for r in 0..kd {
                    axpy(mapped[r], old_v, &mut s[r * vd..(r + 1) * vd]);
                    z[r] += mapped[r];
                }
            }
            keys[slot * hd..(slot + 1) * hd].copy_from_slice(&lp.k[d.qk_index(seq, 0, h, 0)..][..hd]);
            values[slot * vd..(slot + 1) * vd].copy_from_slice(&lp.v[d.v_index(seq, 0, h, 0)..][..vd]);
            let q_row = &lp.q[d.qk_index(seq, 0, h, 0)..][..hd];
            map_row(lp.q_map.as_ref(), h, q_row, &mut mapped);
            let mut num = vec![0.0f32; vd];
            for r in 0..kd {
                axpy(mapped[r], &s[r * vd..(r + 1) * vd], &mut num);
            }
            let mut scores = vec![0.0f32; w];
            let keys = &*keys;
            let values = &*values;
            let den = dot(&mapped, z)
                + window_terms(
                    q_row,
                    (m + 1).min(w),
                    |j| &keys[j * hd..(j + 1) * hd],
                    |j| &values[j * vd..(j + 1) * vd],
                    p.score_scale,
                    p.factor[h],
                    &mut scores,
                    &mut num,
                );
            let inv = 1.0 / den;
            o.iter_mut().zip(&num).for_each(|(o, &x)| *o = x * inv);
        });
    let seen: Vec<i64> = seen.iter().map(|s| s + 1).collect();
    Ok(WindowOutput {
        output: Tensor::from_f32(&out, lp.out_dtype, [n, heads, vd])?,
        state: WindowState {
            linear: LinearState {
                kv: Tensor::from_vec(kv, [n, heads, kd, vd])?,
                z: Some(Tensor::from_vec(zs, [n, heads, kd])?),
            },
            keys: Tensor::from_vec(keys, [n, heads, w, hd])?,
            values: Tensor::from_vec(values, [n, heads, w, vd])?,
            tokens_seen: Tensor::from_vec(seen, [n])?,
        },
    })
}

fn map_row(map: Option<&crate::feature_map::FeatureMap>, head: usize, x: &[f32], out: &mut [f32]) {
    match map {
        Some(m) => m.apply(head, x, out),
        None => out.copy_from_slice(x),
    }
}
