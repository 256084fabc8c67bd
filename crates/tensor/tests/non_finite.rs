//! `ops::first_non_finite` on every device against the CPU op and a plain search.
//!
//! Cases: f32, f16 and bf16; lengths that are and are not multiples of the workgroup
//! (256) and of the 16-bit word pair, including ones long enough for the GPU grid-stride
//! loops to wrap; no non-finite value, one (first, middle, last element; NaN, +Inf,
//! -Inf), several (the first must win), and every element. The batched form must give
//! each tensor its own answer. GPU tests skip with a printed reason when the device is
//! missing; `LINATTN_REQUIRE_WGPU=1` / `LINATTN_REQUIRE_CUDA=1` / `LINATTN_REQUIRE_GPU=1`
//! turn the skip into a failure.

use linattn_tensor::ops::{NonFiniteElement, check_all_finite, first_non_finite, first_non_finite_each};
use linattn_tensor::{DType, Device, Error, Tensor, cuda_required, report_skip, wgpu_required};

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];
/// Around the workgroup size, odd, and above 4096 workgroups x 256 words (the WebGPU
/// grid cap), so every invocation loops.
const LENGTHS: [usize; 8] = [1, 2, 3, 255, 257, 1000, 4099, 2_100_003];

fn wgpu_device() -> Option<Device> {
    match Device::wgpu() {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(!wgpu_required(), "LINATTN_REQUIRE_WGPU or LINATTN_REQUIRE_GPU is set but {e}");
            report_skip(&format!("first_non_finite WebGPU test: {e}"));
            None
        }
    }
}

fn cuda_device() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            assert!(!cuda_required(), "LINATTN_REQUIRE_CUDA or LINATTN_REQUIRE_GPU is set but {e}");
            report_skip(&format!("first_non_finite CUDA test: {e}"));
            None
        }
    }
}

/// Deterministic finite values in [-8, 8).
fn finite_values(len: usize, seed: u64) -> Vec<f32> {
    linattn_tensor::testing::uniform(len, seed, -8.0, 8.0)
}

/// One test input: values, and what a plain search over them (widened to f32) finds.
struct Case {
    what: String,
    values: Vec<f32>,
}

fn cases(len: usize, seed: u64) -> Vec<Case> {
    let clean = finite_values(len, seed);
    let mut out = vec![Case { what: "all finite".into(), values: clean.clone() }];
    for spot in [0, len / 2, len - 1] {
        for (name, bad) in [("NaN", f32::NAN), ("+Inf", f32::INFINITY), ("-Inf", f32::NEG_INFINITY)] {
            let mut values = clean.clone();
            values[spot] = bad;
            out.push(Case { what: format!("{name} at {spot}"), values });
        }
    }
    if len > 10 {
        let mut values = clean.clone();
        for spot in [len / 3, len / 3 + 1, len - 4, len - 1] {
            values[spot] = f32::INFINITY;
        }
        values[len / 3 + 2] = f32::NAN;
        out.push(Case { what: "several".into(), values });
        out.push(Case { what: "all NaN".into(), values: vec![f32::NAN; len] });
    }
    out
}

/// The plain oracle: position of the first value that is not finite.
fn plain_search(t: &Tensor) -> Option<(usize, f32)> {
    let values = t.to_f32_vec().unwrap();
    values.iter().position(|v| !v.is_finite()).map(|i| (i, values[i]))
}

fn assert_same(what: &str, got: Option<NonFiniteElement>, want: Option<(usize, f32)>) {
    match (got, want) {
        (None, None) => {}
        (Some(g), Some((index, value))) => {
            assert_eq!(g.index, index, "{what}: index (value {} vs {value})", g.value);
            let same = if value.is_nan() { g.value.is_nan() } else { g.value == value };
            assert!(same, "{what}: value at {index} is {} but the tensor holds {value}", g.value);
        }
        (got, want) => panic!("{what}: got {got:?}, want {want:?}"),
    }
}

/// Runs every case on `device` and compares with the CPU op and the plain search.
fn check_device(device: &Device) {
    for dtype in DTYPES {
        for (seed, &len) in LENGTHS.iter().enumerate() {
            for case in cases(len, seed as u64) {
                let what = format!("{device} {dtype} len {len} {}", case.what);
                let host = Tensor::from_f32(&case.values, dtype, [len]).unwrap();
                let want = plain_search(&host);
                let on_cpu = first_non_finite(&host).unwrap();
                assert_same(&format!("{what} (cpu)"), on_cpu, want);
                let on_device = first_non_finite(&host.to_device(device).unwrap()).unwrap();
                assert_same(&what, on_device, want);
            }
        }
    }
}

/// Several tensors of mixed dtypes and sizes (one empty) in one batched call: each gets
/// its own answer, and `check_all_finite` names the first bad one in the given order.
fn check_batched(device: &Device) {
    let mut late = finite_values(301, 7);
    late[300] = f32::NEG_INFINITY;
    let mut early = finite_values(1024, 8);
    early[3] = f32::NAN;
    let host = [
        Tensor::from_f32(&finite_values(77, 9), DType::F16, [7, 11]).unwrap(),
        Tensor::from_f32(&late, DType::BF16, [301]).unwrap(),
        Tensor::zeros([0, 4], DType::F32, &Device::Cpu).unwrap(),
        Tensor::from_f32(&early, DType::F32, [4, 256]).unwrap(),
    ];
    let on_device: Vec<Tensor> = host.iter().map(|t| t.to_device(device).unwrap()).collect();
    let refs: Vec<&Tensor> = on_device.iter().collect();
    let got = first_non_finite_each(&refs).unwrap();
    assert_eq!(got.len(), host.len());
    for ((g, h), i) in got.into_iter().zip(&host).zip(0..) {
        assert_same(&format!("{device} batched tensor {i}"), g, plain_search(h));
    }
    let named: Vec<(&str, &Tensor)> = ["a", "b", "c", "d"].into_iter().zip(refs.iter().copied()).collect();
    match check_all_finite("test_op", &named) {
        Err(Error::NonFinite { op, tensor, index, value }) => {
            assert_eq!((op, tensor.as_str(), index, value), ("test_op", "b", 300, f32::NEG_INFINITY));
        }
        other => panic!("{device}: expected NonFinite for `b`, got {other:?}"),
    }
    // Tensor::check_finite goes through the same device op.
    let err = on_device[3].check_finite("test_op", "d").unwrap_err().to_string();
    assert!(err.contains("`d`") && err.contains("index 3") && err.contains("NaN"), "{err}");
}

#[test]
fn cpu_matches_the_plain_search() {
    check_device(&Device::Cpu);
    check_batched(&Device::Cpu);
}

#[test]
fn wgpu_matches_cpu() {
    let Some(device) = wgpu_device() else { return };
    check_device(&device);
    check_batched(&device);
}

#[test]
fn cuda_matches_cpu() {
    let Some(device) = cuda_device() else { return };
    check_device(&device);
    check_batched(&device);
}

#[test]
fn bad_calls_are_errors() {
    let ints = Tensor::from_vec(vec![1i32, 2, 3], [3]).unwrap();
    assert!(matches!(first_non_finite(&ints), Err(Error::UnsupportedDType { .. })));
    let f64s = Tensor::from_vec(vec![1.0f64, f64::NAN], [2]).unwrap();
    assert!(first_non_finite(&f64s).is_err(), "f64 is not a compute dtype");
    // f64 still goes through Tensor::check_finite (on the host).
    assert!(f64s.check_finite("op", "x").is_err());
    assert!(first_non_finite_each(&[]).unwrap().is_empty());
    if let Ok(gpu) = Device::wgpu() {
        let cpu = Tensor::from_vec(vec![1.0f32], [1]).unwrap();
        let there = cpu.to_device(&gpu).unwrap();
        assert!(matches!(first_non_finite_each(&[&cpu, &there]), Err(Error::DeviceMismatch { .. })));
    }
}
