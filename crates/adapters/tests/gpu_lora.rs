//! GPU fused LoRA forward against the CPU reference (`lora_forward_reference`, f64).
//!
//! WebGPU runs for real (Mesa lavapipe on CPU-only machines). A machine without a wgpu
//! adapter prints why the WebGPU tests were skipped; `LINATTN_REQUIRE_WGPU=1` or
//! `LINATTN_REQUIRE_GPU=1` make that a failure. CUDA cannot run here: its test checks
//! that the embedded PTX declares every entry point the Rust side launches.
//! Tolerances: relative RMS error 1e-5 (f32) and 5e-3 (f16, bf16) over the whole output.

use std::io::Write;

use linattn_adapters::gpu::{self, GpuLoraWeights, LoraKernel};
use linattn_adapters::{BaseLinear, DenseLinear, LoraModule, ModuleKind, lora_forward, lora_forward_reference};
use linattn_tensor::wgpu::WgpuDevice;
use linattn_tensor::{DType, Device, Error, Tensor};

fn wgpu_device(test: &str) -> Option<Device> {
    match WgpuDevice::open_default() {
        Ok(d) => Some(Device::Wgpu(d)),
        Err(e) => {
            let required = linattn_tensor::wgpu_required();
            assert!(!required, "{test}: WebGPU is required (LINATTN_REQUIRE_WGPU / LINATTN_REQUIRE_GPU) but: {e}");
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: no WebGPU device: {e}");
            None
        }
    }
}

/// Deterministic values in `[-scale, scale)` (SplitMix64).
fn values(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn rel_rms(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut d, mut r) = (0f64, 0f64);
    for (&g, &w) in got.iter().zip(want) {
        assert!(g.is_finite(), "non-finite output {g}");
        d += (g as f64 - w as f64).powi(2);
        r += (w as f64).powi(2);
    }
    if r > 0.0 { (d / r).sqrt() } else { d.sqrt() }
}

fn tolerance(dtype: DType) -> f64 {
    if dtype == DType::F32 { 1e-5 } else { 5e-3 }
}

struct Setup {
    base_cpu: DenseLinear,
    module: LoraModule,
    x_cpu: Tensor,
}

fn setup(rows: usize, n_in: usize, n_out: usize, rank: usize, dtype: DType, with_bias: bool, seed: u64) -> Setup {
    let w = Tensor::from_f32(&values(n_out * n_in, seed, 0.5), dtype, [n_out, n_in]).unwrap();
    let mut base = DenseLinear::new(w).unwrap();
    if with_bias {
        base = base.with_bias(Tensor::from_f32(&values(n_out, seed + 1, 1.0), dtype, [n_out]).unwrap()).unwrap();
    }
    let a = Tensor::from_slice(&values(rank * n_in, seed + 2, 0.5), [rank, n_in]).unwrap();
    let b = Tensor::from_slice(&values(n_out * rank, seed + 3, 0.5), [n_out, rank]).unwrap();
    let module =
        LoraModule::new("layers.0.q_proj", ModuleKind::Linear, &a, &b, None, 16.0 / rank as f32, false).unwrap();
    let x_cpu = Tensor::from_f32(&values(rows * n_in, seed + 4, 1.0), dtype, [rows, n_in]).unwrap();
    Setup { base_cpu: base, module, x_cpu }
}

fn gpu_base(s: &Setup, device: &Device) -> (Tensor, Option<Tensor>) {
    let w = s.base_cpu.weight().to_device(device).unwrap();
    let bias = s.base_cpu.bias().map(|b| b.to_device(device).unwrap());
    (w, bias)
}

/// Runs one shape through both stage-2 kernels (dense API) and through `lora_forward`.
fn check_shape(device: &Device, rows: usize, n_in: usize, n_out: usize, rank: usize, dtype: DType, bias: bool) {
    let seed = (rows * 1_000_003 + n_in * 1009 + n_out * 31 + rank) as u64;
    let s = setup(rows, n_in, n_out, rank, dtype, bias, seed);
    let want = lora_forward_reference(&s.base_cpu, &s.module, &s.x_cpu).unwrap().to_f32_vec().unwrap();
    let x = s.x_cpu.to_device(device).unwrap();
    let (w, b) = gpu_base(&s, device);
    let weights = GpuLoraWeights::upload(&s.module, device).unwrap();
    let label = format!("rows {rows} in {n_in} out {n_out} r {rank} {dtype} bias {bias}");
    for kernel in [LoraKernel::Matvec, LoraKernel::Tiled] {
        let y = gpu::lora_forward_dense_with(kernel, &w, b.as_ref(), &weights, &x).unwrap();
        assert_eq!(y.dims(), [rows, n_out], "{label}");
        assert_eq!(y.dtype(), dtype, "{label}");
        let err = rel_rms(&y.to_f32_vec().unwrap(), &want);
        assert!(err <= tolerance(dtype), "{label} {kernel:?}: rel RMS {err:.3e} > {:.1e}", tolerance(dtype));
    }
    let base_gpu = match b {
        Some(b) => DenseLinear::new(w).unwrap().with_bias(b).unwrap(),
        None => DenseLinear::new(w).unwrap(),
    };
    let y = lora_forward(&base_gpu, &s.module, &x).unwrap();
    assert!(matches!(y.device(), Device::Wgpu(_)), "{label}: output left the device");
    let err = rel_rms(&y.to_f32_vec().unwrap(), &want);
    assert!(err <= tolerance(dtype), "{label} lora_forward: rel RMS {err:.3e}");
}

#[test]
fn wgpu_fused_forward_matches_reference_over_shapes() {
    let Some(device) = wgpu_device("wgpu_fused_forward_matches_reference_over_shapes") else { return };
    let features = [(1, 33), (33, 1), (100, 257), (257, 100), (33, 33), (257, 257)];
    let ranks = [1, 8, 16, 64];
    for dtype in [DType::F32, DType::F16, DType::BF16] {
        for (ri, rows) in [1usize, 7, 64, 130].into_iter().enumerate() {
            for (fi, &(n_in, n_out)) in features.iter().enumerate() {
                let rank = ranks[(ri + fi) % ranks.len()];
                check_shape(&device, rows, n_in, n_out, rank, dtype, (ri + fi) % 2 == 0);
            }
        }
    }
}

#[test]
fn wgpu_every_rank_and_single_feature() {
    let Some(device) = wgpu_device("wgpu_every_rank_and_single_feature") else { return };
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        for rank in [1, 8, 16, 64] {
            check_shape(&device, 7, 100, 33, rank, dtype, true);
        }
        check_shape(&device, 130, 1, 1, 8, dtype, false);
        check_shape(&device, 1, 1, 257, 64, dtype, true);
    }
}

#[test]
fn wgpu_leading_dims_and_base_conversions() {
    let Some(device) = wgpu_device("wgpu_leading_dims_and_base_conversions") else { return };
    // x [2, 3, in] bf16 over an f32 CPU base: lora_forward moves and converts the base.
    let s = setup(6, 40, 24, 8, DType::F32, true, 77);
    let x_cpu = s.x_cpu.to_dtype(DType::BF16).unwrap().reshape([2, 3, 40]).unwrap();
    let want = lora_forward_reference(&s.base_cpu, &s.module, &x_cpu).unwrap();
    let y = lora_forward(&s.base_cpu, &s.module, &x_cpu.to_device(&device).unwrap()).unwrap();
    assert_eq!(y.dims(), [2, 3, 24]);
    assert_eq!(y.dtype(), DType::BF16);
    let err = rel_rms(&y.to_f32_vec().unwrap(), &want.to_f32_vec().unwrap());
    assert!(err <= 5e-3, "rel RMS {err:.3e}");
    // Zero rows: an empty output, no launch.
    let empty = Tensor::from_f32(&[], DType::F32, [0, 40]).unwrap().to_device(&device).unwrap();
    let y = lora_forward(&s.base_cpu, &s.module, &empty).unwrap();
    assert_eq!(y.dims(), [0, 24]);
}

#[test]
fn wgpu_dora_runs_and_mismatched_operands_are_rejected() {
    let Some(device) = wgpu_device("wgpu_dora_runs_and_mismatched_operands_are_rejected") else { return };
    let s = setup(3, 16, 12, 4, DType::F32, false, 5);
    let x = s.x_cpu.to_device(&device).unwrap();
    let m = Tensor::from_slice(&values(12, 9, 1.0).iter().map(|v| v.abs() + 0.5).collect::<Vec<_>>(), [12]).unwrap();
    let dora = LoraModule::new("d", ModuleKind::Linear, s.module.a(), s.module.b(), Some(&m), 2.0, false).unwrap();
    // DoRA runs on the GPU now (tests/gpu_dora_mixed.rs); only the dense API refuses it.
    let want = lora_forward_reference(&s.base_cpu, &dora, &s.x_cpu).unwrap().to_f32_vec().unwrap();
    let got = lora_forward(&s.base_cpu, &dora, &x).unwrap().to_f32_vec().unwrap();
    assert!(rel_rms(&got, &want) <= 1e-5);
    let err = GpuLoraWeights::upload(&dora, &device).unwrap_err();
    assert!(matches!(err, Error::NotImplementedOnDevice { .. }), "{err}");

    let weights = GpuLoraWeights::upload(&s.module, &device).unwrap();
    assert_eq!((weights.rank(), weights.in_features(), weights.out_features()), (4, 16, 12));
    let w_gpu = s.base_cpu.weight().to_device(&device).unwrap();
    // Weight on the CPU while x is on wgpu.
    let err = gpu::lora_forward_dense(s.base_cpu.weight(), None, &weights, &x).unwrap_err().to_string();
    assert!(err.contains("weight on cpu"), "{err}");
    // Weight dtype differs from x.
    let w_bf16 = w_gpu.to_dtype(DType::BF16).unwrap();
    let err = gpu::lora_forward_dense(&w_bf16, None, &weights, &x).unwrap_err().to_string();
    assert!(err.contains("bf16") && err.contains("f32"), "{err}");
    // Wrong input width names both shapes.
    let x_bad = Tensor::from_f32(&values(3 * 15, 1, 1.0), DType::F32, [3, 15]).unwrap().to_device(&device).unwrap();
    let err = gpu::lora_forward_dense(&w_gpu, None, &weights, &x_bad).unwrap_err().to_string();
    assert!(err.contains("[3, 15]") && err.contains("[12, 16]"), "{err}");
    // Bias of the wrong length.
    let bias = Tensor::from_f32(&[0.0; 5], DType::F32, [5]).unwrap().to_device(&device).unwrap();
    let err = gpu::lora_forward_dense(&w_gpu, Some(&bias), &weights, &x).unwrap_err().to_string();
    assert!(err.contains("bias") && err.contains("[5]"), "{err}");
    // CPU tensors are not for the GPU entry point.
    assert!(GpuLoraWeights::upload(&s.module, &Device::Cpu).is_err());
}

#[test]
fn cuda_ptx_declares_every_launched_entry() {
    let ptx = &gpu::LORA_FWD_PTX;
    assert!(ptx.ptx.contains(".target sm_80"), "{} is not compute_80 PTX", ptx.name);
    let entries = gpu::cuda_launched_entries();
    assert_eq!(entries.len(), 9);
    for entry in entries {
        assert!(ptx.has_entry(&entry), "{} lacks .entry {entry}; has {:?}", ptx.name, ptx.entry_names());
    }
}

#[test]
fn wgsl_modules_name_their_entry_points() {
    assert!(gpu::LORA_XA_WGSL.source.contains("fn lora_xa("));
    for entry in ["fn lora_fused_matvec(", "fn lora_fused_tiled("] {
        assert!(gpu::LORA_FUSED_WGSL.source.contains(entry), "{entry}");
    }
}

#[test]
fn base_linear_output_is_unchanged_by_a_zero_b() {
    // peft initializes B to zero: the fused forward must equal the base alone.
    let Some(device) = wgpu_device("base_linear_output_is_unchanged_by_a_zero_b") else { return };
    let s = setup(5, 30, 20, 8, DType::F32, true, 11);
    let zero_b = Tensor::from_slice(&[0f32; 20 * 8], [20, 8]).unwrap();
    let module = LoraModule::new("z", ModuleKind::Linear, s.module.a(), &zero_b, None, 2.0, false).unwrap();
    let x = s.x_cpu.to_device(&device).unwrap();
    let y = lora_forward(&s.base_cpu, &module, &x).unwrap().to_f32_vec().unwrap();
    let base = s.base_cpu.forward(&s.x_cpu).unwrap().to_f32_vec().unwrap();
    assert!(rel_rms(&y, &base) <= 1e-6);
}
