//! Conformance cases of quantized matmul `y = x W^T`, W kept quantized on the device:
//! - `ggml_matmul_*`: a ggml block tensor (Q8_0, Q4_0, Q4_K, Q6_K) through `ggml_matmul`;
//! - `quant_matmul_*`: every `QuantFormat` (also NF4, FP4, LLM.int8, FP8) through
//!   `QuantizedWeight` (uploaded once with `to_device` on GPUs);
//! - `quant_matmul_int8_mixed`, `quant_matmul_int8_bad_input`: LLM.int8's outlier
//!   decomposition against the CPU scheme ([`crate::quant_int8`]).
//!
//! x is f32 or bf16, one row (decode) or several (prefill). The oracle is an f64 matmul on
//! the CPU against the dequantized weight (`linattn_quant::cpu::reference_matmul`), so the
//! only error left is f32 accumulation order and the rounding of x and y. One exception:
//! LLM.int8 quantizes the non-outlier activations to int8 on every device (the
//! bitsandbytes algorithm, on the CPU and the GPUs alike) and so differs from the exact
//! product by ~4e-3 relative; its tolerance here (1e-2) says so, and the tight
//! device-vs-CPU comparison of that scheme is `quant_matmul_int8_mixed`.

use linattn_quant::cpu::reference_matmul;
use linattn_quant::ggml::{dequantize_tensor, quantize_tensor};
use linattn_quant::weight::ggml_matmul;
use linattn_quant::{QuantFormat, QuantizedWeight};
use linattn_tensor::{DType, Device, Tensor};

use crate::harness::{Case, CaseOutput, TestRng, Tolerance, round_to};
use crate::tensor_ops::upload;

fn tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::new(1e-5, 1e-4, 1e-4),
        _ => Tolerance::for_dtype(dtype),
    }
}

/// Every quantized-matmul case.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    let formats = [DType::Q8_0, DType::Q4_0, DType::Q4K, DType::Q6K];
    for format in formats {
        for (rows, cols, m) in [(7usize, 256usize, 1usize), (64, 4096, 1), (33, 512, 5), (130, 1024, 16)] {
            for dtype in [DType::F32, DType::BF16] {
                let label = format!("W[{rows}, {cols}] x[{m}, {cols}]");
                out.push(Case::new(
                    format!("ggml_matmul_{}", format.name()),
                    dtype,
                    label,
                    tolerance(dtype),
                    move |dev| {
                        let mut rng = TestRng::new(rows as u64 * 7 + cols as u64);
                        let w = Tensor::from_f32(&rng.vec(rows * cols, -1.0, 1.0), DType::F32, [rows, cols])?;
                        let wq = quantize_tensor(&w, format)?;
                        let w_deq = dequantize_tensor(&wq)?.to_f32_vec()?;
                        let x = round_to(&rng.vec(m * cols, -1.0, 1.0), dtype);
                        let got = ggml_matmul(&upload(&x, dtype, &[m, cols], dev)?, &wq.to_device(dev)?)?;
                        let want = reference_matmul(&w_deq, rows, cols, &x, m);
                        Ok(CaseOutput { got: got.to_f32_vec()?, want })
                    },
                ));
            }
        }
    }
    for format in QuantFormat::ALL {
        for (rows, cols, m) in [(7usize, 256usize, 1usize), (33, 512, 5)] {
            for dtype in [DType::F32, DType::BF16] {
                let mut case = weight_case(format, rows, cols, m, dtype);
                if format == QuantFormat::Int8 {
                    case.tolerance = Tolerance::new(1e-2, 5e-2, 5e-2);
                }
                out.push(case);
            }
        }
    }
    out.extend(crate::quant_int8::cases());
    out
}

fn weight_case(format: QuantFormat, rows: usize, cols: usize, m: usize, dtype: DType) -> Case {
    let label = format!("W[{rows}, {cols}] x[{m}, {cols}]");
    let base_tol = tolerance(dtype);
    Case::new(format!("quant_matmul_{}", format.name()), dtype, label, base_tol, move |dev| {
        let mut rng = TestRng::new(rows as u64 * 11 + cols as u64 + m as u64);
        let weight = QuantizedWeight::quantize(&rng.vec(rows * cols, -1.0, 1.0), [rows, cols], format)?;
        let w_deq = weight.dequantize_f32()?;
        let x = round_to(&rng.vec(m * cols, -1.0, 1.0), dtype);
        let xt = upload(&x, dtype, &[m, cols], dev)?;
        let got = match dev {
            Device::Cpu => weight.matmul(&xt)?,
            gpu => weight.to_device(gpu)?.matmul(&xt)?,
        };
        Ok(CaseOutput { got: got.to_f32_vec()?, want: reference_matmul(&w_deq, rows, cols, &x, m) })
    })
}
