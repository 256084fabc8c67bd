//! ptxas resource report: registers, shared memory, stack and spills per kernel.
//!
//! Each PTX is assembled with `ptxas -v -arch=<sm>` into a throwaway cubin. The verbose
//! report is parsed per entry function; any ptxas error, and any spill in a kernel not
//! listed in `kernels/cuda/allow-spills.txt` (`<entry> <reason>` per line), fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Resources of one entry function on one target.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelResources {
    pub registers: u32,
    pub shared_bytes: u32,
    pub stack_bytes: u32,
    pub spill_stores: u32,
    pub spill_loads: u32,
}

/// The report of one ptxas run.
pub struct PtxasReport {
    pub ptx: String,
    pub sm: String,
    pub kernels: BTreeMap<String, KernelResources>,
    pub warnings: Vec<String>,
}

/// Number just before `unit` in `text` (e.g. `12 bytes spill stores`).
fn number_before(text: &str, unit: &str) -> Option<u32> {
    let at = text.find(unit)?;
    text[..at].split(|c: char| !c.is_ascii_digit()).rfind(|s| !s.is_empty())?.parse().ok()
}

/// Parses `ptxas -v` output.
pub fn parse_report(output: &str) -> (BTreeMap<String, KernelResources>, Vec<String>) {
    let mut kernels: BTreeMap<String, KernelResources> = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut current: Option<String> = None;
    for line in output.lines() {
        if line.contains("warning") {
            warnings.push(line.trim().to_string());
        }
        let quoted = line.split('\'').nth(1).map(str::to_string);
        if line.contains("Compiling entry function") {
            current = quoted;
            if let Some(name) = &current {
                kernels.entry(name.clone()).or_default();
            }
            continue;
        }
        if line.contains("Function properties for") {
            // Also printed for non-entry device functions; only entries are tracked.
            let name = line.rsplit(' ').next().map(|s| s.trim().to_string());
            current = name.filter(|n| kernels.contains_key(n));
            continue;
        }
        let Some(name) = &current else { continue };
        let entry = kernels.entry(name.clone()).or_default();
        if line.contains("spill stores") {
            entry.stack_bytes = number_before(line, "bytes stack frame").unwrap_or(0);
            entry.spill_stores = number_before(line, "bytes spill stores").unwrap_or(0);
            entry.spill_loads = number_before(line, "bytes spill loads").unwrap_or(0);
        } else if line.contains("Used") && line.contains("registers") {
            entry.registers = number_before(line, "registers").unwrap_or(0);
            entry.shared_bytes = number_before(line, "bytes smem").unwrap_or(0);
        }
    }
    (kernels, warnings)
}

/// Runs ptxas on `ptx_file` for `sm`; errors carry ptxas's own message.
pub fn assemble(
    ptxas: &Path,
    ptx_file: &Path,
    ptx_name: &str,
    sm: &str,
    scratch: &Path,
) -> Result<PtxasReport, String> {
    let cubin: PathBuf = scratch.join(format!("{}.{sm}.cubin", ptx_name.replace('/', "__")));
    let output = Command::new(ptxas)
        .arg(format!("-arch={sm}"))
        .arg("-v")
        .arg("-o")
        .arg(&cubin)
        .arg(ptx_file)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", ptxas.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    let _ = std::fs::remove_file(&cubin);
    if !output.status.success() || text.contains("ptxas error") || text.contains("ptxas fatal") {
        return Err(format!("ptxas -arch={sm} {ptx_name} failed ({}):\n{text}", output.status));
    }
    let (kernels, warnings) = parse_report(&text);
    Ok(PtxasReport { ptx: ptx_name.to_string(), sm: sm.to_string(), kernels, warnings })
}

/// Reads the spill allowlist: `entry_name reason...` per line, `#` comments.
pub fn read_allowlist(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(BTreeMap::new()) };
    let mut allowed = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(char::is_whitespace) {
            Some((name, reason)) if !reason.trim().is_empty() => {
                allowed.insert(name.to_string(), reason.trim().to_string());
            }
            _ => {
                return Err(format!(
                    "{}:{}: `{line}` needs a reason after the kernel name",
                    path.display(),
                    number + 1
                ));
            }
        }
    }
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_verbose_output() {
        let out = "ptxas info    : 0 bytes gmem\n\
ptxas info    : Compiling entry function 'matmul_tiled_f32' for 'sm_80'\n\
ptxas info    : Function properties for matmul_tiled_f32\n\
    8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n\
ptxas info    : Used 64 registers, 8320 bytes smem, 400 bytes cmem[0]\n\
ptxas info    : Compiling entry function 'add_contig_f32' for 'sm_80'\n\
ptxas info    : Function properties for add_contig_f32\n\
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n\
ptxas info    : Used 10 registers, 380 bytes cmem[0]\n";
        let (kernels, warnings) = parse_report(out);
        assert!(warnings.is_empty());
        assert_eq!(
            kernels["matmul_tiled_f32"],
            KernelResources { registers: 64, shared_bytes: 8320, stack_bytes: 8, spill_stores: 4, spill_loads: 12 }
        );
        assert_eq!(kernels["add_contig_f32"].registers, 10);
        assert_eq!(kernels["add_contig_f32"].spill_stores, 0);
    }
}
