//! Conformance cases of quantized matmul: `y = x W^T` with W in a ggml block format
//! (Q8_0, Q4_0, Q4_K, Q6_K) kept quantized on the device, x in f32/f16/bf16, for decode
//! (one row) and prefill (several rows). The oracle is an f64 matmul on the CPU against
//! the dequantized weight (`linattn_quant::cpu::reference_matmul`), so the only error left
//! is f32 accumulation order and the rounding of x and y to their dtype.

use linattn_quant::cpu::reference_matmul;
use linattn_quant::ggml::{dequantize_tensor, quantize_tensor};
use linattn_quant::weight::ggml_matmul;
use linattn_tensor::{DType, Tensor};

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
    out
}
