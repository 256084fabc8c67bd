//! bitsandbytes NF4/FP4 (plain and double-quantized) and LLM.int8 against fixtures
//! produced by bitsandbytes on CPU, plus bounds and the mixed-precision matmul.

mod common;

use common::{assert_close, load, rand_vec};
use linattn_quant::bnb::{FourBitKind, FourBitWeight, Int8Weight};
use linattn_quant::checkpoint;
use linattn_quant::cpu::{self, CpuKernel};
use linattn_quant::{QuantFormat, QuantizedWeight};

#[test]
fn four_bit_quantization_matches_bitsandbytes_bytes() {
    let f = load("bnb_4bit.safetensors");
    let input = f["input.weight"].f32s();
    for kind in [FourBitKind::Nf4, FourBitKind::Fp4] {
        for dq in [false, true] {
            for bs in [64usize, 128] {
                let prefix = format!("{}_{}_{bs}.weight", kind.name(), if dq { "dq" } else { "plain" });
                let ours = FourBitWeight::quantize(&input, [48, 384], kind, bs, dq).unwrap();
                let code: Vec<f32> = f[&format!("{prefix}.quant_map")].f32s();
                assert_eq!(ours.code.to_vec(), code, "{prefix} code table");
                let packed = &f[&prefix].bytes;
                if let Some(i) = ours.packed.as_slice().iter().zip(packed).position(|(a, b)| a != b) {
                    panic!(
                        "{prefix}: packed byte {i} differs: ours {:#x} theirs {:#x}",
                        ours.packed.as_slice()[i],
                        packed[i]
                    );
                }
                match &ours.absmax {
                    linattn_quant::bnb::Absmax::F32(a) => {
                        assert_eq!(a, &f[&format!("{prefix}.absmax")].f32s(), "{prefix}")
                    }
                    linattn_quant::bnb::Absmax::Nested(n) => {
                        assert_eq!(n.code, f[&format!("{prefix}.nested_quant_map")].f32s(), "{prefix} dynamic map");
                        // bitsandbytes' native CPU 8-bit quantizer is not strictly nearest:
                        // on near-ties it can pick the neighbouring code. We pick the
                        // nearest; allow a one-step difference on at most 1% of entries.
                        let theirs = &f[&format!("{prefix}.absmax")].bytes;
                        let differing: Vec<usize> =
                            (0..theirs.len()).filter(|&i| n.quantized[i] != theirs[i]).collect();
                        assert!(
                            differing.len() * 100 <= theirs.len(),
                            "{prefix}: {} nested codes differ",
                            differing.len()
                        );
                        for i in differing {
                            assert_eq!((n.quantized[i] as i32 - theirs[i] as i32).abs(), 1, "{prefix} nested code {i}");
                        }
                        assert_eq!(n.absmax, f[&format!("{prefix}.nested_absmax")].f32s(), "{prefix} nested absmax");
                    }
                }
            }
        }
    }
}

#[test]
fn loads_hf_keys_and_dequantizes_like_bitsandbytes() {
    let path = common::fixture("bnb_4bit.safetensors");
    for prefix in ["nf4_plain_64", "nf4_dq_64", "fp4_dq_64"] {
        let w = checkpoint::load_weight(&path, &format!("{prefix}.weight")).unwrap();
        assert_eq!(w.shape().dims(), &[48, 384]);
        let expected = load("bnb_4bit.safetensors")[&format!("{prefix}.weight.expected_deq")].f32s();
        let ours = w.dequantize_f32().unwrap();
        for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "{prefix} element {i}: ours {a} theirs {b}");
        }
    }
}

#[test]
fn four_bit_error_within_stated_bound() {
    let x = rand_vec(64 * 256, 21);
    for (kind, half_gap) in [(FourBitKind::Nf4, 0.1519f32), (FourBitKind::Fp4, 0.1667)] {
        for dq in [false, true] {
            let w = FourBitWeight::quantize(&x, [64, 256], kind, 64, dq).unwrap();
            let deq = w.dequantize_f32().unwrap();
            for (bi, (xb, db)) in x.chunks(64).zip(deq.chunks(64)).enumerate() {
                let amax = xb.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                // Double quantization: absmax itself is off by at most ~4%.
                let bound = half_gap * amax * if dq { 1.04 } else { 1.0 } + if dq { 0.04 * amax } else { 0.0 } + 1e-6;
                for (v, r) in xb.iter().zip(db) {
                    assert!((v - r).abs() <= bound, "{kind:?} dq={dq} block {bi}: {v} vs {r}, bound {bound}");
                }
            }
        }
    }
}

#[test]
fn int8_matches_bitsandbytes_and_mixed_matmul_is_close() {
    let f = load("bnb_int8.safetensors");
    let input = f["input.weight"].f32s();
    let ours = Int8Weight::quantize(&input, 24, 96).unwrap();
    assert_eq!(ours.data.as_slice(), f["int8.weight"].bytes.as_slice(), "CB");
    assert_eq!(ours.scb, f["int8.SCB"].f32s(), "SCB");
    let loaded = checkpoint::load_weight(common::fixture("bnb_int8.safetensors"), "int8.weight").unwrap();
    assert_eq!(loaded.format(), QuantFormat::Int8);
    let deq = loaded.dequantize_f32().unwrap();
    for (r, (xr, dr)) in input.chunks(96).zip(deq.chunks(96)).enumerate() {
        let s = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (a, b) in xr.iter().zip(dr) {
            assert!((a - b).abs() <= s / 254.0 * 1.0001 + 1e-7, "row {r}: {a} vs {b}");
        }
    }
    // Mixed-precision matmul against the float reference on the dequantized weight: the
    // outlier columns (7 and 40 here) are exact; the rest carries the int8 rounding of x.
    let x = f["x"].f32s();
    let y = ours.matmul_f32(&x, 5, 6.0).unwrap();
    let reference = cpu::reference_matmul(&deq, 24, 96, &x, 5);
    for t in 0..5 {
        let row = &x[t * 96..(t + 1) * 96];
        let sx = row.iter().filter(|v| v.abs() < 6.0).fold(0.0f32, |m, v| m.max(v.abs()));
        for r in 0..24 {
            let wsum: f32 = deq[r * 96..(r + 1) * 96].iter().map(|v| v.abs()).sum();
            let bound = sx / 254.0 * wsum + 1e-4;
            let (a, b) = (y[t * 24 + r], reference[t * 24 + r]);
            assert!((a - b).abs() <= bound, "y[{t},{r}] {a} vs {b}, bound {bound}");
        }
    }
    // Without the split, the outlier column dominates the absmax and the error grows.
    let y_no_split = ours.matmul_f32(&x, 5, 0.0).unwrap();
    let err = |v: &[f32]| v.iter().zip(&reference).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(err(&y) < err(&y_no_split), "outlier decomposition should reduce the error");
}

#[test]
fn rowwise_formats_fast_paths_match_reference() {
    let (rows, cols) = (40, 192);
    let w = rand_vec(rows * cols, 17);
    for fmt in [QuantFormat::Nf4, QuantFormat::Fp4, QuantFormat::Fp8E4M3, QuantFormat::Fp8E5M2] {
        let q = QuantizedWeight::quantize(&w, [rows, cols], fmt).unwrap();
        let deq = q.dequantize_f32().unwrap();
        for m in [1usize, 2, 3, 4, 33] {
            let x = rand_vec(m * cols, 3 + m as u64);
            let reference = cpu::reference_matmul(&deq, rows, cols, &x, m);
            for kernel in CpuKernel::available() {
                let mut y = vec![0.0; m * rows];
                q.matmul_into(kernel, &x, m, &mut y).unwrap();
                assert_close(&format!("{fmt} {kernel:?} m={m}"), &y, &reference, 1e-4, 1e-4);
            }
        }
    }
}

#[test]
fn fp8_error_within_stated_bound() {
    let mut w = rand_vec(200 * 300, 5);
    w.iter_mut().enumerate().for_each(|(i, v)| *v *= 1.0 + (i % 300 / 128) as f32 * 50.0);
    for (kind, rel, sub) in [
        (linattn_quant::fp8::Fp8Kind::E4M3, 2f32.powi(-4), 2f32.powi(-10)),
        (linattn_quant::fp8::Fp8Kind::E5M2, 2f32.powi(-3), 2f32.powi(-17)),
    ] {
        for block in [None, Some((128, 128))] {
            let q = linattn_quant::fp8::Fp8Weight::quantize(&w, 200, 300, kind, block).unwrap();
            let deq = q.dequantize_f32().unwrap();
            let max_scale = match &q.scale {
                linattn_quant::fp8::Fp8Scale::PerTensor(s) => *s,
                linattn_quant::fp8::Fp8Scale::Block { scale_inv, .. } => {
                    scale_inv.iter().fold(0.0f32, |m, v| m.max(*v))
                }
            };
            for (a, b) in w.iter().zip(&deq) {
                assert!((a - b).abs() <= rel * a.abs() + sub * max_scale * 1.0001, "{kind:?} {block:?}: {a} vs {b}");
            }
        }
    }
}

#[test]
fn checkpoint_round_trip_keeps_hf_keys() {
    let dir = tempfile::tempdir().unwrap();
    let w = rand_vec(32 * 128, 2);
    let mut weights = Vec::new();
    for fmt in [QuantFormat::Nf4, QuantFormat::Int8, QuantFormat::Fp8E4M3] {
        weights.push((format!("layer.{}.weight", fmt.name()), QuantizedWeight::quantize(&w, [32, 128], fmt).unwrap()));
    }
    let dq = FourBitWeight::quantize(&w, [32, 128], FourBitKind::Fp4, 64, true).unwrap();
    weights.push(("layer.fp4dq.weight".to_string(), QuantizedWeight::FourBit(dq)));
    let path = dir.path().join("q.safetensors");
    checkpoint::save(&path, &weights).unwrap();
    for (name, q) in &weights {
        let back = checkpoint::load_weight(&path, name).unwrap();
        assert_eq!(back.format(), q.format(), "{name}");
        assert_eq!(back.dequantize_f32().unwrap(), q.dequantize_f32().unwrap(), "{name}");
    }
    let listed = checkpoint::list_weights(&path).unwrap();
    assert_eq!(listed.len(), 4);
    let err = checkpoint::load_weight(&path, "missing.weight").unwrap_err().to_string();
    assert!(err.contains("missing.weight"), "{err}");
}
