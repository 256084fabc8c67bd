//! Round trips through `save` / `SafeTensorsWriter` and `SafeTensorsFile`: every dtype
//! safetensors can store, scalar and empty shapes, metadata, streaming writes in any
//! order, and atomicity (a failed write leaves the old file and no temporary behind).

use std::collections::BTreeMap;
use std::path::Path;

use linattn_tensor::io::{SafeTensorsFile, SafeTensorsWriter, TensorSpec, save};
use linattn_tensor::{DType, Tensor};

const DENSE: [DType; 13] = [
    DType::F32,
    DType::F16,
    DType::BF16,
    DType::F64,
    DType::U8,
    DType::I8,
    DType::U16,
    DType::I16,
    DType::U32,
    DType::I32,
    DType::I64,
    DType::F8E4M3,
    DType::F8E5M2,
];

/// A tensor whose bytes follow a pattern that depends on `seed`, so tensors differ.
fn patterned(dtype: DType, dims: &[usize], seed: usize) -> Tensor {
    let numel: usize = dims.iter().product();
    let bytes: Vec<u8> = (0..numel * dtype.block_bytes()).map(|i| (i * 31 + seed * 17 + 7) as u8).collect();
    Tensor::from_bytes(&bytes, dtype, dims.to_vec()).unwrap()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn every_dtype_and_shape_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("all.safetensors");
    let shapes: [&[usize]; 5] = [&[], &[0], &[3, 0, 2], &[7], &[2, 3, 5]];
    let mut owned = Vec::new();
    for (d, dtype) in DENSE.into_iter().enumerate() {
        for (s, dims) in shapes.iter().enumerate() {
            owned.push((format!("{dtype}.{s}"), patterned(dtype, dims, d * 10 + s)));
        }
    }
    let tensors: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save(&path, &tensors, None).unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.len(), owned.len());
    assert!(file.metadata().is_empty());
    assert_eq!(file.header_len() % 8, 0, "header must be padded to 8 bytes");
    for (name, original) in &owned {
        let info = file.info(name).unwrap();
        assert_eq!(info.dtype, original.dtype(), "{name}");
        assert_eq!(info.shape, *original.shape(), "{name}");
        assert_eq!(info.len_bytes(), original.size_in_bytes(), "{name}");
        assert_eq!(file.bytes(name).unwrap(), original.as_bytes().unwrap(), "{name}");
        let back = file.tensor(name).unwrap();
        assert_eq!((back.dtype(), back.shape()), (original.dtype(), original.shape()), "{name}");
        assert_eq!(back.as_bytes().unwrap(), original.as_bytes().unwrap(), "{name}");
    }
    // Typed views of the copies work (the copy is aligned even where the file is not).
    let f64_back = file.tensor("f64.4").unwrap();
    assert_eq!(f64_back.as_slice::<f64>().unwrap().len(), 30);
}

#[test]
fn typed_values_and_metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let a = Tensor::from_vec(vec![1.5f32, -0.0, f32::INFINITY, 3.25e-39], [2, 2]).unwrap();
    let b = Tensor::from_f32(&[1.0, 0.1, -65504.0], DType::BF16, [3]).unwrap();
    let c = Tensor::from_vec(vec![i64::MIN, i64::MAX], [2]).unwrap();
    let metadata: BTreeMap<String, String> = [("format", "pt"), ("quote\"key", "line\nbreak \u{2713}")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    save(&path, &[("a", &a), ("b", &b), ("c", &c)], Some(&metadata)).unwrap();

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.metadata(), &metadata);
    let a2 = file.tensor("a").unwrap();
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a2.as_slice::<f32>().unwrap()), bits(a.as_slice::<f32>().unwrap()));
    assert_eq!(file.tensor("b").unwrap().to_f32_vec().unwrap(), b.to_f32_vec().unwrap());
    assert_eq!(file.tensor("c").unwrap().to_vec::<i64>().unwrap(), vec![i64::MIN, i64::MAX]);
    // Reference order: descending alignment (I64 before F32 before BF16), then name.
    assert_eq!(file.names().collect::<Vec<_>>(), vec!["c", "a", "b"]);
    assert_eq!(file.info("c").unwrap().data_offsets, 0..16);
    assert_eq!(file.info("c").unwrap().file_range.start, 8 + file.header_len());
}

#[test]
fn empty_file_and_empty_metadata_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.safetensors");
    save(&path, &[], Some(&BTreeMap::new())).unwrap();
    let file = SafeTensorsFile::open(&path).unwrap();
    assert!(file.is_empty());
    assert_eq!(file.file_len(), 8 + file.header_len());
    let err = file.tensor("nope").unwrap_err().to_string();
    assert!(err.contains("no tensor `nope`") && err.contains("empty.safetensors"), "{err}");
}

#[test]
fn streaming_writer_accepts_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stream.safetensors");
    let owned: Vec<(String, Tensor)> =
        (0..6).map(|i| (format!("layer.{i}.w"), patterned(DENSE[i * 2], &[i + 1, 3], i))).collect();
    let specs: Vec<TensorSpec> = owned.iter().map(|(n, t)| TensorSpec::of(n.as_str(), t)).collect();
    let mut writer = SafeTensorsWriter::create(&path, &specs, None).unwrap();
    for (name, tensor) in owned.iter().rev() {
        writer.write(name, tensor).unwrap();
    }
    let expected_len = writer.file_len();
    writer.finish().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len() as usize, expected_len);

    // Same bytes as `save` of the same tensors.
    let saved = dir.path().join("saved.safetensors");
    let refs: Vec<(&str, &Tensor)> = owned.iter().map(|(n, t)| (n.as_str(), t)).collect();
    save(&saved, &refs, None).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), std::fs::read(&saved).unwrap());
    assert_eq!(dir_entries(dir.path()), vec!["saved.safetensors", "stream.safetensors"]);
}

#[test]
fn streaming_writer_rejects_misuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    let t = Tensor::from_vec(vec![1.0f32; 6], [2, 3]).unwrap();
    let specs = [TensorSpec::new("x", DType::F32, [2, 3]), TensorSpec::new("y", DType::F16, [4])];
    let mut writer = SafeTensorsWriter::create(&path, &specs, None).unwrap();

    let err = writer.write("y", &t).unwrap_err().to_string();
    assert!(err.contains("`y`") && err.contains("f16 [4]") && err.contains("f32 [2, 3]"), "{err}");
    let err = writer.write("z", &t).unwrap_err().to_string();
    assert!(err.contains("`z`") && err.contains("not declared"), "{err}");
    let err = writer.write_bytes("y", &[0u8; 7]).unwrap_err().to_string();
    assert!(err.contains("needs 8 bytes") && err.contains("7"), "{err}");
    writer.write("x", &t).unwrap();
    let err = writer.write("x", &t).unwrap_err().to_string();
    assert!(err.contains("`x`") && err.contains("already written"), "{err}");

    let err = writer.finish().unwrap_err().to_string();
    assert!(err.contains("never written") && err.contains("`y`"), "{err}");
    assert!(!path.exists(), "an unfinished writer must not create the file");
    assert!(dir_entries(dir.path()).is_empty(), "temporary file left behind: {:?}", dir_entries(dir.path()));
}

#[test]
fn failed_save_keeps_the_old_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keep.safetensors");
    let good = Tensor::from_vec(vec![7u8, 8, 9], [3]).unwrap();
    save(&path, &[("good", &good)], None).unwrap();
    let before = std::fs::read(&path).unwrap();

    let quant = Tensor::zeros([1, 32], DType::Q4_0, &linattn_tensor::Device::Cpu).unwrap();
    let err = save(&path, &[("good", &good), ("q", &quant)], None).unwrap_err().to_string();
    assert!(err.contains("`q`") && err.contains("q4_0") && err.contains("keep.safetensors"), "{err}");
    let err = save(&path, &[("a", &good), ("a", &good)], None).unwrap_err().to_string();
    assert!(err.contains("`a` is listed twice"), "{err}");
    let err = save(&path, &[("__metadata__", &good)], None).unwrap_err().to_string();
    assert!(err.contains("reserved"), "{err}");

    // A writer dropped half-way leaves the old file intact and no temporary file.
    let mut writer = SafeTensorsWriter::create(&path, &[TensorSpec::of("other", &good)], None).unwrap();
    assert_eq!(dir_entries(dir.path()).len(), 2, "the temporary file sits beside the target");
    writer.write_bytes("other", &[1, 2, 3]).unwrap();
    drop(writer);
    assert_eq!(std::fs::read(&path).unwrap(), before);
    assert_eq!(dir_entries(dir.path()), vec!["keep.safetensors"]);

    // Overwriting an open (mapped) file replaces it without disturbing the mapping.
    let open = SafeTensorsFile::open(&path).unwrap();
    let new = Tensor::from_vec(vec![1u8, 2, 3, 4], [4]).unwrap();
    save(&path, &[("good", &new)], None).unwrap();
    assert_eq!(open.bytes("good").unwrap(), &[7, 8, 9]);
    assert_eq!(SafeTensorsFile::open(&path).unwrap().bytes("good").unwrap(), &[1, 2, 3, 4]);
}
