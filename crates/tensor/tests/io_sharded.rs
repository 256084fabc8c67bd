//! Hugging Face sharded checkpoints: `save_sharded` + `ShardedCheckpoint` round trips
//! (two shards + index, and a lone `model.safetensors`), lazy shard mapping, and every
//! index error named: missing shard file, tensor absent from its shard, malformed JSON.

use std::path::Path;

use linattn_tensor::io::{INDEX_FILE_NAME, SINGLE_FILE_NAME, ShardedCheckpoint, save_sharded};
use linattn_tensor::{DType, Tensor};
use serde_json::Value;

/// Four tensors of 64, 48, 32 and 24 bytes.
fn tensors() -> Vec<(String, Tensor)> {
    vec![
        ("model.embed.weight".into(), Tensor::from_vec((0..16).map(|i| i as f32).collect(), [4, 4]).unwrap()),
        ("model.layers.0.q.weight".into(), Tensor::from_f32(&[0.5; 24], DType::BF16, [4, 6]).unwrap()),
        ("model.layers.0.k.weight".into(), Tensor::from_vec(vec![-3i64, 4, 5, 6], [2, 2]).unwrap()),
        ("lm_head.weight".into(), Tensor::from_vec((0..24).map(|i| i as u8).collect(), [24]).unwrap()),
    ]
}

fn refs(owned: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
    owned.iter().map(|(n, t)| (n.as_str(), t)).collect()
}

/// Writes the tensors as two shards (64 + 48 bytes, then 32 + 24) and returns the dir.
fn two_shards() -> (tempfile::TempDir, Vec<(String, Tensor)>) {
    let dir = tempfile::tempdir().unwrap();
    let owned = tensors();
    let meta = [("format".to_string(), "pt".to_string())].into();
    let written = save_sharded(dir.path(), &refs(&owned), Some(&meta), 112).unwrap();
    let names: Vec<String> = written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(names, ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", INDEX_FILE_NAME]);
    (dir, owned)
}

fn read_index(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join(INDEX_FILE_NAME)).unwrap()).unwrap()
}

fn write_index(dir: &Path, index: &Value) {
    std::fs::write(dir.join(INDEX_FILE_NAME), serde_json::to_string(index).unwrap()).unwrap();
}

#[test]
fn two_shard_round_trip() {
    let (dir, owned) = two_shards();
    let index = read_index(dir.path());
    assert_eq!(index["metadata"]["total_size"], 64 + 48 + 32 + 24);
    assert_eq!(index["weight_map"]["model.embed.weight"], "model-00001-of-00002.safetensors");
    assert_eq!(index["weight_map"]["model.layers.0.q.weight"], "model-00001-of-00002.safetensors");
    assert_eq!(index["weight_map"]["lm_head.weight"], "model-00002-of-00002.safetensors");

    for source in [dir.path().to_path_buf(), dir.path().join(INDEX_FILE_NAME)] {
        let ckpt = ShardedCheckpoint::open(&source).unwrap();
        assert_eq!(ckpt.index_path(), Some(dir.path().join(INDEX_FILE_NAME).as_path()));
        assert_eq!(ckpt.len(), 4);
        assert_eq!(ckpt.shard_paths().count(), 2);
        assert_eq!(ckpt.metadata()["total_size"], 168);
        let mut expected: Vec<&str> = owned.iter().map(|(n, _)| n.as_str()).collect();
        expected.sort();
        assert_eq!(ckpt.names().collect::<Vec<_>>(), expected);
        for (name, t) in &owned {
            let info = ckpt.info(name).unwrap();
            assert_eq!((info.dtype, &info.shape), (t.dtype(), t.shape()), "{name}");
            assert_eq!(ckpt.bytes(name).unwrap(), t.as_bytes().unwrap(), "{name}");
            assert_eq!(ckpt.tensor(name).unwrap().as_bytes().unwrap(), t.as_bytes().unwrap(), "{name}");
        }
        let shard = ckpt.shard_of("lm_head.weight").unwrap();
        assert!(shard.path().ends_with("model-00002-of-00002.safetensors"));
        assert_eq!(shard.metadata()["format"], "pt");
        ckpt.validate().unwrap();
        let err = ckpt.tensor("missing.weight").unwrap_err().to_string();
        assert!(err.contains("no tensor `missing.weight`") && err.contains(INDEX_FILE_NAME), "{err}");
    }
}

#[test]
fn single_file_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let owned = tensors();
    let meta = [("format".to_string(), "pt".to_string())].into();
    let written = save_sharded(dir.path(), &refs(&owned), Some(&meta), 1 << 20).unwrap();
    assert_eq!(written, vec![dir.path().join(SINGLE_FILE_NAME)]);
    assert!(!dir.path().join(INDEX_FILE_NAME).exists());

    for source in [dir.path().to_path_buf(), dir.path().join(SINGLE_FILE_NAME)] {
        let ckpt = ShardedCheckpoint::open(&source).unwrap();
        assert_eq!(ckpt.index_path(), None);
        assert_eq!(ckpt.len(), 4);
        assert_eq!(ckpt.metadata()["format"], "pt");
        for (name, t) in &owned {
            assert_eq!(ckpt.tensor(name).unwrap().as_bytes().unwrap(), t.as_bytes().unwrap(), "{name}");
        }
    }
}

#[test]
fn shards_are_mapped_lazily() {
    let (dir, owned) = two_shards();
    // Corrupt the second shard: opening the checkpoint and reading the first still work.
    let second = dir.path().join("model-00002-of-00002.safetensors");
    std::fs::write(&second, b"not a safetensors file").unwrap();
    let ckpt = ShardedCheckpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.tensor("model.embed.weight").unwrap().as_bytes().unwrap(), owned[0].1.as_bytes().unwrap());
    let err = ckpt.tensor("lm_head.weight").unwrap_err().to_string();
    assert!(err.contains("model-00002-of-00002.safetensors") && err.contains("header length"), "{err}");
    assert!(ckpt.validate().is_err());
}

#[test]
fn missing_shard_file_is_named() {
    let (dir, _) = two_shards();
    std::fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    let err = ShardedCheckpoint::open(dir.path()).unwrap_err().to_string();
    for part in [INDEX_FILE_NAME, "shard `model-00002-of-00002.safetensors`", "does not exist", "2 tensors"] {
        assert!(err.contains(part), "expected `{part}` in: {err}");
    }
}

#[test]
fn tensor_missing_from_its_shard_is_named() {
    let (dir, _) = two_shards();
    let mut index = read_index(dir.path());
    index["weight_map"]["model.ghost.weight"] = Value::from("model-00001-of-00002.safetensors");
    write_index(dir.path(), &index);
    let ckpt = ShardedCheckpoint::open(dir.path()).unwrap();
    assert!(ckpt.contains("model.ghost.weight"));
    let err = ckpt.tensor("model.ghost.weight").unwrap_err().to_string();
    for part in [INDEX_FILE_NAME, "`model.ghost.weight`", "shard `model-00001-of-00002.safetensors`", "no such tensor"]
    {
        assert!(err.contains(part), "expected `{part}` in: {err}");
    }
    let err = ckpt.validate().unwrap_err().to_string();
    assert!(err.contains("`model.ghost.weight`"), "{err}");
    // The other shard is consistent and still serves its tensors.
    assert!(ckpt.tensor("lm_head.weight").is_ok());
}

#[test]
fn malformed_indexes_are_named() {
    let (dir, _) = two_shards();
    let path = dir.path().join(INDEX_FILE_NAME);
    let good = std::fs::read_to_string(&path).unwrap();

    let cases: [(&str, &[&str]); 6] = [
        (&good[..good.len() / 2], &["not valid JSON", "line"]),
        (r#"{"metadata": {}}"#, &["missing field `weight_map`"]),
        (
            r#"{"weight_map": {"a": "model-00001-of-00002.safetensors", "a": "model-00002-of-00002.safetensors"}}"#,
            &["duplicate key `a`"],
        ),
        (r#"{"weight_map": {"a": 3}}"#, &["not valid JSON", "invalid type"]),
        (r#"{"weight_map": {"a": "../model-00001-of-00002.safetensors"}}"#, &["`a`", "not a plain relative file name"]),
        (r#"{"metadata": [1], "weight_map": {}}"#, &["`metadata`", "expected a JSON object"]),
    ];
    for (text, parts) in cases {
        std::fs::write(&path, text).unwrap();
        let err = ShardedCheckpoint::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains(INDEX_FILE_NAME), "message does not name the index: {err}");
        for part in parts {
            assert!(err.contains(part), "expected `{part}` in: {err}");
        }
    }

    let empty = tempfile::tempdir().unwrap();
    let err = ShardedCheckpoint::open(empty.path()).unwrap_err().to_string();
    assert!(err.contains(INDEX_FILE_NAME) && err.contains(SINGLE_FILE_NAME), "{err}");
    let err = save_sharded(empty.path(), &[], None, 0).unwrap_err().to_string();
    assert!(err.contains("max_shard_bytes"), "{err}");
}
