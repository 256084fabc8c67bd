//! NaN / Inf in the inputs of every attention op on a GPU fails with the same
//! `Error::NonFinite` (op, tensor name, flat index, value) as the CPU path, found on the
//! device (no host copy of the inputs).
//!
//! Ops: linear_attn (plain; normalized from a state, with both feature maps), simple_gla
//! (per token, per head), gla (normalized from a state), the three decode steps (from a
//! state; gla_step normalized), window_linear (with feature maps), window_linear_step
//! (past the window, so the state is used), hedgehog_feature_map. Each tensor an op reads
//! is poisoned in turn (first element NaN, a middle one +Inf, the last -Inf) with q, k,
//! v, g in f32, bf16 and f16; then every tensor at once, which checks that both paths
//! report the same one first. Clean inputs must pass on the GPU.
//!
//! WebGPU runs on any adapter (Mesa lavapipe on CPU-only machines), CUDA on GPU 0.
//! Without the device the tests print a skip reason, unless `LINATTN_REQUIRE_WGPU=1`,
//! `LINATTN_REQUIRE_CUDA=1` or `LINATTN_REQUIRE_GPU=1` makes them fail.

mod common;

use std::collections::BTreeMap;

use common::Rng;
use linattn_attn::{
    AttnOptions, LinearState, WindowOptions, WindowState, gla, gla_step, hedgehog_feature_map, linear_attn,
    linear_attn_step, simple_gla, simple_gla_step, window_linear, window_linear_step,
};
use linattn_tensor::{DType, Device, Error, Result, Tensor, cuda_required, report_skip, wgpu_required};

/// Prefill: batch, tokens, heads, key dim, value dim; feature-map width F (2F = 16);
/// decode: sequences; window length (shorter than T and than `SEEN`).
const B: usize = 2;
const T: usize = 37;
const H: usize = 3;
const K: usize = 20;
const V: usize = 12;
const F: usize = 8;
const N: usize = 2;
const W: usize = 8;
/// Tokens each sequence has seen before a window decode step.
const SEEN: i64 = 11;

/// The public op a case calls, with the options that make it read every kind of input.
#[derive(Clone, Copy, Debug)]
enum Op {
    LinearAttn,
    LinearAttnMappedFromState,
    SimpleGlaPerToken,
    SimpleGlaPerHead,
    GlaFromState,
    LinearAttnStep,
    SimpleGlaStep,
    GlaStepNormalized,
    WindowLinearMapped,
    WindowLinearStep,
    Hedgehog,
}

const OPS: [Op; 11] = [
    Op::LinearAttn,
    Op::LinearAttnMappedFromState,
    Op::SimpleGlaPerToken,
    Op::SimpleGlaPerHead,
    Op::GlaFromState,
    Op::LinearAttnStep,
    Op::SimpleGlaStep,
    Op::GlaStepNormalized,
    Op::WindowLinearMapped,
    Op::WindowLinearStep,
    Op::Hedgehog,
];

/// Input tensors by the name errors give them.
type Inputs = BTreeMap<&'static str, Tensor>;

/// The CPU inputs of `op`: q, k, v, g (and x) in `dtype`; states, maps and the window
/// factor in f32 (what the ops accept). Log-gates are <= 0 and normalizers positive,
/// so clean calls stay finite.
fn inputs(op: Op, dtype: DType, seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let mut t = |shape: &[usize], dtype: DType| rng.tensor(shape, 1.0, dtype);
    let mut m = Inputs::new();
    let prefill = [B, T, H, K];
    let (step_qk, step_v) = ([N, H, K], [N, H, V]);
    let positive = |t: Tensor| {
        Tensor::from_vec(t.to_f32_vec().unwrap().iter().map(|x| x.abs() + 1.0).collect(), t.dims()).unwrap()
    };
    let log_gate = |t: Tensor, dtype: DType| {
        let values: Vec<f32> = t.to_f32_vec().unwrap().iter().map(|x| -0.5 * (x.abs() + 0.01)).collect();
        Tensor::from_f32(&values, dtype, t.dims().to_vec()).unwrap()
    };
    match op {
        Op::LinearAttn | Op::SimpleGlaPerToken | Op::SimpleGlaPerHead | Op::GlaFromState => {
            m.insert("q", t(&prefill, dtype));
            m.insert("k", t(&prefill, dtype));
            m.insert("v", t(&[B, T, H, V], dtype));
            match op {
                Op::SimpleGlaPerToken => {
                    m.insert("g", log_gate(t(&[B, T, H], DType::F32), dtype));
                }
                Op::SimpleGlaPerHead => {
                    m.insert("g", log_gate(t(&[H], DType::F32), dtype));
                }
                Op::GlaFromState => {
                    m.insert("g", log_gate(t(&prefill, DType::F32), dtype));
                    m.insert("initial_state.kv", t(&[B, H, K, V], DType::F32));
                    m.insert("initial_state.z", positive(t(&[B, H, K], DType::F32)));
                }
                _ => {}
            }
        }
        Op::LinearAttnMappedFromState => {
            m.insert("q", t(&prefill, dtype));
            m.insert("k", t(&prefill, dtype));
            m.insert("v", t(&[B, T, H, V], dtype));
            m.insert("q_feature_map", t(&[H, K, F], DType::F32));
            m.insert("k_feature_map", t(&[H, K, F], DType::F32));
            m.insert("initial_state.kv", t(&[B, H, 2 * F, V], DType::F32));
            m.insert("initial_state.z", positive(t(&[B, H, 2 * F], DType::F32)));
        }
        Op::LinearAttnStep | Op::SimpleGlaStep | Op::GlaStepNormalized => {
            m.insert("q", t(&step_qk, dtype));
            m.insert("k", t(&step_qk, dtype));
            m.insert("v", t(&step_v, dtype));
            m.insert("initial_state.kv", t(&[N, H, K, V], DType::F32));
            match op {
                Op::SimpleGlaStep => {
                    m.insert("g", log_gate(t(&[N, H], DType::F32), dtype));
                }
                Op::GlaStepNormalized => {
                    m.insert("g", log_gate(t(&step_qk, DType::F32), dtype));
                    m.insert("initial_state.z", positive(t(&[N, H, K], DType::F32)));
                }
                _ => {}
            }
        }
        Op::WindowLinearMapped => {
            m.insert("q", t(&prefill, dtype));
            m.insert("k", t(&prefill, dtype));
            m.insert("v", t(&[B, T, H, V], dtype));
            m.insert("q_feature_map", t(&[H, K, F], DType::F32));
            m.insert("k_feature_map", t(&[H, K, F], DType::F32));
            m.insert("window_factor", t(&[H], DType::F32));
        }
        Op::WindowLinearStep => {
            m.insert("q", t(&step_qk, dtype));
            m.insert("k", t(&step_qk, dtype));
            m.insert("v", t(&step_v, dtype));
            m.insert("window_factor", t(&[H], DType::F32));
            m.insert("state.linear.kv", t(&[N, H, K, V], DType::F32));
            m.insert("state.linear.z", positive(t(&[N, H, K], DType::F32)));
            m.insert("state.keys", t(&[N, H, W, K], DType::F32));
            m.insert("state.values", t(&[N, H, W, V], DType::F32));
        }
        Op::Hedgehog => {
            m.insert("x", t(&prefill, dtype));
            m.insert("weight", t(&[H, K, F], DType::F32));
        }
    }
    m
}

/// Calls `op` on `inputs` (all on one device), keeping only success or the error.
fn call(op: Op, inputs: &Inputs) -> Result<()> {
    let get = |name: &str| &inputs[name];
    let (q, k, v) = (|| get("q"), || get("k"), || get("v"));
    let o = AttnOptions::default();
    let state =
        |z: bool| LinearState { kv: get("initial_state.kv").clone(), z: z.then(|| get("initial_state.z").clone()) };
    match op {
        Op::LinearAttn => linear_attn(q(), k(), v(), &o).map(drop),
        Op::LinearAttnMappedFromState => {
            let s = state(true);
            let opts = AttnOptions {
                normalize: true,
                initial_state: Some(&s),
                q_feature_map: Some(get("q_feature_map")),
                k_feature_map: Some(get("k_feature_map")),
                ..o
            };
            linear_attn(q(), k(), v(), &opts).map(drop)
        }
        Op::SimpleGlaPerToken | Op::SimpleGlaPerHead => simple_gla(q(), k(), v(), get("g"), &o).map(drop),
        Op::GlaFromState => {
            let s = state(true);
            gla(q(), k(), v(), get("g"), &AttnOptions { normalize: true, initial_state: Some(&s), ..o }).map(drop)
        }
        Op::LinearAttnStep => linear_attn_step(q(), k(), v(), Some(&state(false)), &o).map(drop),
        Op::SimpleGlaStep => simple_gla_step(q(), k(), v(), get("g"), Some(&state(false)), &o).map(drop),
        Op::GlaStepNormalized => {
            gla_step(q(), k(), v(), get("g"), Some(&state(true)), &AttnOptions { normalize: true, ..o }).map(drop)
        }
        Op::WindowLinearMapped => {
            let opts = WindowOptions {
                window: W,
                q_feature_map: Some(get("q_feature_map")),
                k_feature_map: Some(get("k_feature_map")),
                ..WindowOptions::default()
            };
            window_linear(q(), k(), v(), get("window_factor"), &opts).map(drop)
        }
        Op::WindowLinearStep => {
            let device = q().device();
            let state = WindowState {
                linear: LinearState { kv: get("state.linear.kv").clone(), z: Some(get("state.linear.z").clone()) },
                keys: get("state.keys").clone(),
                values: get("state.values").clone(),
                tokens_seen: Tensor::from_vec(vec![SEEN; N], [N])?.to_device(&device)?,
            };
            let opts = WindowOptions { window: W, ..WindowOptions::default() };
            window_linear_step(q(), k(), v(), get("window_factor"), &state, &opts).map(drop)
        }
        Op::Hedgehog => hedgehog_feature_map(get("x"), get("weight")).map(drop),
    }
}

fn on_device(inputs: &Inputs, device: &Device) -> Inputs {
    inputs.iter().map(|(&name, t)| (name, t.to_device(device).unwrap())).collect()
}

/// `name` with NaN at element 0, +Inf in the middle or -Inf at the end (`spot` 0, 1, 2).
fn poisoned(inputs: &Inputs, name: &'static str, spot: usize) -> (Inputs, usize, f32) {
    let t = &inputs[name];
    let n = t.numel();
    let (index, value) = [(0, f32::NAN), (n / 2 + 1, f32::INFINITY), (n - 1, f32::NEG_INFINITY)][spot];
    let mut values = t.to_f32_vec().unwrap();
    values[index] = value;
    let mut out = inputs.clone();
    out.insert(name, Tensor::from_f32(&values, t.dtype(), t.dims().to_vec()).unwrap());
    (out, index, value)
}

/// The parts of an `Error::NonFinite`; panics on any other outcome.
fn non_finite(what: &str, result: Result<()>) -> (&'static str, String, usize, f32) {
    match result {
        Err(Error::NonFinite { op, tensor, index, value }) => (op, tensor, index, value),
        Err(other) => panic!("{what}: expected Error::NonFinite, got {other}"),
        Ok(()) => panic!("{what}: expected Error::NonFinite, got Ok"),
    }
}

fn same_value(a: f32, b: f32) -> bool {
    if a.is_nan() { b.is_nan() } else { a == b }
}

/// Every op and dtype on `device`: clean inputs pass; one poisoned tensor gives the CPU's
/// error, which names that tensor, index and value; all tensors poisoned give the CPU's
/// error too.
fn check_device(device: &Device) {
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for (seed, op) in OPS.into_iter().enumerate() {
            let clean = inputs(op, dtype, seed as u64);
            if let Err(e) = call(op, &on_device(&clean, device)) {
                panic!("{op:?} {dtype} on {device}: clean inputs failed: {e}");
            }
            for &name in clean.keys() {
                for spot in 0..3 {
                    let (bad, index, value) = poisoned(&clean, name, spot);
                    let what = format!("{op:?} {dtype}, `{name}`[{index}] = {value}");
                    let cpu = non_finite(&format!("{what} on cpu"), call(op, &bad));
                    let gpu = non_finite(&format!("{what} on {device}"), call(op, &on_device(&bad, device)));
                    assert_eq!((cpu.1.as_str(), cpu.2), (name, index), "{what}: the CPU error names another value");
                    assert!(same_value(cpu.3, value), "{what}: the CPU error reports {}", cpu.3);
                    assert_eq!((gpu.0, &gpu.1, gpu.2), (cpu.0, &cpu.1, cpu.2), "{what}: {device} vs cpu");
                    assert!(same_value(gpu.3, cpu.3), "{what}: value {} on {device}, {} on cpu", gpu.3, cpu.3);
                }
            }
            let mut all_bad = clean.clone();
            for (spot, &name) in clean.keys().enumerate() {
                all_bad = poisoned(&all_bad, name, spot % 3).0;
            }
            let what = format!("{op:?} {dtype}, every tensor poisoned");
            let cpu = non_finite(&format!("{what} on cpu"), call(op, &all_bad));
            let gpu = non_finite(&format!("{what} on {device}"), call(op, &on_device(&all_bad, device)));
            assert_eq!((gpu.0, &gpu.1, gpu.2), (cpu.0, &cpu.1, cpu.2), "{what}: {device} vs cpu");
        }
    }
}

#[test]
fn wgpu_reports_non_finite_inputs_like_the_cpu() {
    let device = match Device::wgpu() {
        Ok(d) => d,
        Err(e) => {
            assert!(!wgpu_required(), "LINATTN_REQUIRE_WGPU or LINATTN_REQUIRE_GPU is set but {e}");
            report_skip(&format!("non-finite WebGPU attention test: {e}"));
            return;
        }
    };
    check_device(&device);
}

#[test]
fn cuda_reports_non_finite_inputs_like_the_cpu() {
    let device = match Device::cuda(0) {
        Ok(d) => d,
        Err(e) => {
            assert!(!cuda_required(), "LINATTN_REQUIRE_CUDA or LINATTN_REQUIRE_GPU is set but {e}");
            report_skip(&format!("non-finite CUDA attention test: {e}"));
            return;
        }
    };
    check_device(&device);
}
