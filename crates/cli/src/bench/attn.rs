//! `linattn bench attn`: the linear-attention ops of `linattn-attn` (prefill and decode
//! step) against PyTorch peers measured in the same run.
//!
//! Prefill records (one per op and sequence length), inputs `[B, T, H, K]` / `[B, T, H, V]`:
//! - `simple_gla` (log-decay per token `[B, T, H]`), `gla` (per key dim `[B, T, H, K]`),
//!   `linear_attn` (no gate), `hedgehog` (normalized `linear_attn` with LoLCATs Hedgehog
//!   maps fused on q and k, F = K/2 so K' = K), `window_linear` (LoLCATs window W + linear).
//!   Gates are `logsigmoid(x) / 16` in f32, as in flash-linear-attention's tests.
//! - `ms` is the median of repeated runs after a warm-up; `tokens_per_s = B T / time`.
//! - `tflops` counts the matrix products of the chunked algorithm (docs/kernels.md), per
//!   sequence and head, for each chunk of L <= C tokens:
//!   intra-chunk `Q K^T` on the causal triangle incl. the diagonal, `L (L+1)/2 * 2K`;
//!   `(Q K^T) V` on the same triangle, `L (L+1)/2 * 2V`; inter-chunk `Q S`, `2 L K V`; state
//!   update `K^T V`, `2 L K V`. Gate exponentials and the normalizer column are not
//!   counted. `hedgehog` adds its two maps (`2 * 2 K F` per token), `window_linear` adds
//!   the window scores and weighted values (`W (2K + 2V)` per token).
//! - `gbps` counts q, k, v, g read and o written once (input dtype; gates f32).
//!
//! Peers (`benches/peers/attn_torch.py`, PyTorch on the same machine, same layout and
//! shape): flash-linear-attention's naive *chunk* implementation of the op
//! (`torch_fla_naive_ms`, `speedup_vs_fla_naive`); where fla only has a token-by-token
//! naive version (GLA) the fields are `torch_fla_naive_recurrent_ms` /
//! `speedup_vs_fla_naive_recurrent`; and causal `scaled_dot_product_attention` at the same
//! B, T, H and head dim (`torch_sdpa_ms`, `speedup_vs_sdpa`). A peer that cannot run is
//! recorded as `peer_error` with the reason, never as a number.
//!
//! Decode records (`<op>_step`, and `<op>_step_in_place` for the ops with an in-place
//! step): `--decode-batch` sequences, one token each, from a non-zero f32 state. `gbps` is the state traffic (read + write of `[N, H, K', V]`, plus
//! z and, for `window_linear_step`, a read of the W-token KV cache), reported as a fraction
//! of the device's memory read bandwidth measured in the same run (`device_bw`).

use std::process::ExitCode;

use linattn_attn::{
    AttnOptions, LinearState, WindowOptions, WindowState, gla, gla_step, gla_step_in_place, hedgehog_identity_init,
    linear_attn, linear_attn_step, linear_attn_step_in_place, simple_gla, simple_gla_step, simple_gla_step_in_place,
    window_linear, window_linear_step,
};
use linattn_tensor::{DType, Device, Error, Result, Tensor};
use serde_json::{Value, json};

use super::{device_bw, peer, report, timing};

/// Ops this benchmark knows.
const OPS: [&str; 5] = ["simple_gla", "gla", "linear_attn", "window_linear", "hedgehog"];
/// Target on the CPU: at least this many times faster than fla's naive chunk code.
const TARGET_SPEEDUP_VS_FLA_NAIVE: f64 = 5.0;

#[derive(clap::Args)]
pub struct Args {
    /// cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Print only the JSON lines (no summary table on stderr).
    #[arg(long)]
    json: bool,
    /// Ops: simple_gla, gla, linear_attn, window_linear, hedgehog.
    #[arg(long, value_delimiter = ',', default_value = "simple_gla,gla,linear_attn")]
    ops: Vec<String>,
    /// f32, bf16 or f16 (q, k, v and the output; gates and states are f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Batch size B of the prefill.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Sequence lengths T of the prefill.
    #[arg(long, value_delimiter = ',', default_value = "4096,16384")]
    seq_len: Vec<usize>,
    /// Heads H.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Key (and query) head dim K.
    #[arg(long, default_value_t = 64)]
    key_dim: usize,
    /// Value head dim V.
    #[arg(long, default_value_t = 64)]
    value_dim: usize,
    /// Chunk length C of the fast kernels (16, 32 or 64).
    #[arg(long, default_value_t = 64)]
    chunk: usize,
    /// Window W of `window_linear`.
    #[arg(long, default_value_t = 64)]
    window: usize,
    /// Sequences N of the decode-step records (0: no decode records).
    #[arg(long, default_value_t = 64)]
    decode_batch: usize,
    /// Timed runs of a token-by-token peer (fla's recurrent GLA takes seconds per run).
    #[arg(long, default_value_t = 3)]
    recurrent_peer_runs: usize,
    /// Skip the PyTorch peers.
    #[arg(long)]
    no_peer: bool,
    /// Rewrite the "Attention" sections of this markdown file.
    #[arg(long)]
    update_docs: Option<std::path::PathBuf>,
}

/// Deterministic values in [-1, 1] (a multiplicative hash of the index and a seed).
fn pattern(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let h = (i as u32).wrapping_add(seed.wrapping_mul(0x9E37_79B9)).wrapping_mul(2_654_435_761) ^ seed;
            ((h >> 8) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Log-decays `logsigmoid(x) / 16` for x in [-1, 1]: in [-0.08, -0.02].
fn log_decays(n: usize, seed: u32) -> Vec<f32> {
    pattern(n, seed).into_iter().map(|x| -(1.0 + (-x).exp()).ln() / 16.0).collect()
}

fn tensor(values: &[f32], dtype: DType, shape: &[usize], device: &Device) -> Result<Tensor> {
    Tensor::from_f32(values, dtype, shape.to_vec())?.to_device(device)
}

/// Shape of one prefill or decode measurement.
#[derive(Clone, Copy)]
struct Shape {
    batch: usize,
    seq_len: usize,
    heads: usize,
    key_dim: usize,
    value_dim: usize,
    chunk: usize,
    window: usize,
}

impl Shape {
    /// Hedgehog features F per map (the map outputs 2F = K' values).
    fn hedgehog_features(&self) -> usize {
        (self.key_dim / 2).max(1)
    }

    /// K' seen by the recurrence of `op`.
    fn state_key_dim(&self, op: &str) -> usize {
        if op == "hedgehog" { 2 * self.hedgehog_features() } else { self.key_dim }
    }

    /// FLOPs of the chunked algorithm for `op` (see the module header).
    fn prefill_flops(&self, op: &str) -> f64 {
        let kp = self.state_key_dim(op) as f64;
        let v = self.value_dim as f64;
        let (t, c) = (self.seq_len, self.chunk);
        let triangle = |l: usize| (l * (l + 1) / 2) as f64;
        let triangles = (t / c) as f64 * triangle(c) + triangle(t % c);
        let per_head = triangles * 2.0 * (kp + v) + 4.0 * t as f64 * kp * v;
        let extra_per_token = match op {
            "hedgehog" => 2.0 * 2.0 * self.key_dim as f64 * self.hedgehog_features() as f64,
            "window_linear" => self.window.min(t) as f64 * (2.0 * self.key_dim as f64 + 2.0 * v),
            _ => 0.0,
        };
        (self.batch * self.heads) as f64 * (per_head + t as f64 * extra_per_token)
    }

    /// Bytes of q, k, v, g read and o written once.
    fn prefill_bytes(&self, op: &str, dtype: DType) -> f64 {
        let rows = (self.batch * self.seq_len * self.heads) as f64;
        let elem = dtype.block_bytes() as f64;
        let gate_elems = match op {
            "simple_gla" => 1.0,
            "gla" => self.key_dim as f64,
            _ => 0.0,
        };
        rows * (elem * (2 * self.key_dim + 2 * self.value_dim) as f64 + 4.0 * gate_elems)
    }
}

/// Inputs of one prefill, built once before timing.
struct PrefillInputs {
    q: Tensor,
    k: Tensor,
    v: Tensor,
    gate: Option<Tensor>,
    feature_map: Option<Tensor>,
    window_factor: Option<Tensor>,
}

fn prefill_inputs(op: &str, s: &Shape, dtype: DType, device: &Device) -> Result<PrefillInputs> {
    let (b, t, h, k, v) = (s.batch, s.seq_len, s.heads, s.key_dim, s.value_dim);
    let scaled = |n: usize, seed: u32| pattern(n, seed).into_iter().map(|x| 0.5 * x).collect::<Vec<f32>>();
    let gate = match op {
        "simple_gla" => Some(tensor(&log_decays(b * t * h, 4), DType::F32, &[b, t, h], device)?),
        "gla" => Some(tensor(&log_decays(b * t * h * k, 4), DType::F32, &[b, t, h, k], device)?),
        _ => None,
    };
    let feature_map = if op == "hedgehog" {
        Some(hedgehog_identity_init(h, k, s.hedgehog_features())?.to_device(device)?)
    } else {
        None
    };
    let window_factor =
        if op == "window_linear" { Some(tensor(&vec![-2.2f32; h], DType::F32, &[h], device)?) } else { None };
    Ok(PrefillInputs {
        q: tensor(&scaled(b * t * h * k, 1), dtype, &[b, t, h, k], device)?,
        k: tensor(&scaled(b * t * h * k, 2), dtype, &[b, t, h, k], device)?,
        v: tensor(&pattern(b * t * h * v, 3), dtype, &[b, t, h, v], device)?,
        gate,
        feature_map,
        window_factor,
    })
}

fn run_prefill(op: &str, x: &PrefillInputs, chunk: usize, window: usize) -> Result<()> {
    let opts = AttnOptions { chunk_size: chunk, ..AttnOptions::default() };
    let missing = || Error::invalid(format!("bench attn: inputs of {op} are incomplete"));
    match op {
        "simple_gla" => simple_gla(&x.q, &x.k, &x.v, x.gate.as_ref().ok_or_else(missing)?, &opts).map(|_| ()),
        "gla" => gla(&x.q, &x.k, &x.v, x.gate.as_ref().ok_or_else(missing)?, &opts).map(|_| ()),
        "linear_attn" => linear_attn(&x.q, &x.k, &x.v, &opts).map(|_| ()),
        "hedgehog" => {
            let map = x.feature_map.as_ref().ok_or_else(missing)?;
            let opts = AttnOptions { normalize: true, q_feature_map: Some(map), k_feature_map: Some(map), ..opts };
            linear_attn(&x.q, &x.k, &x.v, &opts).map(|_| ())
        }
        "window_linear" => {
            let opts = WindowOptions { window, chunk_size: chunk, ..WindowOptions::default() };
            window_linear(&x.q, &x.k, &x.v, x.window_factor.as_ref().ok_or_else(missing)?, &opts).map(|_| ())
        }
        other => Err(Error::invalid(format!("bench attn: unknown op {other}; use one of {OPS:?}"))),
    }
}

/// Adds the peers' fields to `rec` (or `peer_error`).
fn add_peers(rec: &mut Value, op: &str, s: &Shape, args: &Args, ours_ms: f64) {
    let device_arg = if args.device.starts_with("cuda") { "cuda" } else { "cpu" };
    let peer_args: Vec<String> = [
        ("--op", op.to_string()),
        ("--batch", s.batch.to_string()),
        ("--seq-len", s.seq_len.to_string()),
        ("--heads", s.heads.to_string()),
        ("--key-dim", s.key_dim.to_string()),
        ("--value-dim", s.value_dim.to_string()),
        ("--chunk", s.chunk.to_string()),
        ("--dtype", args.dtype.clone()),
        ("--device", device_arg.to_string()),
        ("--slow-runs", args.recurrent_peer_runs.to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let lines = match peer::run_peer("attn_torch.py", &peer_args) {
        Ok(lines) => lines,
        Err(e) => {
            rec["peer_error"] = json!(e.to_string());
            return;
        }
    };
    let mut errors = Vec::new();
    for line in &lines {
        let kind = line.get("kind").and_then(Value::as_str).unwrap_or("");
        let name = line.get("name").and_then(Value::as_str).unwrap_or("?");
        if let Some(err) = line.get("error").and_then(Value::as_str) {
            errors.push(format!("{name}: {err}"));
            continue;
        }
        let Some(ms) = line.get("ms").and_then(Value::as_f64) else { continue };
        let (ms_field, speedup_field) = match kind {
            "fla_naive" => ("torch_fla_naive_ms", "speedup_vs_fla_naive"),
            "fla_naive_recurrent" => ("torch_fla_naive_recurrent_ms", "speedup_vs_fla_naive_recurrent"),
            "sdpa" => ("torch_sdpa_ms", "speedup_vs_sdpa"),
            _ => continue,
        };
        rec[ms_field] = json!(ms);
        rec[speedup_field] = json!(ms / ours_ms);
        if kind != "sdpa" {
            rec["fla_peer"] = json!(name);
        }
        if let Some(threads) = line.get("threads") {
            rec["torch_threads"] = threads.clone();
        }
    }
    if !errors.is_empty() {
        rec["peer_error"] = json!(errors.join("; "));
    }
    let fla_speedup =
        rec.get("speedup_vs_fla_naive").or_else(|| rec.get("speedup_vs_fla_naive_recurrent")).and_then(Value::as_f64);
    if let Some(x) = fla_speedup {
        rec["meets_5x_vs_fla_naive"] = json!(x >= TARGET_SPEEDUP_VS_FLA_NAIVE);
    }
    if let Some(x) = rec.get("speedup_vs_sdpa").and_then(Value::as_f64) {
        rec["faster_than_sdpa"] = json!(x > 1.0);
    }
}

fn prefill_record(op: &str, s: &Shape, dtype: DType, device: &Device, args: &Args) -> Result<Value> {
    let inputs = prefill_inputs(op, s, dtype, device)?;
    let t = timing::time_runs(device, 2, 5, 1.0, || run_prefill(op, &inputs, s.chunk, s.window))?;
    drop(inputs);
    let secs = t.median_ms * 1e-3;
    let mut rec = json!({
        "op": op, "device": device.name(), "dtype": dtype.name(),
        "B": s.batch, "T": s.seq_len, "H": s.heads, "K": s.key_dim, "V": s.value_dim, "chunk": s.chunk,
        "ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms, "runs": t.runs, "threads": rayon::current_num_threads(),
        "tokens_per_s": (s.batch * s.seq_len) as f64 / secs,
        "tflops": s.prefill_flops(op) / secs / 1e12,
        "gbps": s.prefill_bytes(op, dtype) / secs / 1e9,
    });
    if op == "hedgehog" {
        rec["F"] = json!(s.hedgehog_features());
    }
    if op == "window_linear" {
        rec["W"] = json!(s.window);
    }
    if !args.no_peer {
        add_peers(&mut rec, op, s, args, t.median_ms);
    }
    Ok(rec)
}

/// Ops with an in-place decode step (`*_step_in_place`), timed in a second record.
const IN_PLACE_OPS: [&str; 3] = ["simple_gla", "gla", "linear_attn"];

/// One decode step of `op` for `n` sequences from a non-zero state: returns the record's
/// state bytes (read + written) next to the timing. `in_place` times the
/// `*_step_in_place` variant on one state that every run advances (record
/// `<op>_step_in_place`) instead of the step that returns a new state.
fn step_record(
    op: &str,
    s: &Shape,
    n: usize,
    dtype: DType,
    device: &Device,
    bandwidth_gbps: f64,
    in_place: bool,
) -> Result<Value> {
    let (h, k, v) = (s.heads, s.key_dim, s.value_dim);
    let kp = s.state_key_dim(op);
    let q = tensor(&pattern(n * h * k, 11), dtype, &[n, h, k], device)?;
    let key = tensor(&pattern(n * h * k, 12), dtype, &[n, h, k], device)?;
    let value = tensor(&pattern(n * h * v, 13), dtype, &[n, h, v], device)?;
    let normalize = matches!(op, "hedgehog" | "window_linear");
    let kv = tensor(&pattern(n * h * kp * v, 14), DType::F32, &[n, h, kp, v], device)?;
    let z_values: Vec<f32> = pattern(n * h * kp, 15).into_iter().map(|x| 1.5 + x).collect();
    let z = if normalize { Some(tensor(&z_values, DType::F32, &[n, h, kp], device)?) } else { None };
    let state = LinearState { kv, z };
    let mut state_bytes = 2.0 * 4.0 * (n * h * kp * (v + usize::from(normalize))) as f64;
    let opts = AttnOptions { chunk_size: s.chunk, ..AttnOptions::default() };
    // The in-place runs advance their own handle of the state (copied on the first,
    // warm-up write, then updated where it is).
    let mut own = state.clone();
    let t = match op {
        "simple_gla" => {
            let g = tensor(&log_decays(n * h, 16), DType::F32, &[n, h], device)?;
            timing::time_runs(device, 3, 10, 0.5, || match in_place {
                true => simple_gla_step_in_place(&q, &key, &value, &g, &mut own, &opts).map(|_| ()),
                false => simple_gla_step(&q, &key, &value, &g, Some(&state), &opts).map(|_| ()),
            })?
        }
        "gla" => {
            let g = tensor(&log_decays(n * h * k, 16), DType::F32, &[n, h, k], device)?;
            timing::time_runs(device, 3, 10, 0.5, || match in_place {
                true => gla_step_in_place(&q, &key, &value, &g, &mut own, &opts).map(|_| ()),
                false => gla_step(&q, &key, &value, &g, Some(&state), &opts).map(|_| ()),
            })?
        }
        "linear_attn" => timing::time_runs(device, 3, 10, 0.5, || match in_place {
            true => linear_attn_step_in_place(&q, &key, &value, &mut own, &opts).map(|_| ()),
            false => linear_attn_step(&q, &key, &value, Some(&state), &opts).map(|_| ()),
        })?,
        _ if in_place => return Err(Error::invalid(format!("bench attn: {op} has no in-place decode step"))),
        "hedgehog" => {
            let map = hedgehog_identity_init(h, k, s.hedgehog_features())?.to_device(device)?;
            let opts = AttnOptions { normalize: true, q_feature_map: Some(&map), k_feature_map: Some(&map), ..opts };
            timing::time_runs(device, 3, 10, 0.5, || {
                linear_attn_step(&q, &key, &value, Some(&state), &opts).map(|_| ())
            })?
        }
        "window_linear" => {
            let w = s.window;
            let window_state = WindowState {
                linear: state.clone(),
                keys: Tensor::from_f32(&pattern(n * h * w * k, 17), DType::F32, [n, h, w, k])?,
                values: Tensor::from_f32(&pattern(n * h * w * v, 18), DType::F32, [n, h, w, v])?,
                tokens_seen: Tensor::from_vec(vec![(3 * w) as i64; n], [n])?,
            };
            let factor = tensor(&vec![-2.2f32; h], DType::F32, &[h], device)?;
            let opts = WindowOptions { window: w, chunk_size: s.chunk, ..WindowOptions::default() };
            // The W-token cache is read once; one slot (and the evicted token) is rewritten.
            state_bytes += 4.0 * (n * h * (w + 2) * (k + v)) as f64;
            timing::time_runs(device, 3, 10, 0.5, || {
                window_linear_step(&q, &key, &value, &factor, &window_state, &opts).map(|_| ())
            })?
        }
        other => return Err(Error::invalid(format!("bench attn: unknown op {other}; use one of {OPS:?}"))),
    };
    let secs = t.median_ms * 1e-3;
    let gbps = state_bytes / secs / 1e9;
    // Per head and sequence: decay + outer-product update of S and the product q^T S.
    let flops = (n * h) as f64 * 4.0 * kp as f64 * v as f64;
    Ok(json!({
        "op": format!("{op}_step{}", if in_place { "_in_place" } else { "" }),
        "device": device.name(), "dtype": dtype.name(),
        "N": n, "H": h, "K": k, "K_state": kp, "V": v,
        "ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms, "runs": t.runs, "threads": rayon::current_num_threads(),
        "tokens_per_s": n as f64 / secs, "tflops": flops / secs / 1e12,
        "state_bytes": state_bytes, "gbps": gbps,
        "membw_gbps": bandwidth_gbps, "fraction_of_membw": gbps / bandwidth_gbps,
    }))
}

/// One-minute load average of this machine (the benchmark shares it with other work).
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// Copies of prefill records with one `fla peer` column, whichever fla version ran.
fn prefill_table_rows(records: &[Value]) -> Vec<Value> {
    records
        .iter()
        .map(|r| {
            let mut row = r.clone();
            let fla_ms = r.get("torch_fla_naive_ms").or_else(|| r.get("torch_fla_naive_recurrent_ms")).cloned();
            let fla_speedup =
                r.get("speedup_vs_fla_naive").or_else(|| r.get("speedup_vs_fla_naive_recurrent")).cloned();
            row["fla_peer_ms"] = fla_ms.unwrap_or(Value::Null);
            row["speedup_vs_fla_peer"] = fla_speedup.unwrap_or(Value::Null);
            row
        })
        .collect()
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let device = Device::parse(&args.device)?;
    let dtype = DType::parse(&args.dtype)?;
    for op in &args.ops {
        if !OPS.contains(&op.as_str()) {
            return Err(Error::invalid(format!("bench attn: unknown op {op}; use one of {OPS:?}")));
        }
    }
    let load_at_start = load_average();
    let mut prefill = Vec::new();
    for op in &args.ops {
        for &seq_len in &args.seq_len {
            let shape = Shape {
                batch: args.batch,
                seq_len,
                heads: args.heads,
                key_dim: args.key_dim,
                value_dim: args.value_dim,
                chunk: args.chunk,
                window: args.window,
            };
            let rec = prefill_record(op, &shape, dtype, &device, args).unwrap_or_else(|e| {
                json!({ "op": op, "device": device.name(), "dtype": dtype.name(), "B": args.batch, "T": seq_len,
                        "H": args.heads, "K": args.key_dim, "V": args.value_dim, "error": e.to_string() })
            });
            report::emit(&rec);
            prefill.push(rec);
        }
    }
    let mut decode = Vec::new();
    let mut bandwidth = None;
    if args.decode_batch > 0 {
        let gbps = match device_bw::read_bandwidth(&device, 5) {
            Ok(bw) => {
                report::emit(&bw.record(&device));
                bw.gbps
            }
            Err(e) => {
                report::emit(&json!({ "op": "memory_read", "device": device.to_string(), "error": e.to_string() }));
                f64::NAN
            }
        };
        bandwidth = Some(gbps);
        let shape = Shape {
            batch: args.decode_batch,
            seq_len: 1,
            heads: args.heads,
            key_dim: args.key_dim,
            value_dim: args.value_dim,
            chunk: args.chunk,
            window: args.window,
        };
        for op in &args.ops {
            for in_place in [false, true] {
                if in_place && !IN_PLACE_OPS.contains(&op.as_str()) {
                    continue;
                }
                let rec =
                    step_record(op, &shape, args.decode_batch, dtype, &device, gbps, in_place).unwrap_or_else(|e| {
                        let name = format!("{op}_step{}", if in_place { "_in_place" } else { "" });
                        json!({ "op": name, "device": device.name(), "dtype": dtype.name(),
                            "N": args.decode_batch, "error": e.to_string() })
                    });
                report::emit(&rec);
                decode.push(rec);
            }
        }
    }
    let prefill_columns = [
        "op",
        "dtype",
        "B",
        "T",
        "H",
        "K",
        "V",
        "ms",
        "tokens_per_s",
        "tflops",
        "gbps",
        "fla_peer",
        "fla_peer_ms",
        "speedup_vs_fla_peer",
        "torch_sdpa_ms",
        "speedup_vs_sdpa",
        "meets_5x_vs_fla_naive",
        "faster_than_sdpa",
    ];
    let decode_columns =
        ["op", "dtype", "N", "H", "K_state", "V", "ms", "tokens_per_s", "gbps", "membw_gbps", "fraction_of_membw"];
    let prefill_table = report::markdown_table(&prefill_table_rows(&prefill), &prefill_columns);
    let decode_table = report::markdown_table(&decode, &decode_columns);
    if !args.json {
        eprintln!("{prefill_table}");
        if !decode.is_empty() {
            eprintln!("{decode_table}");
        }
    }
    if let Some(path) = &args.update_docs {
        let load = load_at_start.map_or_else(|| "unknown".to_string(), |l| format!("{l:.1}"));
        let command = format!(
            "LINATTN_PYTHON=... linattn bench attn --device {} --dtype {} --ops {} --batch {} --seq-len {} --heads {} \
             --key-dim {} --value-dim {} --chunk {} --decode-batch {}{}",
            args.device,
            args.dtype,
            args.ops.join(","),
            args.batch,
            args.seq_len.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            args.heads,
            args.key_dim,
            args.value_dim,
            args.chunk,
            args.decode_batch,
            if args.no_peer { " --no-peer" } else { "" }
        );
        let header = format!(
            "Machine: {}. Date: {}. Commit: {}. Load average (1 min) at the start: {load}. Command: `{command}`.",
            report::machine(),
            report::today(),
            report::commit()
        );
        let prefill_body = format!(
            "{header}\n\n\
             Peers, PyTorch on the same machine in the same run (`benches/peers/attn_torch.py`, `torch.no_grad()`, \
             median after a warm-up): `fla_peer` is flash-linear-attention's naive chunk implementation of the op \
             (`naive_chunk_simple_gla`, `naive_chunk_linear_attn`); fla has only a token-by-token naive GLA \
             (`naive_recurrent_gla`, field `torch_fla_naive_recurrent_ms` in the JSON), timed over {} runs without \
             warm-up. `torch_sdpa_ms`: causal `scaled_dot_product_attention` at the same B, T, H, head dim. \
             `tflops` counts the chunked algorithm's products (causal intra-chunk `QK^T` and `(QK^T)V`, inter-chunk \
             `QS`, state update `K^TV`), `gbps` q, k, v, g read and o written once. Targets (CPU f32): at least \
             {TARGET_SPEEDUP_VS_FLA_NAIVE}x faster than the fla naive implementation, and faster than causal SDPA. Our op and its peers run one after the other, not interleaved: when the load \
             average exceeds the thread count, the ratios move by several times between runs, so compare runs \
             before trusting one table.\n\n{}",
            args.recurrent_peer_runs, prefill_table
        );
        report::update_markdown_section(path, &format!("Attention: prefill ({})", args.device), &prefill_body)?;
        if !decode.is_empty() {
            let decode_body = format!(
                "{header}\n\n\
                 One token for each of N sequences from a non-zero f32 state; `_step` returns a new state, \
                 `_step_in_place` updates one state where it is. `gbps`: state bytes read and written \
                 (`[N, H, K', V]` f32, plus z when normalized, plus the W-token cache of `window_linear_step`) per \
                 second; peer: the memory read bandwidth of the bench's device ({}), measured in the same run \
                 ({:.1} GB/s).\n\n{}",
                device.name(),
                bandwidth.unwrap_or(f64::NAN),
                decode_table
            );
            report::update_markdown_section(path, &format!("Attention: decode step ({})", args.device), &decode_body)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
