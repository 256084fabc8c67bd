//! Kernel sources, their outputs and the MANIFEST.
//!
//! Sources are `kernels/cuda/<crate>/*.cu` (every folder but `common/`). Each gets
//! `kernels/ptx/<crate>/<stem>.ptx` for compute_80; a source whose first lines carry the
//! marker `// linattn: arch compute_90a` also gets `<stem>.sm90a.ptx`. Quoted includes
//! (`#include "x.cuh"`) are resolved next to the including file, then in
//! `kernels/cuda/common/`, recursively; each one's sha256 goes into the MANIFEST so a
//! header edit marks every dependent PTX stale.
//!
//! MANIFEST format (text, sorted by PTX path, paths relative to `kernels/cuda` or
//! `kernels/ptx`):
//! ```text
//! nvrtc 12.9
//!
//! ptx tensor/matmul.ptx
//!   arch compute_80
//!   options --gpu-architecture=compute_80 --std=c++17 ...
//!   source tensor/matmul.cu <sha256>
//!   header common/linattn_common.cuh <sha256>
//!   ptx-sha256 <sha256>
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The marker that asks for an extra compute_90a PTX.
pub const ARCH_90A_MARKER: &str = "// linattn: arch compute_90a";
/// How many leading lines are searched for the marker.
const MARKER_LINES: usize = 20;

/// One PTX file to produce from one source.
#[derive(Clone, Debug)]
pub struct KernelOutput {
    /// Source path relative to `kernels/cuda` (e.g. `tensor/matmul.cu`).
    pub source: String,
    /// PTX path relative to `kernels/ptx` (e.g. `tensor/matmul.ptx`).
    pub ptx: String,
    /// `compute_80` or `compute_90a`.
    pub arch: &'static str,
}

impl KernelOutput {
    /// The ptxas targets this PTX is assembled for.
    pub fn sm_targets(&self) -> &'static [&'static str] {
        match self.arch {
            "compute_90a" => &["sm_90a"],
            _ => &["sm_80", "sm_90"],
        }
    }

    /// NVRTC options, with include folders given relative to the workspace root
    /// (`nvrtc_options` makes them absolute for the actual call).
    pub fn manifest_options(&self) -> Vec<String> {
        let source_dir = Path::new(&self.source).parent().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
        vec![
            format!("--gpu-architecture={}", self.arch),
            "--std=c++17".into(),
            format!("--include-path=kernels/cuda/{source_dir}"),
            "--include-path=kernels/cuda/common".into(),
        ]
    }

    /// The options passed to NVRTC (include folders absolute).
    pub fn nvrtc_options(&self, root: &Path) -> Vec<String> {
        self.manifest_options()
            .into_iter()
            .map(|o| match o.strip_prefix("--include-path=") {
                Some(rel) => format!("--include-path={}", root.join(rel).display()),
                None => o,
            })
            .collect()
    }
}

pub fn cuda_dir(root: &Path) -> PathBuf {
    root.join("kernels/cuda")
}

pub fn ptx_dir(root: &Path) -> PathBuf {
    root.join("kernels/ptx")
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("read {}: {e}", path.display()))
}

fn rel(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().replace('\\', "/")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Every kernel source and its outputs, sorted by PTX path.
pub fn discover(root: &Path) -> Result<Vec<KernelOutput>, String> {
    let cuda = cuda_dir(root);
    let mut outputs = Vec::new();
    let crates = std::fs::read_dir(&cuda).map_err(|e| format!("read {}: {e}", cuda.display()))?;
    for entry in crates {
        let dir = entry.map_err(|e| format!("read {}: {e}", cuda.display()))?.path();
        if !dir.is_dir() || dir.file_name().is_some_and(|n| n == "common") {
            continue;
        }
        for file in std::fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))? {
            let path = file.map_err(|e| format!("read {}: {e}", dir.display()))?.path();
            if path.extension().is_none_or(|e| e != "cu") {
                continue;
            }
            let source = rel(&cuda, &path);
            let stem = source.trim_end_matches(".cu").to_string();
            outputs.push(KernelOutput { source: source.clone(), ptx: format!("{stem}.ptx"), arch: "compute_80" });
            let text = read(&path)?;
            if text.lines().take(MARKER_LINES).any(|l| l.trim() == ARCH_90A_MARKER) {
                outputs.push(KernelOutput { source, ptx: format!("{stem}.sm90a.ptx"), arch: "compute_90a" });
            }
        }
    }
    outputs.sort_by(|a, b| a.ptx.cmp(&b.ptx));
    Ok(outputs)
}

/// Every `.ptx` file under `kernels/ptx`, relative to it.
pub fn committed_ptx(root: &Path) -> Result<BTreeSet<String>, String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) -> Result<(), String> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
        for entry in entries {
            let path = entry.map_err(|e| format!("read {}: {e}", dir.display()))?.path();
            if path.is_dir() {
                walk(base, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "ptx") {
                out.insert(rel(base, &path));
            }
        }
        Ok(())
    }
    let base = ptx_dir(root);
    let mut out = BTreeSet::new();
    walk(&base, &base, &mut out)?;
    Ok(out)
}

/// The quoted includes of `source` (relative to `kernels/cuda`), transitively, sorted.
pub fn headers_of(root: &Path, source: &str) -> Result<Vec<String>, String> {
    let cuda = cuda_dir(root);
    let mut seen = BTreeSet::new();
    let mut stack = vec![cuda.join(source)];
    while let Some(file) = stack.pop() {
        for line in read(&file)?.lines() {
            let Some(rest) = line.trim_start().strip_prefix("#include") else { continue };
            let Some(name) = rest.trim().strip_prefix('"').and_then(|r| r.split('"').next()) else { continue };
            let beside = file.parent().map(|d| d.join(name));
            let resolved = beside
                .filter(|p| p.is_file())
                .or_else(|| Some(cuda.join("common").join(name)).filter(|p| p.is_file()))
                .ok_or_else(|| format!("{}: cannot resolve #include \"{name}\"", rel(&cuda, &file)))?;
            let resolved = resolved.canonicalize().map_err(|e| format!("{}: {e}", resolved.display()))?;
            let canon_cuda = cuda.canonicalize().map_err(|e| format!("{}: {e}", cuda.display()))?;
            let name = rel(&canon_cuda, &resolved);
            if seen.insert(name) {
                stack.push(resolved);
            }
        }
    }
    Ok(seen.into_iter().collect())
}

/// One MANIFEST block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    pub arch: String,
    pub options: String,
    pub source: (String, String),
    pub headers: Vec<(String, String)>,
    pub ptx_sha256: String,
}

/// The parsed MANIFEST: NVRTC version and one entry per PTX path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub nvrtc: String,
    pub entries: BTreeMap<String, ManifestEntry>,
}

/// The entry for `output` from the current sources and the given PTX text.
pub fn entry_for(root: &Path, output: &KernelOutput, ptx: &[u8]) -> Result<ManifestEntry, String> {
    let cuda = cuda_dir(root);
    let source_hash = sha256_hex(read(&cuda.join(&output.source))?.as_bytes());
    let headers = headers_of(root, &output.source)?
        .into_iter()
        .map(|h| Ok((h.clone(), sha256_hex(read(&cuda.join(&h))?.as_bytes()))))
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ManifestEntry {
        arch: output.arch.to_string(),
        options: output.manifest_options().join(" "),
        source: (output.source.clone(), source_hash),
        headers,
        ptx_sha256: sha256_hex(ptx),
    })
}

impl Manifest {
    pub fn render(&self) -> String {
        let mut text = String::from(
            "# Generated by `cargo xtask kernels`; checked by `cargo xtask kernels --check`. Do not edit.\n\
             # Per PTX file: target arch, NVRTC options, sha256 of the source and of every header it\n\
             # includes, and sha256 of the PTX itself.\n",
        );
        text.push_str(&format!("nvrtc {}\n", self.nvrtc));
        for (ptx, e) in &self.entries {
            text.push_str(&format!("\nptx {ptx}\n  arch {}\n  options {}\n", e.arch, e.options));
            text.push_str(&format!("  source {} {}\n", e.source.0, e.source.1));
            for (h, sha) in &e.headers {
                text.push_str(&format!("  header {h} {sha}\n"));
            }
            text.push_str(&format!("  ptx-sha256 {}\n", e.ptx_sha256));
        }
        text
    }

    pub fn parse(text: &str) -> Result<Manifest, String> {
        let mut manifest = Manifest::default();
        let mut current: Option<(String, ManifestEntry)> = None;
        let empty = || ManifestEntry {
            arch: String::new(),
            options: String::new(),
            source: Default::default(),
            headers: Vec::new(),
            ptx_sha256: String::new(),
        };
        for (number, line) in text.lines().enumerate() {
            let bad = || format!("MANIFEST line {}: cannot parse `{line}`", number + 1);
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, value) = trimmed.split_once(' ').ok_or_else(bad)?;
            match key {
                "nvrtc" => manifest.nvrtc = value.to_string(),
                "ptx" => {
                    if let Some((path, entry)) = current.take() {
                        manifest.entries.insert(path, entry);
                    }
                    current = Some((value.to_string(), empty()));
                }
                _ => {
                    let (_, entry) = current.as_mut().ok_or_else(bad)?;
                    match key {
                        "arch" => entry.arch = value.to_string(),
                        "options" => entry.options = value.to_string(),
                        "source" | "header" => {
                            let (path, sha) = value.rsplit_once(' ').ok_or_else(bad)?;
                            let pair = (path.to_string(), sha.to_string());
                            if key == "source" { entry.source = pair } else { entry.headers.push(pair) }
                        }
                        "ptx-sha256" => entry.ptx_sha256 = value.to_string(),
                        _ => return Err(bad()),
                    }
                }
            }
        }
        if let Some((path, entry)) = current.take() {
            manifest.entries.insert(path, entry);
        }
        Ok(manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips() {
        let mut m = Manifest { nvrtc: "12.9".into(), entries: BTreeMap::new() };
        m.entries.insert(
            "tensor/a.ptx".into(),
            ManifestEntry {
                arch: "compute_80".into(),
                options: "--std=c++17 --include-path=kernels/cuda/common".into(),
                source: ("tensor/a.cu".into(), "ab".repeat(32)),
                headers: vec![("common/x.cuh".into(), "cd".repeat(32))],
                ptx_sha256: "ef".repeat(32),
            },
        );
        assert_eq!(Manifest::parse(&m.render()).unwrap(), m);
        assert!(Manifest::parse("ptx a.ptx\n  bogus 1\n").is_err());
        assert!(Manifest::parse("  arch compute_80\n").is_err());
    }
}
