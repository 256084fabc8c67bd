//! Peers measured in the same run: Python programs (PyTorch, flash-linear-attention)
//! under `benches/peers/` that time the same op and shape and print one JSON object
//! per line with at least `name` and `ms`. A missing Python or package is reported as
//! the peer's absence with the reason, never as a number.

use std::path::{Path, PathBuf};
use std::process::Command;

use linattn_tensor::{Error, Result};

/// The Python interpreter: `$LINATTN_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("LINATTN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// The folder holding peer scripts: `$LINATTN_PEERS`, else `benches/peers` beside the
/// current directory or the executable's ancestors.
pub fn peers_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LINATTN_PEERS") {
        return Some(PathBuf::from(dir));
    }
    let mut candidates = vec![PathBuf::from("benches/peers")];
    if let Ok(exe) = std::env::current_exe() {
        for ancestor in exe.ancestors().skip(1).take(4) {
            candidates.push(ancestor.join("benches/peers"));
        }
    }
    candidates.into_iter().find(|p| p.is_dir())
}

/// Runs `script` (relative to the peers folder) with `args`; returns the JSON objects it
/// printed, or an error naming why the peer could not run.
pub fn run_peer(script: &str, args: &[String]) -> Result<Vec<serde_json::Value>> {
    let dir =
        peers_dir().ok_or_else(|| Error::invalid("peer scripts not found (set LINATTN_PEERS to benches/peers)"))?;
    run_script(&dir.join(script), args)
}

fn run_script(path: &Path, args: &[String]) -> Result<Vec<serde_json::Value>> {
    let out = Command::new(python())
        .arg(path)
        .args(args)
        .output()
        .map_err(|e| Error::invalid(format!("could not start {} {}: {e}", python(), path.display())))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no output");
        return Err(Error::invalid(format!("peer {} failed ({}): {last}", path.display(), out.status)));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|l| {
            serde_json::from_str(l)
                .map_err(|e| Error::invalid(format!("peer {} printed bad JSON: {e}", path.display())))
        })
        .collect()
}
