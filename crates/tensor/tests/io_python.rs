//! Interoperability with Python's `safetensors`: reading the committed fixture written
//! by `tests/data/make_safetensors_fixture.py` (values, bytes and metadata checked
//! against the JSON PyTorch dumped beside it), writing with the reference layout, and
//! Python reading our files (skipped with a printed reason when no Python with torch
//! and safetensors is found; `LINATTN_PYTHON` names the interpreter).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use linattn_tensor::io::{SafeTensorsFile, save};
use linattn_tensor::{DType, Tensor};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn torch_dtype(name: &str) -> DType {
    match name {
        "float32" => DType::F32,
        "float16" => DType::F16,
        "bfloat16" => DType::BF16,
        "float64" => DType::F64,
        "uint8" | "bool" => DType::U8,
        "int8" => DType::I8,
        "uint16" => DType::U16,
        "int16" => DType::I16,
        "uint32" => DType::U32,
        "int32" => DType::I32,
        "int64" => DType::I64,
        "float8_e4m3fn" => DType::F8E4M3,
        "float8_e5m2" => DType::F8E5M2,
        other => panic!("fixture has torch dtype {other} the test does not know"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Expected values as f64: exact bit patterns for floats, integers otherwise.
fn expected_values(want: &Value) -> Vec<f64> {
    match want.get("f64_bits") {
        Some(bits) => bits.as_array().unwrap().iter().map(|b| f64::from_bits(b.as_u64().unwrap())).collect(),
        None => want["values"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap() as f64).collect(),
    }
}

/// Decoded values of a tensor as f64 (ints exactly, floats widened exactly).
fn values_f64(t: &Tensor) -> Option<Vec<f64>> {
    Some(match t.dtype() {
        DType::F32 | DType::F16 | DType::BF16 => t.to_f32_vec().unwrap().into_iter().map(f64::from).collect(),
        DType::F64 => t.to_vec::<f64>().unwrap(),
        DType::U8 => t.to_vec::<u8>().unwrap().into_iter().map(f64::from).collect(),
        DType::I8 => t.to_vec::<i8>().unwrap().into_iter().map(f64::from).collect(),
        DType::U16 => t.to_vec::<u16>().unwrap().into_iter().map(f64::from).collect(),
        DType::I16 => t.to_vec::<i16>().unwrap().into_iter().map(f64::from).collect(),
        DType::U32 => t.to_vec::<u32>().unwrap().into_iter().map(f64::from).collect(),
        DType::I32 => t.to_vec::<i32>().unwrap().into_iter().map(f64::from).collect(),
        _ => return None,
    })
}

fn load_expected() -> Value {
    let text = std::fs::read_to_string(data_dir().join("python_fixture.expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn header_json(path: &Path) -> (serde_json::Map<String, Value>, Vec<u8>) {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), bytes[8 + n..].to_vec())
}

#[test]
fn reads_python_fixture_exactly() {
    let expected = load_expected();
    let file = SafeTensorsFile::open(data_dir().join("python_fixture.safetensors")).unwrap();
    let want_meta: BTreeMap<String, String> = serde_json::from_value(expected["metadata"].clone()).unwrap();
    assert_eq!(file.metadata(), &want_meta);
    assert_eq!(want_meta["note"], "unicode \u{2713} and \"quotes\"");

    let tensors = expected["tensors"].as_object().unwrap();
    let mut names: Vec<&str> = file.names().collect();
    names.sort();
    assert_eq!(names, tensors.keys().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(names.len(), 16);

    for (name, want) in tensors {
        let t = file.tensor(name).unwrap();
        let dims: Vec<usize> = serde_json::from_value(want["shape"].clone()).unwrap();
        assert_eq!(t.dims(), dims.as_slice(), "{name}");
        assert_eq!(t.dtype(), torch_dtype(want["dtype"].as_str().unwrap()), "{name}");
        assert_eq!(hex(file.bytes(name).unwrap()), want["hex"].as_str().unwrap(), "{name}");
        assert_eq!(hex(t.as_bytes().unwrap()), want["hex"].as_str().unwrap(), "{name}");
        let Some(got) = values_f64(&t) else { continue };
        let want_values = expected_values(want);
        assert_eq!(got.len(), want_values.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want_values).enumerate() {
            assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "{name}[{i}]: {g} vs {w}");
        }
    }
    // i64 extremes are exact (not representable in f64, so checked apart).
    assert_eq!(file.tensor("i64.vals").unwrap().to_vec::<i64>().unwrap()[..2], [i64::MIN, i64::MAX]);
    let scalar = file.tensor("scalar.f32").unwrap();
    assert_eq!((scalar.rank(), scalar.to_f32_vec().unwrap()), (0, vec![2.5]));
    assert_eq!(file.tensor("empty.f32").unwrap().dims(), &[0, 3]);
}

#[test]
fn rewrite_reproduces_python_layout() {
    // Writing the fixture's tensors back (all but the BOOL, which we read as U8) must give
    // the header and data Python wrote: same order, offsets, dtypes, shapes, metadata.
    let fixture = data_dir().join("python_fixture.safetensors");
    let file = SafeTensorsFile::open(&fixture).unwrap();
    let owned: Vec<(String, Tensor)> =
        file.names().filter(|n| *n != "bool.mask").map(|n| (n.to_string(), file.tensor(n).unwrap())).collect();
    let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rewritten.safetensors");
    save(&out, &refs, Some(file.metadata())).unwrap();

    let (mut python_header, python_data) = header_json(&fixture);
    let bool_entry = python_header.remove("bool.mask").unwrap();
    let bool_start = bool_entry["data_offsets"][0].as_u64().unwrap() as usize;
    let (our_header, our_data) = header_json(&out);
    assert_eq!(our_header, python_header);
    assert_eq!(our_data, python_data[..bool_start]);
    let our_bytes = std::fs::read(&out).unwrap();
    let n = u64::from_le_bytes(our_bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    assert!(our_bytes[8..8 + n].ends_with(b"}") || our_bytes[8..8 + n].ends_with(b" "));
}

/// The interpreter to use: `LINATTN_PYTHON`, else the project's fixture venv.
fn python() -> PathBuf {
    std::env::var_os("LINATTN_PYTHON").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp/pyfx/bin/python"))
}

#[test]
fn python_reads_our_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ours.safetensors");
    let dtypes = [
        (DType::F32, "float32"),
        (DType::F16, "float16"),
        (DType::BF16, "bfloat16"),
        (DType::F64, "float64"),
        (DType::U8, "uint8"),
        (DType::I8, "int8"),
        (DType::U16, "uint16"),
        (DType::I16, "int16"),
        (DType::U32, "uint32"),
        (DType::I32, "int32"),
        (DType::I64, "int64"),
        (DType::F8E4M3, "float8_e4m3fn"),
        (DType::F8E5M2, "float8_e5m2"),
    ];
    let mut owned = Vec::new();
    for (i, (dtype, _)) in dtypes.iter().enumerate() {
        let dims: Vec<usize> = match i % 3 {
            0 => vec![],
            1 => vec![2, 0],
            _ => vec![3, 2],
        };
        let numel: usize = dims.iter().product();
        // Patterns avoid NaN encodings so torch and we agree byte for byte either way.
        let bytes: Vec<u8> = (0..numel * dtype.block_bytes()).map(|b| ((b * 13 + i) % 0x3f) as u8).collect();
        owned.push((format!("t{i}.{dtype}"), Tensor::from_bytes(&bytes, *dtype, dims).unwrap()));
    }
    let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let metadata: BTreeMap<String, String> =
        [("format".to_string(), "pt".to_string()), ("k\"ey".to_string(), "v\u{e9}".to_string())].into();
    save(&path, &refs, Some(&metadata)).unwrap();

    let python = python();
    let script = data_dir().join("read_safetensors.py");
    let Ok(output) = std::process::Command::new(&python).arg(script).arg(&path).output() else {
        linattn_tensor::report_skip(&format!(
            "python_reads_our_files: cannot run {} (set LINATTN_PYTHON)",
            python.display()
        ));
        return;
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("ModuleNotFoundError") {
        linattn_tensor::report_skip(&format!(
            "python_reads_our_files: {} lacks torch or safetensors: {stderr}",
            python.display()
        ));
        return;
    }
    assert!(output.status.success(), "python failed: {stderr}");
    let read: Value = serde_json::from_slice(&output.stdout).unwrap();
    let read_meta: BTreeMap<String, String> = serde_json::from_value(read["metadata"].clone()).unwrap();
    assert_eq!(read_meta, metadata);
    let tensors = read["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), owned.len());
    for ((name, t), (_, torch_name)) in owned.iter().zip(dtypes) {
        let got = &tensors[name.as_str()];
        assert_eq!(got["dtype"], torch_name, "{name}");
        let dims: Vec<usize> = serde_json::from_value(got["shape"].clone()).unwrap();
        assert_eq!(dims.as_slice(), t.dims(), "{name}");
        assert_eq!(got["hex"].as_str().unwrap(), hex(t.as_bytes().unwrap()), "{name}");
    }
}
