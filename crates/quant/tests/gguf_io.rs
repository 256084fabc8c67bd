//! GGUF reader/writer against files written by the `gguf` Python package, round trips,
//! and bad input (mutated, truncated, inconsistent files never panic).

mod common;

use common::fixture;
use linattn_quant::ByteView;
use linattn_quant::gguf::{GgufFile, GgufValue, GgufWriter};
use linattn_quant::{CpuKernel, QuantFormat, QuantizedWeight};
use proptest::prelude::*;

fn sidecar() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("small.json")).unwrap()).unwrap()
}

#[test]
fn reads_every_metadata_type_written_by_python() {
    let f = GgufFile::open(fixture("small.gguf")).unwrap();
    assert_eq!(f.version, 3);
    assert_eq!(f.alignment, 32);
    let get = |k: &str| f.get(k).unwrap_or_else(|| panic!("missing {k}")).clone();
    assert_eq!(get("general.architecture"), GgufValue::String("linattn-test".into()));
    assert_eq!(get("test.u8"), GgufValue::U8(200));
    assert_eq!(get("test.i8"), GgufValue::I8(-100));
    assert_eq!(get("test.u16"), GgufValue::U16(60000));
    assert_eq!(get("test.i16"), GgufValue::I16(-30000));
    assert_eq!(get("test.u32"), GgufValue::U32(4_000_000_000));
    assert_eq!(get("test.i32"), GgufValue::I32(-2_000_000_000));
    assert_eq!(get("test.f32"), GgufValue::F32(1.5));
    assert_eq!(get("test.bool"), GgufValue::Bool(true));
    assert_eq!(get("test.string"), GgufValue::String("linear attention \u{e9}\u{2192}".into()));
    assert_eq!(get("test.u64"), GgufValue::U64((1u64 << 63) + 5));
    assert_eq!(get("test.i64"), GgufValue::I64(-(1i64 << 62)));
    assert_eq!(get("test.f64"), GgufValue::F64(-2.25e-300));
    assert_eq!(
        get("test.arr_i32"),
        GgufValue::Array(5, vec![GgufValue::I32(1), GgufValue::I32(-2), GgufValue::I32(3)])
    );
    assert_eq!(
        get("test.arr_str"),
        GgufValue::Array(
            8,
            vec![GgufValue::String("a".into()), GgufValue::String("bc".into()), GgufValue::String(String::new())]
        )
    );
    assert_eq!(get("test.arr_f32"), GgufValue::Array(6, vec![GgufValue::F32(0.5), GgufValue::F32(-1.0)]));
    assert_eq!(
        get("test.arr_bool"),
        GgufValue::Array(7, vec![GgufValue::Bool(true), GgufValue::Bool(false), GgufValue::Bool(true)])
    );
    let nested = GgufValue::Array(
        9,
        vec![
            GgufValue::Array(5, vec![GgufValue::I32(1), GgufValue::I32(2)]),
            GgufValue::Array(5, vec![GgufValue::I32(3)]),
        ],
    );
    assert_eq!(get("test.arr_nested"), nested);
}

#[test]
fn tensors_match_python_reader_values_and_offsets() {
    let side = sidecar();
    for file in ["small.gguf", "aligned64.gguf"] {
        let f = GgufFile::open(fixture(file)).unwrap();
        let expected = side[file].as_object().unwrap();
        assert_eq!(f.tensors.len(), expected.len());
        for t in &f.tensors {
            let e = &expected[&t.name];
            assert_eq!(t.type_name(), e["type"].as_str().unwrap(), "{}", t.name);
            let shape: Vec<usize> =
                e["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            assert_eq!(t.shape().dims(), shape.as_slice(), "{}", t.name);
            assert_eq!((f.data_offset as u64 + t.offset), e["offset"].as_u64().unwrap(), "{file} {}", t.name);
            let values: Vec<f32> = e["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
            let ours = match t.type_name() {
                "f32" | "f16" => f.tensor(&t.name).unwrap().to_f32_vec().unwrap(),
                _ => f.weight(&t.name).unwrap().dequantize_f32().unwrap(),
            };
            assert_eq!(ours, values, "{file} {}", t.name);
        }
    }
}

#[test]
fn write_after_read_is_byte_exact() {
    for file in ["small.gguf", "aligned64.gguf"] {
        let original = std::fs::read(fixture(file)).unwrap();
        let f = GgufFile::open(fixture(file)).unwrap();
        let again = GgufWriter::from_file(&f).unwrap().to_bytes().unwrap();
        assert_eq!(again.len(), original.len(), "{file}");
        assert!(again == original, "{file}: rewritten bytes differ");
    }
}

#[test]
fn written_weights_are_zero_copy_and_usable_by_matvec() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.gguf");
    let w = common::rand_vec(16 * 256, 9);
    let mut writer = GgufWriter::new();
    writer.set_alignment(64).unwrap();
    writer.add_metadata("general.name", GgufValue::String("t".into()));
    for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4K, QuantFormat::Q6K] {
        writer.add_weight(fmt.name(), &QuantizedWeight::quantize(&w, [16, 256], fmt).unwrap()).unwrap();
    }
    writer.write(&path).unwrap();
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.alignment, 64);
    let x = common::rand_vec(256, 1);
    for fmt in [QuantFormat::Q8_0, QuantFormat::Q4_0, QuantFormat::Q4K, QuantFormat::Q6K] {
        let mapped = f.weight(fmt.name()).unwrap();
        match &mapped {
            QuantizedWeight::Ggml { bytes, .. } => assert!(bytes.is_mapped()),
            _ => unreachable!(),
        }
        let fresh = QuantizedWeight::quantize(&w, [16, 256], fmt).unwrap();
        assert_eq!(mapped.dequantize_f32().unwrap(), fresh.dequantize_f32().unwrap());
        let (mut y1, mut y2) = (vec![0.0; 16], vec![0.0; 16]);
        mapped.matvec_into(CpuKernel::detect(), &x, &mut y1).unwrap();
        fresh.matvec_into(CpuKernel::detect(), &x, &mut y2).unwrap();
        assert_eq!(y1, y2);
    }
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, String> {
    GgufFile::parse(ByteView::from_vec(bytes), "test").map_err(|e| e.to_string())
}

#[test]
fn bad_files_give_errors_naming_the_problem() {
    let good = std::fs::read(fixture("small.gguf")).unwrap();
    let mut bad = good.clone();
    bad[0] = b'X';
    assert!(parse(bad).unwrap_err().contains("magic"));
    let mut bad = good.clone();
    bad[4] = 9;
    assert!(parse(bad).unwrap_err().contains("version 9"));
    // Absurd counts are rejected before allocating.
    let mut bad = good.clone();
    bad[8..16].copy_from_slice(&(1u64 << 60).to_le_bytes());
    assert!(parse(bad).unwrap_err().contains("tensor count"));
    let mut bad = good.clone();
    bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse(bad).unwrap_err().contains("metadata count"));
    // Truncation anywhere before the end of the last tensor is an error.
    let f = GgufFile::open(fixture("small.gguf")).unwrap();
    let last_end = f.tensors.iter().map(|t| f.data_offset + t.offset as usize + t.nbytes).max().unwrap();
    for cut in (0..last_end).step_by(7) {
        assert!(parse(good[..cut].to_vec()).is_err(), "prefix of {cut} bytes parsed");
    }
    let err = parse(good[..last_end - 1].to_vec()).unwrap_err();
    assert!(err.contains("past the end"), "{err}");
    // Tensor-info corruptions: write a file with one tensor and patch its info.
    let mut w = GgufWriter::new();
    w.add_tensor_bytes("t", 0, &[2usize, 8].into(), vec![0u8; 64]).unwrap();
    let one = w.to_bytes().unwrap();
    let info = 24 + 8 + 1; // header, name length, name
    let (dims_at, type_at, off_at) = (info + 4, info + 4 + 16, info + 4 + 16 + 4);
    let mut bad = one.clone();
    bad[type_at..type_at + 4].copy_from_slice(&77u32.to_le_bytes());
    let err = parse(bad).unwrap_err();
    assert!(err.contains("`t`") && err.contains("unknown ggml type id 77"), "{err}");
    let mut bad = one.clone();
    bad[off_at..off_at + 8].copy_from_slice(&8u64.to_le_bytes());
    let err = parse(bad).unwrap_err();
    assert!(err.contains("`t`") && err.contains("not aligned"), "{err}");
    let mut bad = one.clone();
    bad[off_at..off_at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    let err = parse(bad).unwrap_err();
    assert!(err.contains("`t`") && err.contains("past the end"), "{err}");
    let mut bad = one.clone();
    bad[type_at..type_at + 4].copy_from_slice(&8u32.to_le_bytes()); // q8_0 needs dims[0] % 32
    let err = parse(bad).unwrap_err();
    assert!(err.contains("multiple of the block size 32"), "{err}");
    let mut bad = one.clone();
    bad[dims_at..dims_at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(parse(bad).is_err());
    let mut bad = one.clone();
    bad[24..32].copy_from_slice(&(1u64 << 50).to_le_bytes()); // tensor name length
    let err = parse(bad).unwrap_err();
    assert!(err.contains("string length"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]
    #[test]
    fn mutated_files_never_panic(edits in proptest::collection::vec((0usize..2016, any::<u8>()), 1..8), cut in 0usize..2100) {
        let mut bytes = std::fs::read(fixture("small.gguf")).unwrap();
        for (at, v) in edits {
            if at < bytes.len() {
                bytes[at] = v;
            }
        }
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(f) = parse(bytes) {
            for t in &f.tensors {
                let _ = f.tensor_bytes(&t.name).unwrap();
                let _ = f.tensor(&t.name);
                if let Ok(w) = f.weight(&t.name) {
                    let _ = w.dequantize_f32();
                }
            }
        }
    }
}
