//! WebGPU (lavapipe here) DoRA, per-row adapter batches and the device-weight caches,
//! against the CPU path. CUDA cannot run here: the PTX-contents test checks that
//! `lora_apply.ptx` declares every entry point the Rust side launches.
//! Tolerance: max abs error relative to max |y|: f32 1e-5, f16 3e-3, bf16 2e-2 (as the CPU
//! tests: the base output is rounded before the update is added).

mod common;

use common::{assert_close, random};
use linattn_adapters::config::LoraConfig;
use linattn_adapters::{
    AdapterSet, BaseLinear, DenseLinear, LoraAdapter, LoraModule, ModuleKind, gpu, lora_forward, lora_forward_reference,
};
use linattn_tensor::wgpu::WgpuDevice;
use linattn_tensor::{DType, Device, Tensor};

fn wgpu_device(test: &str) -> Option<Device> {
    match WgpuDevice::open_default() {
        Ok(d) => Some(Device::Wgpu(d)),
        Err(e) => {
            assert!(!linattn_tensor::wgpu_required(), "{test}: WebGPU required but: {e}");
            linattn_tensor::report_skip(&format!("{test}: no WebGPU device: {e}"));
            None
        }
    }
}

fn module(path: &str, n_out: usize, n_in: usize, r: usize, seed: u64, dora: bool) -> LoraModule {
    let a = random(&[r, n_in], seed, 0.3);
    let b = random(&[n_out, r], seed + 1, 0.3);
    let m = dora.then(|| {
        let v = random(&[n_out], seed + 2, 0.3).to_f32_vec().unwrap();
        Tensor::from_vec(v.iter().map(|x| 1.0 + x.abs()).collect::<Vec<f32>>(), [n_out]).unwrap()
    });
    LoraModule::new(path, ModuleKind::Linear, &a, &b, m.as_ref(), 1.7, false).unwrap()
}

fn base(n_out: usize, n_in: usize, bias: bool, seed: u64) -> DenseLinear {
    let b = DenseLinear::new(random(&[n_out, n_in], seed, 0.5)).unwrap();
    if bias { b.with_bias(random(&[n_out], seed + 1, 1.0)).unwrap() } else { b }
}

/// As the CPU path's tests (docs/adapters.md): the base output is rounded to the dtype
/// before the update is added, so 16-bit results see two roundings.
fn tol(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 3e-3,
        _ => 2e-2,
    }
}

#[test]
fn wgpu_dora_matches_cpu_with_and_without_bias() {
    let Some(device) = wgpu_device("wgpu_dora_matches_cpu_with_and_without_bias") else { return };
    for (n_in, n_out, r) in [(33, 17, 1), (64, 40, 8), (100, 257, 16)] {
        for bias in [false, true] {
            let base_cpu = base(n_out, n_in, bias, 3);
            let m = module("d", n_out, n_in, r, 5, true);
            for (rows, dtype) in [(1, DType::F32), (13, DType::F32), (13, DType::F16), (70, DType::BF16)] {
                let x = random(&[rows, n_in], 9, 1.0).to_dtype(dtype).unwrap();
                let want = lora_forward_reference(&base_cpu, &m, &x).unwrap().to_f32_vec().unwrap();
                // Base on the CPU (moved per call) and base already on the device.
                let base_gpu = {
                    let w = base_cpu.weight().to_device(&device).unwrap().to_dtype(dtype).unwrap();
                    let b = DenseLinear::new(w).unwrap();
                    match base_cpu.bias() {
                        Some(bb) => b.with_bias(bb.to_device(&device).unwrap().to_dtype(dtype).unwrap()).unwrap(),
                        None => b,
                    }
                };
                for (which, b) in [("cpu base", &base_cpu), ("gpu base", &base_gpu)] {
                    let y = lora_forward(b, &m, &x.to_device(&device).unwrap()).unwrap();
                    assert!(matches!(y.device(), Device::Wgpu(_)));
                    assert_eq!(y.dtype(), dtype);
                    let label = format!("[{n_in}->{n_out}] r {r} bias {bias} rows {rows} {dtype} {which}");
                    assert_close(&label, &y.to_f32_vec().unwrap(), &want, tol(dtype));
                }
            }
        }
    }
}

#[test]
fn wgpu_repeated_forwards_upload_weights_once() {
    let Some(device) = wgpu_device("wgpu_repeated_forwards_upload_weights_once") else { return };
    let base_cpu = base(24, 40, true, 1);
    for dora in [false, true] {
        let m = module("c", 24, 40, 8, 2, dora);
        let x = random(&[5, 40], 3, 1.0).to_device(&device).unwrap();
        let first = lora_forward(&base_cpu, &m, &x).unwrap().to_f32_vec().unwrap();
        assert_eq!(m.gpu_uploads(), 1);
        let clone = m.clone();
        for _ in 0..3 {
            assert_eq!(lora_forward(&base_cpu, &clone, &x).unwrap().to_f32_vec().unwrap(), first);
        }
        assert_eq!(m.gpu_uploads(), 1, "dora {dora}: repeated forwards re-uploaded");
        m.clear_gpu_cache();
        assert_eq!(lora_forward(&base_cpu, &m, &x).unwrap().to_f32_vec().unwrap(), first);
        assert_eq!(m.gpu_uploads(), 2);
        // A new scaling is a new module state: its cache starts empty.
        let rescaled = m.clone().with_scaling(0.5);
        let _ = lora_forward(&base_cpu, &rescaled, &x).unwrap();
        assert_eq!(rescaled.gpu_uploads(), 1);
    }
    let lora = module("w", 24, 40, 8, 2, false);
    let w1 = lora.gpu_weights(&device).unwrap();
    let w2 = lora.gpu_weights(&device).unwrap();
    assert_eq!((w1.rank(), w2.rank(), lora.gpu_uploads()), (8, 8, 1));
}

fn adapter(modules: Vec<LoraModule>) -> LoraAdapter {
    let mut config = LoraConfig::new(4, 4.0, Vec::new());
    config.use_dora = modules.iter().any(|m| m.magnitude().is_some());
    LoraAdapter {
        config,
        modules: modules.into_iter().map(|m| (m.path().to_string(), m)).collect(),
        saved_modules: Default::default(),
        file_dtype: DType::F32,
    }
}

#[test]
fn wgpu_forward_mixed_matches_cpu() {
    let Some(device) = wgpu_device("wgpu_forward_mixed_matches_cpu") else { return };
    let (n_in, n_out) = (48, 30);
    let mut set = AdapterSet::new();
    set.insert("lora8", adapter(vec![module("p", n_out, n_in, 8, 10, false)])).unwrap();
    set.insert("dora3", adapter(vec![module("p", n_out, n_in, 3, 20, true)])).unwrap();
    set.insert("other", adapter(vec![module("q", n_out, n_in, 4, 30, false)])).unwrap();
    set.insert("lora16", adapter(vec![module("p", n_out, n_in, 16, 40, false)])).unwrap();
    for bias in [false, true] {
        let base_cpu = base(n_out, n_in, bias, 50);
        for (rows, dtype) in [(1, DType::F32), (23, DType::F32), (23, DType::BF16)] {
            let choice: Vec<Option<usize>> = (0..rows).map(|i| if i % 5 == 4 { None } else { Some(i % 4) }).collect();
            let x = random(&[rows, n_in], 60 + rows as u64, 1.0).to_dtype(dtype).unwrap();
            let want = set.forward_mixed("p", &base_cpu, &x, &choice).unwrap().to_f32_vec().unwrap();
            let y = set.forward_mixed("p", &base_cpu, &x.to_device(&device).unwrap(), &choice).unwrap();
            assert!(matches!(y.device(), Device::Wgpu(_)));
            assert_eq!((y.dims(), y.dtype()), (&[rows, n_out][..], dtype));
            let label = format!("bias {bias} rows {rows} {dtype}");
            assert_close(&label, &y.to_f32_vec().unwrap(), &want, tol(dtype));
        }
        // Reset the cache between bases: DoRA factors depend on the base.
        set.insert(&format!("reset{bias}"), adapter(vec![module("z", n_out, n_in, 2, 1, false)])).unwrap();
    }
    // One pack per (path, device): repeated calls do not upload the adapters again.
    let base_cpu = base(n_out, n_in, true, 50);
    let x = random(&[4, n_in], 7, 1.0).to_device(&device).unwrap();
    let before = set.gpu_uploads();
    for _ in 0..3 {
        set.forward_mixed("p", &base_cpu, &x, &[Some(0), Some(1), None, Some(3)]).unwrap();
    }
    assert_eq!(set.gpu_uploads(), before + 1);
    // Out-of-range indices are rejected before any launch.
    let err = set.forward_mixed("p", &base_cpu, &x, &[Some(9), None, None, None]).unwrap_err().to_string();
    assert!(err.contains("out of range"), "{err}");
}

#[test]
fn cuda_apply_ptx_declares_every_launched_entry() {
    let ptx = &gpu::LORA_APPLY_PTX;
    assert!(ptx.ptx.contains(".target sm_80"), "{} is not compute_80 PTX", ptx.name);
    let entries = gpu::cuda_apply_entries();
    assert_eq!(entries.len(), 6);
    for entry in entries {
        assert!(ptx.has_entry(&entry), "{} lacks .entry {entry}; has {:?}", ptx.name, ptx.entry_names());
    }
    assert!(gpu::LORA_MIXED_XA_WGSL.source.contains("fn lora_mixed_xa("));
    assert!(gpu::LORA_APPLY_WGSL.source.contains("fn lora_apply("));
}
