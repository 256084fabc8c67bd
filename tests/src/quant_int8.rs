//! Conformance cases of LLM.int8 with the mixed-precision outlier decomposition (part of
//! the `quant` suite): the device's `QuantizedWeight::Int8` product (uploaded once with
//! `to_device` on GPUs) against the CPU scheme `Int8Weight::matmul_f32` as the oracle.
//!
//! Inputs: `W [rows, cols]` uniform in [-1, 1) quantized row-wise; `x [m, cols]` uniform
//! in [-1, 1) (rounded to x's dtype) with the special entries of [`int8_inputs`]: outliers
//! above and exactly at the threshold, a non-outlier entry just below it, a row whose only
//! non-zero entry is an outlier (`s_x = 0`), an all-zero row, and a row with
//! `s_x = 127 / 32` (k = 32 exactly) holding entries on rounding ties. m = 1, 3, 64; cols
//! 150, 301, 1027 (not multiples of 4 or of the 64-invocation workgroup); threshold 6.0
//! (the default) and 0 (pure int8); x f32 and bf16.
//!
//! Tolerances: the GPU's int8 codes and i32 sums equal the CPU's (k = 127 / s_x is
//! computed exactly on the device), so the integer part agrees to the f32 rounding of the
//! same products; only the summation order of the outlier part differs, at most
//! `(outlier columns + 1) * 2^-24 * max |partial sum|`, about 2e-5 with these inputs:
//! f32 `atol 1e-4, rtol 1e-5, rel RMS 1e-5`. bf16: the oracle is the CPU result rounded to
//! bf16, and the device's f32 value, within the bound above, may round to the neighbouring
//! bf16 value: `rtol 2^-7` (one bf16 ulp) + `atol 1e-4`, rel RMS 4e-3.
//!
//! Each f32 case also fails when the device's result is within 1e-3 (10x the f32 atol) of
//! the exact f32 product with the dequantized weight everywhere: the int8 rounding of x
//! moves these outputs by 1e-2 and more, so a device that silently computed the exact
//! product (no decomposition) cannot pass. (bf16 outputs are rounded too coarsely for this
//! check.) The `quant_matmul_int8_bad_input` case checks that bad inputs are `Err`.

use linattn_quant::bnb::Int8Weight;
use linattn_quant::cpu::reference_matmul;
use linattn_quant::{QuantFormat, QuantizedWeight};
use linattn_tensor::{DType, Device, Error, Result, Tensor};

use crate::harness::{Case, CaseOutput, TestRng, Tolerance, round_to};
use crate::tensor_ops::upload;

/// (rows, cols, m) of the cases.
const SHAPES: [(usize, usize, usize); 3] = [(37, 150, 1), (29, 301, 3), (19, 1027, 64)];

/// Every LLM.int8 decomposition case.
pub fn cases() -> Vec<Case> {
    let mut out = Vec::new();
    for (rows, cols, m) in SHAPES {
        for threshold in [6.0f32, 0.0] {
            for dtype in [DType::F32, DType::BF16] {
                out.push(mixed_case(rows, cols, m, threshold, dtype));
            }
        }
    }
    out.push(bad_input_case());
    out
}

fn tolerance(dtype: DType) -> Tolerance {
    match dtype {
        DType::F32 => Tolerance::new(1e-5, 1e-4, 1e-5),
        _ => Tolerance::new(4e-3, 1e-4, 1.0 / 128.0),
    }
}

/// `x [m, cols]` for the cases: uniform in [-1, 1) plus the special rows and entries of the
/// module docs (threshold 6), all exactly representable in bf16, then rounded to `dtype`.
pub fn int8_inputs(seed: u64, m: usize, cols: usize, dtype: DType) -> Vec<f32> {
    let mut x = TestRng::new(seed).vec(m * cols, -1.0, 1.0);
    let last = cols - 1;
    let mut set = |t: usize, c: usize, v: f32| x[t * cols + c] = v;
    if m >= 3 {
        for c in 0..cols {
            set(1, c, 0.0);
            set(2, c, 0.0);
        }
        set(1, last, 9.25); // the row's only non-zero entry, an outlier: s_x = 0
    }
    // Row 0: s_x = 127 / 32, so k = 32 and these x * k sit on ties: 0.5 -> 0, -1.5 -> -2,
    // 2.5 -> 2 (round half to even).
    set(0, 0, 3.96875);
    set(0, 1, 0.015625);
    set(0, 2, -0.046875);
    set(0, 3, 0.078125);
    set(0, 5, 7.5);
    let edge_row = if m >= 4 { m - 1 } else { 0 };
    set(edge_row, last - 1, -6.0); // exactly at the threshold: an outlier
    if m >= 4 {
        set(3, 9, 5.9375); // just below the threshold: part of s_x
    }
    if m >= 64 {
        set(17, 40, -12.0);
        set(40, 77, 6.5);
        set(63, 100, 20.0);
    }
    round_to(&x, dtype)
}

fn mixed_case(rows: usize, cols: usize, m: usize, threshold: f32, dtype: DType) -> Case {
    let label = format!("W[{rows}, {cols}] x[{m}, {cols}] t={threshold}");
    Case::new("quant_matmul_int8_mixed", dtype, label, tolerance(dtype), move |dev| {
        let seed = (rows * 1009 + cols * 13 + m) as u64;
        let mut w = Int8Weight::quantize(&TestRng::new(seed).vec(rows * cols, -1.0, 1.0), rows, cols)?;
        w.threshold = threshold;
        let x = int8_inputs(seed + 1, m, cols, dtype);
        let weight = QuantizedWeight::Int8(w.clone());
        let xt = upload(&x, dtype, &[m, cols], dev)?;
        let got = match dev {
            Device::Cpu => weight.matmul(&xt)?,
            gpu => weight.to_device(gpu)?.matmul(&xt)?,
        };
        if got.dims() != [m, rows] || got.dtype() != dtype {
            return Err(Error::invalid(format!(
                "output {:?} {}, expected [{m}, {rows}] {dtype}",
                got.dims(),
                got.dtype()
            )));
        }
        let got = got.to_f32_vec()?;
        let want = round_to(&w.matmul_f32(&x, m, threshold)?, dtype);
        if dtype == DType::F32 {
            let exact = reference_matmul(&w.dequantize_f32()?, rows, cols, &x, m);
            let distance = got.iter().zip(&exact).map(|(g, e)| (g - e).abs()).fold(0.0f32, f32::max);
            if distance <= 1e-3 {
                return Err(Error::invalid(format!(
                    "the result is within {distance:.2e} of the exact f32 product everywhere: \
                     the int8 quantization of x is not applied"
                )));
            }
        }
        Ok(CaseOutput { got, want })
    })
}

/// Bad inputs are `Err`, never a panic: a wrong last dim of x, a rank-0 x, an integer x,
/// and (GPUs) x on another device than the uploaded weight.
fn bad_input_case() -> Case {
    Case::new("quant_matmul_int8_bad_input", DType::F32, "W[5, 10]", Tolerance::new(0.0, 0.0, 0.0), |dev| {
        let weight = QuantizedWeight::quantize(&TestRng::new(3).vec(50, -1.0, 1.0), [5, 10], QuantFormat::Int8)?;
        let wrong_dim = upload(&[0.5; 18], DType::F32, &[2, 9], dev)?;
        let scalar = Tensor::from_f32(&[1.0], DType::F32, Vec::<usize>::new())?.to_device(dev)?;
        let integers = Tensor::from_bytes(&[1u8; 20], DType::U8, [2, 10])?.to_device(dev)?;
        let mut attempts: Vec<(&str, Result<Tensor>)> = vec![
            ("x [2, 9]", weight.matmul(&wrong_dim)),
            ("rank-0 x", weight.matmul(&scalar)),
            ("u8 x", weight.matmul(&integers)),
        ];
        if !matches!(dev, Device::Cpu) {
            let resident = weight.to_device(dev)?;
            let host_x = Tensor::from_f32(&[0.5; 20], DType::F32, [2, 10])?;
            attempts.push(("device weight, x [2, 9]", resident.matmul(&wrong_dim)));
            attempts.push(("device weight, rank-0 x", resident.matmul(&scalar)));
            attempts.push(("device weight, u8 x", resident.matmul(&integers)));
            attempts.push(("device weight, host x", resident.matmul(&host_x)));
        }
        for (what, result) in attempts {
            if result.is_ok() {
                return Err(Error::invalid(format!("{what}: expected an Err, got Ok")));
            }
        }
        Ok(CaseOutput { got: vec![0.0], want: vec![0.0] })
    })
}
