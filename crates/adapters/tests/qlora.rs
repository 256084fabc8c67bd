//! QLoRA: LoRA / DoRA over quantized bases (`linattn_quant::QuantizedWeight`) equals the
//! same adapter over the dequantized dense base, on the CPU for every 4/8-bit format and
//! on WebGPU (lavapipe here) for the ggml formats the quant crate runs there (Q8_0,
//! Q4_0, Q4_K). Merging into a quantized base dequantizes and merges in f32.
//! Tolerances: max abs error relative to max |y|, 1e-5 (f32 CPU: same products, other
//! summation order), 1e-4 on WebGPU.

mod common;

use common::{assert_close, random};
use linattn_adapters::{
    BaseLinear, DenseLinear, LoraModule, ModuleKind, QuantizedLinear, lora_forward, lora_forward_reference,
    merge_quantized, merge_weight,
};
use linattn_quant::{QuantFormat, QuantizedWeight};
use linattn_tensor::wgpu::WgpuDevice;
use linattn_tensor::{DType, Device, Tensor};

const N_OUT: usize = 24;
const N_IN: usize = 256;

fn module(rank: usize, seed: u64, dora: bool) -> LoraModule {
    let a = random(&[rank, N_IN], seed, 0.3);
    let b = random(&[N_OUT, rank], seed + 1, 0.3);
    let m = dora.then(|| {
        let v = random(&[N_OUT], seed + 2, 0.3).to_f32_vec().unwrap();
        Tensor::from_vec(v.iter().map(|x| 1.0 + x.abs()).collect::<Vec<f32>>(), [N_OUT]).unwrap()
    });
    LoraModule::new("q", ModuleKind::Linear, &a, &b, m.as_ref(), 1.5, false).unwrap()
}

fn quantized(format: QuantFormat, seed: u64) -> (QuantizedWeight, DenseLinear) {
    let w = random(&[N_OUT, N_IN], seed, 0.5).to_f32_vec().unwrap();
    let q = QuantizedWeight::quantize(&w, [N_OUT, N_IN], format).unwrap();
    let dense = DenseLinear::new(q.dequantize().unwrap()).unwrap();
    (q, dense)
}

#[test]
fn lora_over_quantized_base_equals_lora_over_dequantized_base() {
    for format in [QuantFormat::Q4_0, QuantFormat::Q8_0, QuantFormat::Nf4, QuantFormat::Q4K, QuantFormat::Fp4] {
        let (q, dense) = quantized(format, 3);
        assert_eq!((q.out_features(), q.in_features()), (N_OUT, N_IN));
        assert!(q.bias().is_none() && q.dense_weight().is_none());
        assert_eq!(BaseLinear::dequantized(&q).unwrap().to_f32_vec().unwrap(), dense.weight().to_f32_vec().unwrap());
        for dora in [false, true] {
            let m = module(8, 10, dora);
            for rows in [1, 5, 37] {
                let x = random(&[rows, N_IN], 20 + rows as u64, 1.0);
                let got = lora_forward(&q, &m, &x).unwrap().to_f32_vec().unwrap();
                let want = lora_forward(&dense, &m, &x).unwrap().to_f32_vec().unwrap();
                let label = format!("{format} dora {dora} rows {rows}");
                assert_close(&label, &got, &want, 1e-5);
                let reference = lora_forward_reference(&q, &m, &x).unwrap().to_f32_vec().unwrap();
                assert_close(&format!("{label} vs f64 reference"), &got, &reference, 1e-5);
            }
        }
    }
}

#[test]
fn merge_into_a_quantized_base_is_dequantize_then_merge() {
    for format in [QuantFormat::Q4_0, QuantFormat::Nf4] {
        let (q, dense) = quantized(format, 5);
        for dora in [false, true] {
            let m = module(4, 40, dora);
            let merged = merge_quantized(&q, &m).unwrap();
            assert_eq!(merged.dtype(), DType::F32);
            let want = merge_weight(dense.weight(), &m).unwrap();
            assert_eq!(merged.to_f32_vec().unwrap(), want.to_f32_vec().unwrap(), "{format} dora {dora}");
            // The merged dense layer reproduces the unmerged QLoRA forward.
            let x = random(&[3, N_IN], 41, 1.0);
            let y_merged = DenseLinear::new(merged).unwrap().forward(&x).unwrap().to_f32_vec().unwrap();
            let y = lora_forward(&q, &m, &x).unwrap().to_f32_vec().unwrap();
            assert_close(&format!("{format} merged vs unmerged"), &y_merged, &y, 1e-5);
        }
    }
    // fan_in_fan_out modules expect an [in, out] base; quantized weights are [out, in].
    let (q, _) = quantized(QuantFormat::Q8_0, 6);
    let m = module(4, 7, false);
    let t = LoraModule::new("t", ModuleKind::Linear, m.a(), m.b(), None, 1.0, true).unwrap();
    assert!(merge_quantized(&q, &t).unwrap_err().to_string().contains("fan_in_fan_out"));
}

#[test]
fn wgpu_lora_over_quantized_base_matches_cpu() {
    let device = match WgpuDevice::open_default() {
        Ok(d) => Device::Wgpu(d),
        Err(e) => {
            assert!(!linattn_tensor::wgpu_required(), "WebGPU required but: {e}");
            linattn_tensor::report_skip(&format!("wgpu_lora_over_quantized_base_matches_cpu: no WebGPU device: {e}"));
            return;
        }
    };
    for format in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4K] {
        let (q, dense) = quantized(format, 8);
        for dora in [false, true] {
            let m = module(8, 50, dora);
            for (rows, dtype) in [(1, DType::F32), (9, DType::F32), (70, DType::F32), (9, DType::F16)] {
                let x = random(&[rows, N_IN], 60 + rows as u64, 1.0).to_dtype(dtype).unwrap();
                let want = lora_forward_reference(&dense, &m, &x).unwrap().to_f32_vec().unwrap();
                let y = lora_forward(&q, &m, &x.to_device(&device).unwrap()).unwrap();
                assert!(matches!(y.device(), Device::Wgpu(_)), "output left the device");
                assert_eq!((y.dims(), y.dtype()), (&[rows, N_OUT][..], dtype));
                let tol = if dtype == DType::F32 { 1e-4 } else { 5e-3 };
                assert_close(
                    &format!("{format} dora {dora} rows {rows} {dtype}"),
                    &y.to_f32_vec().unwrap(),
                    &want,
                    tol,
                );
            }
        }
    }
}

#[test]
fn quantized_linear_uploads_once_per_device_and_matches_the_cpu() {
    for format in [QuantFormat::Q4_0, QuantFormat::Nf4, QuantFormat::Fp8E4M3] {
        let (q, _) = quantized(format, 21);
        let base = QuantizedLinear::new(q.clone());
        let x = random(&[3, N_IN], 22, 1.0);
        let want = q.matmul(&x).unwrap().to_f32_vec().unwrap();
        let got = base.forward(&x).unwrap().to_f32_vec().unwrap();
        assert_close(&format!("{format} cpu"), &got, &want, 1e-6);
        assert_eq!(base.uploaded_devices(), 0, "a CPU forward must not upload");
        let device = match WgpuDevice::open_default() {
            Ok(d) => Device::Wgpu(d),
            Err(e) => {
                assert!(!linattn_tensor::wgpu_required(), "WebGPU required but: {e}");
                linattn_tensor::report_skip(&format!("QuantizedLinear on WebGPU: {e}"));
                continue;
            }
        };
        let xg = x.to_device(&device).unwrap();
        for step in 0..3 {
            let y = base.forward(&xg).unwrap();
            assert!(matches!(y.device(), Device::Wgpu(_)), "output left the device");
            assert_close(&format!("{format} wgpu step {step}"), &y.to_f32_vec().unwrap(), &want, 1e-4);
        }
        assert_eq!(base.uploaded_devices(), 1, "{format}: three GPU forwards must share one upload");
    }
}
