//! Malformed safetensors files: every failure is an `Err` whose message names the file,
//! the tensor and the byte offset where relevant, and no bytes at all (mutated or
//! truncated valid files, from proptest) make `open` or reading a tensor panic.

use std::path::Path;

use linattn_tensor::io::{SafeTensorsFile, save};
use linattn_tensor::{DType, Tensor};
use proptest::prelude::*;

/// A file from a header string (padded to 8 bytes) and data bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.as_bytes().to_vec();
    h.resize(h.len().next_multiple_of(8), b' ');
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Writes `bytes` to a temporary file and returns the error message of opening it.
fn open_err(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    std::fs::write(&path, bytes).unwrap();
    match SafeTensorsFile::open(&path) {
        Ok(f) => panic!("opening succeeded with tensors {:?}", f.names().collect::<Vec<_>>()),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("bad.safetensors"), "message does not name the file: {msg}");
            msg
        }
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "expected `{p}` in: {msg}");
    }
}

const TWO: &str =
    r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}}"#;

#[test]
fn a_valid_handmade_file_opens() {
    // The baseline the bad cases below are variations of.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    std::fs::write(&path, raw_file(TWO, &[0, 0, 128, 63, 0, 0, 0, 64, 1, 2, 3, 4])).unwrap();
    let f = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(f.tensor("a").unwrap().to_f32_vec().unwrap(), vec![1.0, 2.0]);
    assert_eq!(f.bytes("b").unwrap(), &[1, 2, 3, 4]);
}

#[test]
fn short_file_and_header_length_past_end() {
    assert_mentions(&open_err(&[1, 2, 3]), &["3 bytes", "offset 0", "8-byte header length"]);
    assert_mentions(&open_err(&[]), &["0 bytes", "offset 0"]);
    let mut bytes = raw_file(TWO, &[0; 12]);
    bytes[..8].copy_from_slice(&1000u64.to_le_bytes());
    assert_mentions(&open_err(&bytes), &["header length 1000", "offset 0", "past the end of the file", "file is"]);
    bytes[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_mentions(&open_err(&bytes), &["header length 18446744073709551615", "exceeds the limit"]);
}

#[test]
fn header_not_json_or_not_utf8() {
    assert_mentions(&open_err(&raw_file("{\"a\": [1, 2", &[])), &["invalid JSON header", "file offsets 8.."]);
    assert_mentions(&open_err(&raw_file("[1, 2, 3]", &[])), &["invalid JSON header", "expected a JSON object"]);
    let mut bytes = raw_file("{\"ab\":{}}", &[]);
    bytes[10] = 0xff;
    assert_mentions(&open_err(&bytes), &["not valid UTF-8 at offset 10"]);
    assert_mentions(
        &open_err(&raw_file(r#"{"a":{"dtype":"F32","shape":[1]}}"#, &[0; 4])),
        &["tensor `a`", "missing field `data_offsets`"],
    );
    assert_mentions(
        &open_err(&raw_file(r#"{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, &[0; 4])),
        &["tensor `a`", "invalid header entry"],
    );
    assert_mentions(
        &open_err(&raw_file(r#"{"__metadata__":{"k":1}}"#, &[])),
        &["`__metadata__` entry `k`", "must be strings"],
    );
    assert_mentions(&open_err(&raw_file(r#"{"__metadata__":[1]}"#, &[])), &["`__metadata__` is not a JSON object"]);
}

#[test]
fn duplicate_names() {
    let header =
        r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#;
    assert_mentions(&open_err(&raw_file(header, &[1, 2])), &["duplicate key `a`"]);
    let header = r#"{"__metadata__":{"x":"1","x":"2"}}"#;
    assert_mentions(&open_err(&raw_file(header, &[])), &["`__metadata__`", "duplicate key `x`"]);
    let header = r#"{"a":{"dtype":"U8","dtype":"I8","shape":[1],"data_offsets":[0,1]}}"#;
    assert_mentions(&open_err(&raw_file(header, &[1])), &["tensor `a`", "duplicate field `dtype`"]);
}

#[test]
fn unknown_and_unsupported_dtypes() {
    let header = r#"{"w":{"dtype":"F7","shape":[1],"data_offsets":[0,1]}}"#;
    assert_mentions(&open_err(&raw_file(header, &[0])), &["tensor `w`", "unknown dtype `F7`"]);
    let header = r#"{"w":{"dtype":"U64","shape":[1],"data_offsets":[0,8]}}"#;
    assert_mentions(&open_err(&raw_file(header, &[0; 8])), &["tensor `w`", "`U64`", "does not support"]);
}

#[test]
fn offsets_out_of_order_overlapping_or_with_gaps() {
    let header = r#"{"a":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}"#;
    assert_mentions(&open_err(&raw_file(header, &[0; 4])), &["tensor `a`", "[4, 0]", "out of order"]);

    let header =
        r#"{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}}"#;
    let msg = open_err(&raw_file(header, &[0; 6]));
    assert_mentions(&msg, &["tensor `b`", "[2, 6]", "overlap tensor `a`", "data offset 4", "file offset"]);

    let header =
        r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}"#;
    let header_len = raw_file(header, &[]).len() - 8;
    let msg = open_err(&raw_file(header, &[0; 5]));
    assert_mentions(
        &msg,
        &["tensor `b`", "gap of 1 bytes", "after tensor `a`", &format!("file offset {}", 8 + header_len + 2)],
    );

    let header = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let msg = open_err(&raw_file(header, &[0; 5]));
    assert_mentions(&msg, &["3 trailing bytes", "file offset"]);
}

#[test]
fn size_mismatch_and_truncation() {
    let header = r#"{"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    let msg = open_err(&raw_file(header, &[0; 20]));
    assert_mentions(&msg, &["tensor `a`", "shape [2, 3] of F32 needs 24 bytes", "[0, 20] span 20 bytes"]);

    let header = r#"{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#;
    assert_mentions(&open_err(&raw_file(header, &[0; 4])), &["tensor `a`", "overflows"]);

    // A valid file cut short: the last tensor runs past the end.
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.safetensors");
    let t = Tensor::from_vec(vec![1.0f32; 16], [4, 4]).unwrap();
    save(&good, &[("weight", &t)], None).unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let msg = open_err(&bytes[..bytes.len() - 5]);
    assert_mentions(&msg, &["tensor `weight`", "[0, 64]", "past the end of the data section", "truncated"]);
    // Cut inside the header.
    assert_mentions(&open_err(&bytes[..20]), &["past the end of the file", "truncated"]);
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.safetensors");
    save(&path, &[("present", &Tensor::from_vec(vec![1u8], [1]).unwrap())], None).unwrap();
    let f = SafeTensorsFile::open(&path).unwrap();
    let msg = f.info("absent").unwrap_err().to_string();
    assert_mentions(&msg, &["no tensor `absent`", "x.safetensors"]);
    let msg = SafeTensorsFile::open(dir.path().join("nope.safetensors")).unwrap_err().to_string();
    assert_mentions(&msg, &["nope.safetensors"]);
}

/// Opens `bytes` and reads every tensor; must return, never panic.
fn open_and_read_all(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    if let Ok(f) = SafeTensorsFile::open(path) {
        let names: Vec<String> = f.names().map(str::to_string).collect();
        for name in names {
            let info = f.info(&name).unwrap().clone();
            let data = f.bytes(&name).unwrap();
            assert_eq!(data.len(), info.len_bytes());
            let t = f.tensor(&name).unwrap();
            assert_eq!(t.size_in_bytes(), data.len());
        }
    }
}

/// A valid three-tensor file with metadata, built once.
fn valid_file() -> Vec<u8> {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(build_valid_file).clone()
}

fn build_valid_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.safetensors");
    let a = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], [3]).unwrap();
    let b = Tensor::from_f32(&[0.5, -1.0], DType::BF16, [1, 2]).unwrap();
    let c = Tensor::from_vec(vec![7i64], Vec::<usize>::new()).unwrap();
    let meta = [("format".to_string(), "pt".to_string())].into();
    save(&path, &[("a", &a), ("b", &b), ("c", &c)], Some(&meta)).unwrap();
    std::fs::read(&path).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_or_truncated_files_never_panic(
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
        printable in any::<bool>(),
    ) {
        let mut bytes = valid_file();
        for (pos, value) in edits {
            let i = pos % bytes.len();
            // Printable edits stay inside JSON's alphabet, so they reach the header checks.
            bytes[i] = if printable { b" 0123456789[],{}\":AFIUabc_"[value as usize % 26] } else { value };
        }
        if let Some(cut) = cut {
            let len = cut % (bytes.len() + 1);
            bytes.truncate(len);
        }
        let dir = tempfile::tempdir().unwrap();
        open_and_read_all(&dir.path().join("m.safetensors"), &bytes);
    }
}
