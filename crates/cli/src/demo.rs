//! `linattn demo`: the built-in default workload. A LoLCATs-style linearized attention
//! layer (Hedgehog feature maps at identity init, 64-token sliding window + linear
//! attention, mixing logit logit(0.1)) prefills a sequence and then decodes tokens one by
//! one, and a RetNet-style `simple_gla` layer prefills a long sequence. Every result is
//! checked against the CPU reference (prefill) or against the full-sequence prefill
//! (decode), on the CPU and on each GPU that opens; timings and errors are printed. Exit
//! status 1 when any check fails.

use std::process::ExitCode;
use std::time::Instant;

use linattn_attn::{self as attn, AttnOptions, WindowOptions, relative_rms_error};
use linattn_tensor::{Device, Error, Result, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Tokens to prefill.
    #[arg(long, default_value_t = 1024)]
    seq_len: usize,
    /// Tokens to decode after the prefill.
    #[arg(long, default_value_t = 32)]
    decode: usize,
    /// Heads.
    #[arg(long, default_value_t = 8)]
    heads: usize,
    /// Head dimension (q, k and v).
    #[arg(long, default_value_t = 64)]
    head_dim: usize,
    /// Devices to run on; by default every device that opens.
    #[arg(long, value_delimiter = ',')]
    devices: Option<Vec<String>>,
}

const TOLERANCE: f64 = 1e-4;

fn pseudo_random(n: usize, seed: u64, amplitude: f32) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * amplitude
        })
        .collect()
}

struct Inputs {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
}

fn check(label: &str, err: f64, failures: &mut usize) {
    let ok = err.is_finite() && err <= TOLERANCE;
    if !ok {
        *failures += 1;
    }
    println!("  {label:<44} rel_rms_err {err:.2e} {}", if ok { "ok" } else { "FAILED" });
}

/// The window hybrid on `device`: prefill of all tokens but the last `decode`, then
/// decode steps, compared with the full-sequence prefill on the same device and with the
/// CPU reference.
fn window_layer(device: &Device, a: &Args, x: &Inputs, failures: &mut usize) -> Result<()> {
    let (t, h, d, n_dec) = (a.seq_len + a.decode, a.heads, a.head_dim, a.decode);
    let features = (d / 2).max(1);
    let maps = attn::hedgehog_identity_init(h, d, features)?.to_device(device)?;
    let logit = (0.1f32 / 0.9).ln();
    let factor = Tensor::from_vec(vec![logit; h], [h])?.to_device(device)?;
    let opts = WindowOptions { q_feature_map: Some(&maps), k_feature_map: Some(&maps), ..WindowOptions::default() };
    let up = |v: &[f32], len: usize, width: usize| -> Result<Tensor> {
        Tensor::from_slice(&v[..len * h * width], [1, len, h, width])?.to_device(device)
    };
    let start = Instant::now();
    let full = attn::window_linear(&up(&x.q, t, d)?, &up(&x.k, t, d)?, &up(&x.v, t, d)?, &factor, &opts)?;
    let full_out = full.output.to_f32_vec()?;
    let prefill_ms = start.elapsed().as_secs_f64() * 1e3;
    println!("  window_linear prefill T={t}: {prefill_ms:.1} ms ({:.0} tokens/s)", t as f64 / prefill_ms * 1e3);
    let maps_cpu = maps.to_device(&Device::Cpu)?;
    let ref_opts = WindowOptions { q_feature_map: Some(&maps_cpu), k_feature_map: Some(&maps_cpu), ..opts };
    let cpu = |v: &[f32]| Tensor::from_slice(&v[..t * h * d], [1, t, h, d]);
    let reference = attn::window_linear_reference(
        &cpu(&x.q)?,
        &cpu(&x.k)?,
        &cpu(&x.v)?,
        &factor.to_device(&Device::Cpu)?,
        &ref_opts,
    )?;
    check(
        "window_linear prefill vs f64 reference",
        relative_rms_error(&reference.output.to_f32_vec()?, &full_out),
        failures,
    );
    let prefix = a.seq_len;
    let pre = attn::window_linear(&up(&x.q, prefix, d)?, &up(&x.k, prefix, d)?, &up(&x.v, prefix, d)?, &factor, &opts)?;
    let mut state = pre.state;
    let mut decoded = Vec::new();
    let start = Instant::now();
    for i in prefix..t {
        let token = |v: &[f32]| Tensor::from_slice(&v[i * h * d..(i + 1) * h * d], [1, h, d])?.to_device(device);
        let step = attn::window_linear_step(&token(&x.q)?, &token(&x.k)?, &token(&x.v)?, &factor, &state, &opts)?;
        decoded.extend(step.output.to_f32_vec()?);
        state = step.state;
    }
    let decode_ms = start.elapsed().as_secs_f64() * 1e3;
    println!(
        "  window_linear decode {n_dec} tokens: {:.3} ms/token (state: S [{h}, {}, {d}], W=64 KV cache)",
        decode_ms / n_dec.max(1) as f64,
        2 * features
    );
    let tail = &full_out[prefix * h * d..];
    check("prefill + decode steps vs full prefill", relative_rms_error(tail, &decoded), failures);
    Ok(())
}

/// RetNet-style decay: a 4x longer prefill through the chunked kernel vs the reference.
fn simple_gla_layer(device: &Device, a: &Args, x: &Inputs, failures: &mut usize) -> Result<()> {
    let (t, h, d) = (a.seq_len, a.heads, a.head_dim);
    let decay: Vec<f32> = (0..h).map(|i| -(2f32.powi(-(5 + i as i32)))).collect();
    let mk = |v: &[f32], dev: &Device| Tensor::from_slice(&v[..t * h * d], [1, t, h, d])?.to_device(dev);
    let g = Tensor::from_slice(&decay, [h])?;
    let opts = AttnOptions::default();
    let start = Instant::now();
    let out =
        attn::simple_gla(&mk(&x.q, device)?, &mk(&x.k, device)?, &mk(&x.v, device)?, &g.to_device(device)?, &opts)?;
    let got = out.output.to_f32_vec()?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    println!("  simple_gla (RetNet decay) prefill T={t}: {ms:.1} ms ({:.0} tokens/s)", t as f64 / ms * 1e3);
    let cpu = Device::Cpu;
    let reference = attn::simple_gla_reference(&mk(&x.q, &cpu)?, &mk(&x.k, &cpu)?, &mk(&x.v, &cpu)?, &g, &opts)?;
    check("simple_gla prefill vs f64 reference", relative_rms_error(&reference.output.to_f32_vec()?, &got), failures);
    Ok(())
}

pub fn run(a: &Args) -> Result<ExitCode> {
    if a.seq_len == 0 || a.heads == 0 || a.head_dim == 0 {
        return Err(Error::invalid("demo: --seq-len, --heads and --head-dim must be positive"));
    }
    let t = a.seq_len + a.decode;
    let n = t * a.heads * a.head_dim;
    let x = Inputs { q: pseudo_random(n, 1, 1.0), k: pseudo_random(n, 2, 1.0), v: pseudo_random(n, 3, 1.0) };
    let specs = a.devices.clone().unwrap_or_else(|| vec!["cpu".into(), "wgpu".into(), "cuda".into()]);
    let explicit = a.devices.is_some();
    let mut failures = 0usize;
    println!(
        "linattn demo: LoLCATs window hybrid + RetNet-style layer, B=1, T={} (+{} decode), H={}, D={}",
        a.seq_len, a.decode, a.heads, a.head_dim
    );
    for spec in specs {
        let device = match Device::parse(&spec) {
            Ok(d) => d,
            Err(e) if !explicit => {
                println!("[{spec}] skipped: {e}");
                continue;
            }
            Err(e) => return Err(e),
        };
        println!("[{spec}] {}", device.name());
        for layer in [window_layer as fn(&Device, &Args, &Inputs, &mut usize) -> Result<()>, simple_gla_layer] {
            match layer(&device, a, &x, &mut failures) {
                Ok(()) => {}
                Err(e @ Error::NotImplementedOnDevice { .. }) => println!("  not available on this device yet: {e}"),
                Err(e) => return Err(e),
            }
        }
    }
    println!("demo: {}", if failures == 0 { "all checks passed" } else { "SOME CHECKS FAILED" });
    Ok(if failures == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
