//! ggml Q8_0 / Q4_0 / Q4_K / Q6_K: bytes and values against the `gguf` Python package
//! (fixtures), quantize -> dequantize bounds, and fused kernels against the scalar path
//! and against dequantize-then-reference-matmul.

mod common;

use common::{assert_close, load, rand_vec};
use half::f16;
use linattn_quant::cpu::{self, CpuKernel};
use linattn_quant::ggml::{self, GgmlFormat};
use linattn_quant::{QuantFormat, QuantizedWeight};

#[test]
fn q8_0_and_q4_0_bytes_match_gguf_package() {
    let f = load("ggml_blocks.safetensors");
    let input = f["input"].f32s();
    for (name, fmt) in [("q8_0", GgmlFormat::Q8_0), ("q4_0", GgmlFormat::Q4_0)] {
        let ours = ggml::quantize(fmt, &input).unwrap();
        let theirs = &f[name].bytes;
        assert_eq!(ours.len(), theirs.len(), "{name} length");
        if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
            panic!(
                "{name}: first differing byte {i} (block {}): ours {} theirs {}",
                i / fmt.block_bytes(),
                ours[i],
                theirs[i]
            );
        }
    }
}

#[test]
fn dequantize_matches_gguf_package_bit_exactly() {
    let f = load("ggml_blocks.safetensors");
    for (name, fmt) in
        [("q8_0", GgmlFormat::Q8_0), ("q4_0", GgmlFormat::Q4_0), ("q4_k", GgmlFormat::Q4K), ("q6_k", GgmlFormat::Q6K)]
    {
        let ours = ggml::dequantize(fmt, &f[name].bytes).unwrap();
        let theirs = f[&format!("{name}_deq")].f32s();
        assert_eq!(ours.len(), theirs.len(), "{name}");
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{name} element {i}: ours {a} theirs {b}");
        }
    }
}

/// Per-element bound of each format given the block bytes (see the module docs).
fn check_bound(fmt: GgmlFormat, x: &[f32], bytes: &[u8]) {
    let deq = ggml::dequantize(fmt, bytes).unwrap();
    let be = fmt.block_elems();
    for (bi, (xb, b)) in x.chunks(be).zip(bytes.chunks(fmt.block_bytes())).enumerate() {
        let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (j, (&v, &r)) in xb.iter().zip(&deq[bi * be..(bi + 1) * be]).enumerate() {
            let err = (v - r).abs();
            let bound = match fmt {
                GgmlFormat::Q8_0 => {
                    let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
                    d * 0.5 + 127.0 * (d - amax / 127.0).abs() + 1e-6 * amax
                }
                GgmlFormat::Q4_0 => {
                    let d = f16::from_le_bytes([b[0], b[1]]).to_f32().abs();
                    d + 8.0 * d * 2f32.powi(-11) + 1e-6 * amax
                }
                GgmlFormat::Q4K => {
                    let (ds, _) = linattn_quant::ggml::q4_k::sub_block_scales(b)[j / 32];
                    // One quantization step of the sub-block, or 1/15 of the block range
                    // when the sub-block scale rounded to zero.
                    ds.max(amax * 2.0 / 15.0 * 0.5) + 2f32.powi(-8) * amax
                }
                GgmlFormat::Q6K => {
                    let d = f16::from_le_bytes([b[208], b[209]]).to_f32();
                    let sc = (b[192 + j / 16] as i8) as f32;
                    let g = j / 16 * 16;
                    let gmax = xb[g..g + 16].iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    (d * sc).abs().max(0.1 * gmax) + 2f32.powi(-9) * amax
                }
            };
            // f16 underflow of the stored scales: |d16 - d| <= 2^-25 absolute, times
            // the largest scale-code x quant-level product of the format.
            let underflow = 2f32.powi(-25)
                * match fmt {
                    GgmlFormat::Q8_0 => 127.0,
                    GgmlFormat::Q4_0 => 8.0,
                    GgmlFormat::Q4K => 63.0 * 16.0,
                    GgmlFormat::Q6K => 128.0 * 32.0,
                };
            let bound = bound + underflow;
            assert!(err <= bound, "{fmt} block {bi} elem {j}: x {v} deq {r} err {err} > bound {bound}");
        }
    }
}

#[test]
fn quantize_dequantize_within_stated_bounds() {
    let f = load("ggml_blocks.safetensors");
    let fixture_input = f["input"].f32s();
    let mut scaled = rand_vec(4096, 7);
    scaled.iter_mut().enumerate().for_each(|(i, v)| *v *= 1.0 + (i / 256) as f32 * 10.0);
    for fmt in GgmlFormat::ALL {
        for x in [&fixture_input, &scaled] {
            let bytes = ggml::quantize(fmt, x).unwrap();
            check_bound(fmt, x, &bytes);
        }
    }
}

#[test]
fn k_quants_reproduce_their_own_dequantized_grid() {
    // Quantizing values that already lie on a Q6_K / Q4_K grid must give a result at
    // least as close as one step; and all-zero input gives all-zero blocks.
    for fmt in [GgmlFormat::Q4K, GgmlFormat::Q6K] {
        let zeros = ggml::quantize(fmt, &vec![0.0; 512]).unwrap();
        assert!(ggml::dequantize(fmt, &zeros).unwrap().iter().all(|&v| v == 0.0), "{fmt}");
    }
}

#[test]
fn quantize_rejects_bad_input() {
    let err = ggml::quantize(GgmlFormat::Q4K, &[0.0; 100]).unwrap_err().to_string();
    assert!(err.contains("100") && err.contains("256"), "{err}");
    let mut x = vec![0.5f32; 32];
    x[3] = f32::NAN;
    let err = ggml::quantize(GgmlFormat::Q8_0, &x).unwrap_err().to_string();
    assert!(err.contains("index 3"), "{err}");
    let err = ggml::dequantize(GgmlFormat::Q6K, &[0u8; 211]).unwrap_err().to_string();
    assert!(err.contains("211"), "{err}");
}

#[test]
fn fused_kernels_match_scalar_and_reference() {
    let (rows, cols) = (37, 512);
    let w = rand_vec(rows * cols, 11);
    for fmt in GgmlFormat::ALL {
        let bytes = ggml::quantize(fmt, &w).unwrap();
        let deq = ggml::dequantize(fmt, &bytes).unwrap();
        for m in [1usize, 3, 5, 70] {
            let x = rand_vec(m * cols, 5 + m as u64);
            let reference = cpu::reference_matmul(&deq, rows, cols, &x, m);
            let mut scalar = vec![0.0; m * rows];
            cpu::ggml_matmul_into(CpuKernel::Scalar, fmt, &bytes, rows, cols, &x, m, &mut scalar).unwrap();
            assert_close(&format!("{fmt} scalar m={m} vs reference"), &scalar, &reference, 2e-4, 1e-4);
            for kernel in CpuKernel::available() {
                let mut y = vec![0.0; m * rows];
                cpu::ggml_matmul_into(kernel, fmt, &bytes, rows, cols, &x, m, &mut y).unwrap();
                assert_close(&format!("{fmt} {kernel:?} m={m} vs scalar"), &y, &scalar, 2e-4, 1e-4);
                assert_close(&format!("{fmt} {kernel:?} m={m} vs reference"), &y, &reference, 2e-4, 1e-4);
            }
        }
    }
    println!("kernels tested: {:?}", CpuKernel::available());
}

#[test]
fn tensor_level_matmul_and_validation() {
    use linattn_tensor::{DType, Tensor};
    let w = rand_vec(8 * 64, 3);
    let wt = Tensor::from_vec(w.clone(), [8, 64]).unwrap();
    let q = ggml::quantize_tensor(&wt, DType::Q8_0).unwrap();
    assert_eq!(q.dtype(), DType::Q8_0);
    let x = Tensor::from_vec(rand_vec(2 * 64, 4), [2, 64]).unwrap();
    let y = linattn_quant::weight::ggml_matmul(&x, &q).unwrap();
    assert_eq!(y.dims(), &[2, 8]);
    let deq = ggml::dequantize_tensor(&q).unwrap().to_f32_vec().unwrap();
    let reference = cpu::reference_matmul(&deq, 8, 64, &x.to_f32_vec().unwrap(), 2);
    assert_close("tensor matmul", &y.to_f32_vec().unwrap(), &reference, 1e-4, 1e-4);
    let bf = x.to_dtype(DType::BF16).unwrap();
    assert_eq!(linattn_quant::weight::ggml_matmul(&bf, &q).unwrap().dtype(), DType::BF16);
    let bad = Tensor::from_vec(vec![0.0f32; 63], [63]).unwrap();
    let err = linattn_quant::weight::ggml_matmul(&bad, &q).unwrap_err().to_string();
    assert!(err.contains("[63]") && err.contains("[8, 64]"), "{err}");
    let qw = QuantizedWeight::quantize(&w, [8, 64], QuantFormat::Q4_0).unwrap();
    let mut y1 = vec![0.0; 8];
    let mut bad_y = vec![0.0; 7];
    assert!(qw.matvec_into(CpuKernel::detect(), &x.to_f32_vec().unwrap()[..64], &mut bad_y).is_err());
    qw.matvec_into(CpuKernel::detect(), &x.to_f32_vec().unwrap()[..64], &mut y1).unwrap();
}
