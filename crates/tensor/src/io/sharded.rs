//! Hugging Face sharded checkpoints: `model.safetensors.index.json` plus its shards, or a
//! lone `model.safetensors`, served through one name -> tensor API.
//!
//! Index layout (as `transformers` writes it):
//!
//! ```json
//! {"metadata": {"total_size": 123}, "weight_map": {"tensor.name": "model-00001-of-00002.safetensors"}}
//! ```
//!
//! Shard files are resolved relative to the index's directory and must exist when the
//! checkpoint is opened; each shard is memory-mapped the first time one of its tensors is
//! asked for, and at that moment every tensor the index assigns to it must be in it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use serde::Deserialize;

use super::atomic::AtomicFile;
use super::header::TensorInfo;
use super::json::Entries;
use super::read::SafeTensorsFile;
use super::st_err;
use super::write::save;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// File name of the shard index `transformers` writes.
pub const INDEX_FILE_NAME: &str = "model.safetensors.index.json";
/// File name of an unsharded `transformers` checkpoint.
pub const SINGLE_FILE_NAME: &str = "model.safetensors";

struct Shard {
    /// The name as written in the index.
    file_name: String,
    path: PathBuf,
    file: OnceLock<SafeTensorsFile>,
    open_lock: Mutex<()>,
    /// Names the index assigns to this shard.
    names: Vec<String>,
}

#[derive(Deserialize)]
struct IndexFile {
    #[serde(default)]
    metadata: Option<serde_json::Value>,
    weight_map: Entries<String>,
}

/// A checkpoint made of one or more safetensors files, addressed by tensor name.
pub struct ShardedCheckpoint {
    /// The index file, or the single safetensors file.
    source: PathBuf,
    is_index: bool,
    metadata: BTreeMap<String, serde_json::Value>,
    weight_map: BTreeMap<String, usize>,
    shards: Vec<Shard>,
}

impl ShardedCheckpoint {
    /// Opens a checkpoint from a directory (holding `model.safetensors.index.json`,
    /// `model.safetensors`, or exactly one other `*.safetensors.index.json`), from an
    /// index file (`*.json`) or from a single `.safetensors` file.
    pub fn open(path: impl AsRef<Path>) -> Result<ShardedCheckpoint> {
        let path = path.as_ref();
        if path.is_dir() {
            let index = path.join(INDEX_FILE_NAME);
            if index.is_file() {
                return Self::open_index(&index);
            }
            let single = path.join(SINGLE_FILE_NAME);
            if single.is_file() {
                return Self::open_single(&single);
            }
            let entries = std::fs::read_dir(path).map_err(|e| Error::io(path, e))?;
            let mut indexes = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(path, e))?;
                if entry.file_name().to_string_lossy().ends_with(".safetensors.index.json") {
                    indexes.push(entry.path());
                }
            }
            return match indexes.as_slice() {
                [one] => Self::open_index(one),
                [] => Err(st_err(
                    path,
                    format!(
                        "directory holds neither {INDEX_FILE_NAME} nor {SINGLE_FILE_NAME} nor another *.safetensors.index.json"
                    ),
                )),
                many => Err(st_err(
                    path,
                    format!("directory holds {} *.safetensors.index.json files; open one of them directly", many.len()),
                )),
            };
        }
        if path.extension().is_some_and(|e| e == "json") { Self::open_index(path) } else { Self::open_single(path) }
    }

    fn open_single(path: &Path) -> Result<ShardedCheckpoint> {
        let file = SafeTensorsFile::open(path)?;
        let weight_map = file.names().map(|n| (n.to_string(), 0)).collect();
        let metadata = file.metadata().iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
        let shard = Shard {
            file_name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            path: path.to_path_buf(),
            names: file.names().map(str::to_string).collect(),
            file: OnceLock::from(file),
            open_lock: Mutex::new(()),
        };
        Ok(ShardedCheckpoint { source: path.to_path_buf(), is_index: false, metadata, weight_map, shards: vec![shard] })
    }

    fn open_index(index: &Path) -> Result<ShardedCheckpoint> {
        let text = std::fs::read_to_string(index).map_err(|e| Error::io(index, e))?;
        let parsed: IndexFile = serde_json::from_str(&text)
            .map_err(|e| st_err(index, format!("index is not valid JSON of the expected form: {e}")))?;
        let metadata = match parsed.metadata {
            None | Some(serde_json::Value::Null) => BTreeMap::new(),
            Some(serde_json::Value::Object(map)) => map.into_iter().collect(),
            Some(other) => {
                return Err(st_err(index, format!("index `metadata` is {other}, expected a JSON object")));
            }
        };
        let dir = index.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut shard_of_file: HashMap<String, usize> = HashMap::new();
        let mut shards: Vec<Shard> = Vec::new();
        let mut weight_map = BTreeMap::new();
        for (name, file_name) in parsed.weight_map.0 {
            let rel = Path::new(&file_name);
            let safe = !file_name.is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
            if !safe {
                return Err(st_err(
                    index,
                    format!("tensor `{name}` maps to shard `{file_name}`, which is not a plain relative file name"),
                ));
            }
            let i = *shard_of_file.entry(file_name.clone()).or_insert_with(|| {
                shards.push(Shard {
                    path: dir.join(rel),
                    file_name: file_name.clone(),
                    file: OnceLock::new(),
                    open_lock: Mutex::new(()),
                    names: Vec::new(),
                });
                shards.len() - 1
            });
            shards[i].names.push(name.clone());
            weight_map.insert(name, i);
        }
        for shard in &shards {
            if !shard.path.is_file() {
                return Err(st_err(
                    index,
                    format!(
                        "index maps {} tensors (first `{}`) to shard `{}`, but {} does not exist",
                        shard.names.len(),
                        shard.names.first().map(String::as_str).unwrap_or(""),
                        shard.file_name,
                        shard.path.display()
                    ),
                ));
            }
        }
        Ok(ShardedCheckpoint { source: index.to_path_buf(), is_index: true, metadata, weight_map, shards })
    }

    /// The index file, when the checkpoint has one.
    pub fn index_path(&self) -> Option<&Path> {
        self.is_index.then_some(self.source.as_path())
    }

    /// The index's `metadata` object (e.g. `total_size`), or for a single file its
    /// `__metadata__` map as JSON strings.
    pub fn metadata(&self) -> &BTreeMap<String, serde_json::Value> {
        &self.metadata
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.weight_map.len()
    }

    /// Whether the checkpoint holds no tensor.
    pub fn is_empty(&self) -> bool {
        self.weight_map.is_empty()
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.weight_map.keys().map(String::as_str)
    }

    /// Whether the checkpoint holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.weight_map.contains_key(name)
    }

    /// Paths of the shard files, in order of first appearance in the index.
    pub fn shard_paths(&self) -> impl ExactSizeIterator<Item = &Path> + '_ {
        self.shards.iter().map(|s| s.path.as_path())
    }

    fn shard_index(&self, name: &str) -> Result<usize> {
        self.weight_map.get(name).copied().ok_or_else(|| {
            st_err(&self.source, format!("no tensor `{name}` in this checkpoint (it holds {} tensors)", self.len()))
        })
    }

    /// The shard file holding tensor `name`, mapped on first use.
    pub fn shard_of(&self, name: &str) -> Result<&SafeTensorsFile> {
        self.shard(self.shard_index(name)?)
    }

    fn shard(&self, i: usize) -> Result<&SafeTensorsFile> {
        let shard = self.shards.get(i).ok_or_else(|| st_err(&self.source, format!("no shard number {i}")))?;
        if let Some(file) = shard.file.get() {
            return Ok(file);
        }
        let _guard = shard.open_lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = shard.file.get() {
            return Ok(file);
        }
        let file = SafeTensorsFile::open(&shard.path)?;
        if let Some(missing) = shard.names.iter().find(|n| !file.contains(n)) {
            return Err(st_err(
                &self.source,
                format!(
                    "index maps tensor `{missing}` to shard `{}`, but that shard has no such tensor (it holds {} tensors)",
                    shard.file_name,
                    file.len()
                ),
            ));
        }
        let _ = shard.file.set(file);
        shard.file.get().ok_or_else(|| st_err(&shard.path, "shard could not be kept open"))
    }

    /// Maps every shard and checks that each holds the tensors the index assigns to it.
    pub fn validate(&self) -> Result<()> {
        (0..self.shards.len()).try_for_each(|i| self.shard(i).map(|_| ()))
    }

    /// Dtype, shape and byte range (within its shard) of tensor `name`.
    pub fn info(&self, name: &str) -> Result<&TensorInfo> {
        self.shard_of(name)?.info(name)
    }

    /// The raw bytes of tensor `name`, borrowed from its shard's mapping.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        self.shard_of(name)?.bytes(name)
    }

    /// Tensor `name` copied into a CPU [`Tensor`].
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.shard_of(name)?.tensor(name)
    }
}

impl std::fmt::Debug for ShardedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ShardedCheckpoint({}, {} tensors in {} shards)",
            self.source.display(),
            self.len(),
            self.shards.len()
        )
    }
}

/// Writes `tensors` into `dir` as a Hugging Face checkpoint: shards of at most
/// `max_shard_bytes` of tensor data each (a larger tensor gets a shard of its own),
/// filled in the given order and named `model-00001-of-0000N.safetensors`, plus
/// `model.safetensors.index.json` (`metadata.total_size` and a sorted `weight_map`),
/// written last. When everything fits in one shard a single `model.safetensors` is
/// written and no index. `metadata` goes into every shard's `__metadata__`. Each file is
/// written atomically. Returns the paths written, index last.
pub fn save_sharded(
    dir: impl AsRef<Path>,
    tensors: &[(&str, &Tensor)],
    metadata: Option<&BTreeMap<String, String>>,
    max_shard_bytes: usize,
) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    if max_shard_bytes == 0 {
        return Err(st_err(dir, "save_sharded: max_shard_bytes must be positive"));
    }
    let mut seen = HashMap::new();
    for (name, _) in tensors {
        if seen.insert(*name, ()).is_some() {
            return Err(st_err(dir, format!("save_sharded: tensor `{name}` is listed twice")));
        }
    }
    let mut groups: Vec<Vec<(&str, &Tensor)>> = Vec::new();
    let mut current_bytes = 0usize;
    let mut total_size = 0usize;
    for &(name, tensor) in tensors {
        let bytes = tensor.size_in_bytes();
        total_size = total_size.saturating_add(bytes);
        match groups.last_mut() {
            Some(group) if current_bytes.saturating_add(bytes) <= max_shard_bytes => {
                group.push((name, tensor));
                current_bytes += bytes;
            }
            _ => {
                groups.push(vec![(name, tensor)]);
                current_bytes = bytes;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if groups.len() <= 1 {
        let path = dir.join(SINGLE_FILE_NAME);
        save(&path, groups.first().map(Vec::as_slice).unwrap_or(&[]), metadata)?;
        return Ok(vec![path]);
    }

    let count = groups.len();
    let mut written = Vec::with_capacity(count + 1);
    let mut weight_map = serde_json::Map::new();
    for (i, group) in groups.iter().enumerate() {
        let file_name = format!("model-{:05}-of-{count:05}.safetensors", i + 1);
        let path = dir.join(&file_name);
        save(&path, group, metadata)?;
        for (name, _) in group {
            weight_map.insert(name.to_string(), serde_json::Value::String(file_name.clone()));
        }
        written.push(path);
    }
    let mut index_metadata = serde_json::Map::new();
    index_metadata.insert("total_size".into(), serde_json::Value::from(total_size));
    let mut index = serde_json::Map::new();
    index.insert("metadata".into(), serde_json::Value::Object(index_metadata));
    index.insert("weight_map".into(), serde_json::Value::Object(weight_map));
    let index_path = dir.join(INDEX_FILE_NAME);
    let mut text =
        serde_json::to_string_pretty(&index).map_err(|e| st_err(&index_path, format!("cannot encode index: {e}")))?;
    text.push('\n');
    let mut out = AtomicFile::create(&index_path)?;
    out.write_at(0, text.as_bytes())?;
    out.commit()?;
    written.push(index_path);
    Ok(written)
}
