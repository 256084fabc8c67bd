//! Backward of the LoLCATs sliding-window + linear hybrid.
//!
//! Forward, per sequence, head and query n (q, k `[B, T, H, K]`, v `[B, T, H, V]`,
//! feature maps phi_q, phi_k from W_q, W_k `[H, K, F]` (see [`super::hedgehog`]),
//! window logit w `[H]`, window W, s default `K^-0.5`):
//! ```text
//! win(n) = {m : n-W < m <= n}        old(n) = {m : m <= n-W}
//! a_nm = s q_n . k_m      c_n = max_{m in win(n)} a_nm      g = sigmoid(w)
//! e_nm = g exp(a_nm - c_n)           b_nm = phi_q(q_n) . phi_k(k_m)
//! N_n  = sum_win e_nm v_m + sum_old b_nm v_m      D_n = sum_win e_nm + sum_old b_nm
//! y_n  = N_n / D_n
//! ```
//! `c_n` multiplies only the window terms (`e^{-c_n}`), so it does not cancel and is
//! differentiated: its gradient goes to the first arg-max (the subgradient of max).
//! Backward, with `dN = dy/D`, `dD = -(dy . y)/D`:
//! ```text
//! de_nm = dN . v_m + dD    da_nm = e_nm de_nm (+ dc_n at the arg-max)   dc_n = -sum_win e_nm de_nm
//! dq_n += s sum_win da_nm k_m      dk_m += s da_nm q_n      dv_m += e_nm dN_n
//! dw   += (1 - g) sum_win e_nm de_nm
//! db_nm = dN . v_m + dD    dphi_q(q_n) += db_nm phi_k(k_m)   dphi_k(k_m) += db_nm phi_q(q_n)
//! dv_m += b_nm dN_n,       then the feature-map backward gives dq, dk, dW_q, dW_k.
//! ```
//! [`reference()`] evaluates every sum pair by pair in f64 (the linear part too,
//! `O(T^2)`). [`chunked()`] evaluates the linear part as chunked linear attention in f32
//! (scale 1) with keys and values delayed by W tokens and values augmented by a column
//! of ones (`[v, 1]`: numerator and denominator in one pass), forward and backward
//! through the chunked core of the gated ops; the window band (`O(T W K)`) is the same
//! per-query code as the reference (scores and its backward in f64, `N`, `D` summed in
//! f32). The denominator is at least g > 0 (the arg-max term), so no eps is needed.

use linattn_tensor::{Error, Result};
use rayon::prelude::*;

use super::hedgehog::{phi_token, phi_token_backward};
use super::{Local, check_chunk, check_dims, check_input, chunk, resolve_scale};
use crate::layout::{AttnDims, SeqSpan, sequences};

/// Default window length W (LoLCATs).
pub const DEFAULT_WINDOW: usize = 64;

/// Forward inputs of the window + linear hybrid.
#[derive(Clone, Copy, Debug)]
pub struct WindowLinearBackwardInputs<'a> {
    /// Sizes; K is the head dim of q and k.
    pub dims: AttnDims,
    /// Queries `[B, T, H, K]` (after RoPE).
    pub q: &'a [f32],
    /// Keys `[B, T, H, K]` (after RoPE).
    pub k: &'a [f32],
    /// Values `[B, T, H, V]`.
    pub v: &'a [f32],
    /// Query feature-map weights `[H, K, F]`.
    pub feature_q: &'a [f32],
    /// Key feature-map weights `[H, K, F]`.
    pub feature_k: &'a [f32],
    /// Features per softmax F (features 2F).
    pub feature_dim: usize,
    /// Window-factor logits `[H]`; the factor is `sigmoid(logit)`.
    pub window_logit: &'a [f32],
    /// Window length W (keys `n-W < m <= n` use softmax scores).
    pub window: usize,
    /// Packed variable-length sequences (B = 1).
    pub cu_seqlens: Option<&'a [usize]>,
    /// Score scale; `None` means `K^-0.5`.
    pub scale: Option<f32>,
}

/// Gradients of the window + linear hybrid.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowLinearGrads {
    /// dL/dq, `[B, T, H, K]`.
    pub dq: Vec<f32>,
    /// dL/dk, `[B, T, H, K]`.
    pub dk: Vec<f32>,
    /// dL/dv, `[B, T, H, V]`.
    pub dv: Vec<f32>,
    /// dL/dW_q, `[H, K, F]`.
    pub d_feature_q: Vec<f32>,
    /// dL/dW_k, `[H, K, F]`.
    pub d_feature_k: Vec<f32>,
    /// dL/d(window logit), `[H]`.
    pub d_window_logit: Vec<f32>,
}

/// One (sequence, head), rows contiguous, f64.
struct WinLocal<'a> {
    len: usize,
    kd: usize,
    vd: usize,
    f: usize,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    dy: Vec<f64>,
    wq: &'a [f32],
    wk: &'a [f32],
    gate: f64,
    window: usize,
    scale: f64,
}

#[derive(Default)]
struct WinGrads {
    dq: Vec<f64>,
    dk: Vec<f64>,
    dv: Vec<f64>,
    dwq: Vec<f64>,
    dwk: Vec<f64>,
    dlogit: f64,
}

impl WinLocal<'_> {
    fn features(&self, x: &[f64], w: &[f32]) -> Vec<f64> {
        let (d, f) = (self.kd, self.f);
        let mut out = vec![0.0f64; self.len * 2 * f];
        for t in 0..self.len {
            phi_token(&x[t * d..(t + 1) * d], w, f, &mut out[t * 2 * f..(t + 1) * 2 * f]);
        }
        out
    }

    /// Window part of query n: returns (numerator, denominator, e_m, arg-max) over
    /// keys `lo..=n`.
    fn window_terms(&self, n: usize) -> (usize, Vec<f64>, usize) {
        let (kd, lo) = (self.kd, (n + 1).saturating_sub(self.window));
        let qn = &self.q[n * kd..(n + 1) * kd];
        let scores: Vec<f64> = (lo..=n)
            .map(|m| self.scale * qn.iter().zip(&self.k[m * kd..(m + 1) * kd]).map(|(a, b)| a * b).sum::<f64>())
            .collect();
        let mut arg = 0;
        for (i, &a) in scores.iter().enumerate() {
            if a > scores[arg] {
                arg = i;
            }
        }
        let c = scores[arg];
        (lo, scores.iter().map(|&a| self.gate * (a - c).exp()).collect(), arg)
    }

    /// Window-part backward of query n given dN, dD; adds into `g`.
    fn window_backward(&self, n: usize, dn: &[f64], dden: f64, g: &mut WinGrads) {
        let (kd, vd) = (self.kd, self.vd);
        let (lo, e, arg) = self.window_terms(n);
        let mut da: Vec<f64> = Vec::with_capacity(e.len());
        for (i, m) in (lo..=n).enumerate() {
            let de = dn.iter().zip(&self.v[m * vd..(m + 1) * vd]).map(|(a, b)| a * b).sum::<f64>() + dden;
            da.push(e[i] * de);
            for (x, &d) in g.dv[m * vd..(m + 1) * vd].iter_mut().zip(dn) {
                *x += e[i] * d;
            }
        }
        let sum: f64 = da.iter().sum();
        g.dlogit += (1.0 - self.gate) * sum;
        da[arg] -= sum;
        for (i, m) in (lo..=n).enumerate() {
            for c in 0..kd {
                g.dq[n * kd + c] += self.scale * da[i] * self.k[m * kd + c];
                g.dk[m * kd + c] += self.scale * da[i] * self.q[n * kd + c];
            }
        }
    }

    /// Chains the feature-map backward for q and k.
    fn feature_backward(&self, dfq: &[f64], dfk: &[f64], g: &mut WinGrads) {
        let (d, f2) = (self.kd, 2 * self.f);
        for t in 0..self.len {
            let rows = t * d..(t + 1) * d;
            let phis = t * f2..(t + 1) * f2;
            phi_token_backward(
                &self.q[rows.clone()],
                self.wq,
                self.f,
                &dfq[phis.clone()],
                &mut g.dq[rows.clone()],
                &mut g.dwq,
            );
            phi_token_backward(&self.k[rows.clone()], self.wk, self.f, &dfk[phis], &mut g.dk[rows], &mut g.dwk);
        }
    }

    fn zero_grads(&self) -> WinGrads {
        WinGrads {
            dq: vec![0.0; self.len * self.kd],
            dk: vec![0.0; self.len * self.kd],
            dv: vec![0.0; self.len * self.vd],
            dwq: vec![0.0; self.kd * self.f],
            dwk: vec![0.0; self.kd * self.f],
            dlogit: 0.0,
        }
    }
}

/// Pair-by-pair reference of one (sequence, head).
fn reference_local(l: &WinLocal) -> WinGrads {
    let (vd, f2) = (l.vd, 2 * l.f);
    let (fq, fk) = (l.features(&l.q, l.wq), l.features(&l.k, l.wk));
    let mut g = l.zero_grads();
    let (mut dfq, mut dfk) = (vec![0.0f64; l.len * f2], vec![0.0f64; l.len * f2]);
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    for n in 0..l.len {
        let (lo, e, _) = l.window_terms(n);
        let b: Vec<f64> = (0..lo).map(|m| dot(&fq[n * f2..(n + 1) * f2], &fk[m * f2..(m + 1) * f2])).collect();
        let mut num = vec![0.0f64; vd];
        for (w, m) in e.iter().zip(lo..=n).chain(b.iter().zip(0..lo)) {
            for (x, &vv) in num.iter_mut().zip(&l.v[m * vd..(m + 1) * vd]) {
                *x += w * vv;
            }
        }
        let den: f64 = e.iter().sum::<f64>() + b.iter().sum::<f64>();
        let dy = &l.dy[n * vd..(n + 1) * vd];
        let dn: Vec<f64> = dy.iter().map(|x| x / den).collect();
        let dden = -dot(dy, &num) / (den * den);
        l.window_backward(n, &dn, dden, &mut g);
        for (m, &bm) in b.iter().enumerate() {
            let db = dot(&dn, &l.v[m * vd..(m + 1) * vd]) + dden;
            for c in 0..f2 {
                dfq[n * f2 + c] += db * fk[m * f2 + c];
                dfk[m * f2 + c] += db * fq[n * f2 + c];
            }
            for (x, &d) in g.dv[m * vd..(m + 1) * vd].iter_mut().zip(&dn) {
                *x += bm * d;
            }
        }
    }
    l.feature_backward(&dfq, &dfk, &mut g);
    g
}

/// Chunked form of one (sequence, head): window band per query, linear part through
/// the chunked core with keys/values delayed by W and values `[v, 1]`.
fn chunked_local(l: &WinLocal, chunk_size: usize) -> WinGrads {
    let (n, vd, f2, w) = (l.len, l.vd, 2 * l.f, l.window);
    let to32 = |x: &[f64]| x.iter().map(|&a| a as f32).collect::<Vec<f32>>();
    let (fq, fk) = (to32(&l.features(&l.q, l.wq)), to32(&l.features(&l.k, l.wk)));
    let va = vd + 1;
    let mut lin = Local {
        len: n,
        kd: f2,
        vd: va,
        gw: 0,
        q: fq,
        k: vec![0.0; n * f2],
        v: vec![0.0; n * va],
        g: Vec::new(),
        h0: vec![0.0; f2 * va],
        d_out: vec![0.0; n * va],
        d_final: vec![0.0; f2 * va],
    };
    for t in w..n {
        let m = t - w;
        lin.k[t * f2..(t + 1) * f2].copy_from_slice(&fk[m * f2..(m + 1) * f2]);
        for j in 0..vd {
            lin.v[t * va + j] = l.v[m * vd + j] as f32;
        }
        lin.v[t * va + vd] = 1.0;
    }
    let lin_out = chunk::forward_outputs(&lin, 1.0, chunk_size);
    let mut g = l.zero_grads();
    for t in 0..n {
        let (lo, e, _) = l.window_terms(t);
        let mut num: Vec<f32> = lin_out[t * va..t * va + vd].to_vec();
        let mut den = lin_out[t * va + vd];
        for (i, m) in (lo..=t).enumerate() {
            let ei = e[i] as f32;
            den += ei;
            for (x, &vv) in num.iter_mut().zip(&l.v[m * vd..(m + 1) * vd]) {
                *x += ei * vv as f32;
            }
        }
        let dy = &l.dy[t * vd..(t + 1) * vd];
        let dn: Vec<f32> = dy.iter().map(|&x| x as f32 / den).collect();
        let dden = -dy.iter().zip(&num).map(|(&a, &b)| a as f32 * b).sum::<f32>() / (den * den);
        lin.d_out[t * va..t * va + vd].copy_from_slice(&dn);
        lin.d_out[t * va + vd] = dden;
        let dn64: Vec<f64> = dn.iter().map(|&x| x as f64).collect();
        l.window_backward(t, &dn64, dden as f64, &mut g);
    }
    let lg = chunk::backward(&lin, 1.0, chunk_size);
    let dfq: Vec<f64> = lg.dq.iter().map(|&x| x as f64).collect();
    let mut dfk = vec![0.0f64; n * f2];
    for t in w..n {
        let m = t - w;
        for c in 0..f2 {
            dfk[m * f2 + c] = lg.dk[t * f2 + c] as f64;
        }
        for j in 0..vd {
            g.dv[m * vd + j] += lg.dv[t * va + j] as f64;
        }
    }
    l.feature_backward(&dfq, &dfk, &mut g);
    g
}

fn run<F>(x: &WindowLinearBackwardInputs, d_out: &[f32], parallel: bool, solve: F) -> Result<WindowLinearGrads>
where
    F: Fn(&WinLocal) -> WinGrads + Sync,
{
    let op = "window_linear backward";
    let d: AttnDims = x.dims;
    check_dims(op, &d)?;
    let spans = sequences(&d, x.cu_seqlens)?;
    let scale = resolve_scale(op, x.scale, d.key_dim)? as f64;
    if x.window == 0 || x.feature_dim == 0 {
        return Err(Error::invalid(format!(
            "{op}: window and feature_dim must be positive, got window {} and feature_dim {}",
            x.window, x.feature_dim
        )));
    }
    let tokens = d.batch * d.seq_len * d.heads;
    let (h, kd, vd, f) = (d.heads, d.key_dim, d.value_dim, x.feature_dim);
    check_input(op, "q", x.q, tokens * kd, "[B, T, H, K]")?;
    check_input(op, "k", x.k, tokens * kd, "[B, T, H, K]")?;
    check_input(op, "v", x.v, tokens * vd, "[B, T, H, V]")?;
    check_input(op, "d_out", d_out, tokens * vd, "[B, T, H, V]")?;
    check_input(op, "feature_q", x.feature_q, h * kd * f, "[H, K, F]")?;
    check_input(op, "feature_k", x.feature_k, h * kd * f, "[H, K, F]")?;
    check_input(op, "window_logit", x.window_logit, h, "[H]")?;

    let tasks: Vec<(SeqSpan, usize)> = spans.iter().flat_map(|s| (0..h).map(move |hh| (*s, hh))).collect();
    let rows = |src: &[f32], span: &SeqSpan, hh: usize, width: usize| -> Vec<f64> {
        let mut out = Vec::with_capacity(span.len() * width);
        for t in span.start..span.end {
            let at = ((span.row * d.seq_len + t) * h + hh) * width;
            out.extend(src[at..at + width].iter().map(|&a| a as f64));
        }
        out
    };
    let one = |&(span, hh): &(SeqSpan, usize)| {
        let local = WinLocal {
            len: span.len(),
            kd,
            vd,
            f,
            q: rows(x.q, &span, hh, kd),
            k: rows(x.k, &span, hh, kd),
            v: rows(x.v, &span, hh, vd),
            dy: rows(d_out, &span, hh, vd),
            wq: &x.feature_q[hh * kd * f..(hh + 1) * kd * f],
            wk: &x.feature_k[hh * kd * f..(hh + 1) * kd * f],
            gate: 1.0 / (1.0 + (-(x.window_logit[hh] as f64)).exp()),
            window: x.window,
            scale,
        };
        solve(&local)
    };
    let locals: Vec<WinGrads> =
        if parallel { tasks.par_iter().map(one).collect() } else { tasks.iter().map(one).collect() };

    let mut dq = vec![0.0f32; tokens * kd];
    let mut dk = vec![0.0f32; tokens * kd];
    let mut dv = vec![0.0f32; tokens * vd];
    let mut dwq = vec![0.0f64; h * kd * f];
    let mut dwk = vec![0.0f64; h * kd * f];
    let mut dlogit = vec![0.0f64; h];
    for ((span, hh), l) in tasks.iter().zip(&locals) {
        for (r, t) in (span.start..span.end).enumerate() {
            let tok = (span.row * d.seq_len + t) * h + hh;
            for c in 0..kd {
                dq[tok * kd + c] = l.dq[r * kd + c] as f32;
                dk[tok * kd + c] = l.dk[r * kd + c] as f32;
            }
            for j in 0..vd {
                dv[tok * vd + j] = l.dv[r * vd + j] as f32;
            }
        }
        let at = hh * kd * f;
        for c in 0..kd * f {
            dwq[at + c] += l.dwq[c];
            dwk[at + c] += l.dwk[c];
        }
        dlogit[*hh] += l.dlogit;
    }
    let to32 = |x: Vec<f64>| x.into_iter().map(|a| a as f32).collect::<Vec<f32>>();
    Ok(WindowLinearGrads { dq, dk, dv, d_feature_q: to32(dwq), d_feature_k: to32(dwk), d_window_logit: to32(dlogit) })
}

/// Reference backward: every (query, key) pair summed directly, f64.
/// `d_out` is dL/dy `[B, T, H, V]`.
pub fn reference(inputs: &WindowLinearBackwardInputs, d_out: &[f32]) -> Result<WindowLinearGrads> {
    run(inputs, d_out, false, reference_local)
}

/// Chunked backward: linear part as chunked linear attention (f32, chunks of
/// `chunk_size`), window band per query; rayon over sequences x heads.
/// `d_out` is dL/dy `[B, T, H, V]`.
pub fn chunked(inputs: &WindowLinearBackwardInputs, d_out: &[f32], chunk_size: usize) -> Result<WindowLinearGrads> {
    check_chunk("window_linear backward", chunk_size)?;
    run(inputs, d_out, true, |l| chunked_local(l, chunk_size))
}
