//! `cargo xtask wgsl`: validates every WGSL shader under `kernels/wgsl/` with naga.
//!
//! Each `kernels/wgsl/**/*.wgsl` file (all crates: `tensor/`, `attn/`, `quant/`,
//! `adapters/`, and the shared `common/` helpers) is expanded the way the runtime
//! (`linattn_tensor::wgpu`) expands it: a line `//#import common/<file>.wgsl` is replaced
//! by that file's text. The expanded source is parsed and validated with
//! `ValidationFlags::all()` and the capabilities the runtime requests from the device
//! (`WGSL_CAPABILITIES`: f16, subgroups, subgroup barriers). Override constants keep their
//! declared defaults, which is the variant the runtime compiles when a caller passes none.
//!
//! Output: one line per file with its entry points (stage and workgroup size); on failure
//! the file and naga's error with its source location, and a non-zero exit.
//! The same check runs as the unit test `every_wgsl_kernel_validates`.

use std::path::{Path, PathBuf};

use naga::valid::{Capabilities, ValidationFlags, Validator};

/// The directive that pastes a shared file in place (`//#import common/elements.wgsl`).
pub const IMPORT_DIRECTIVE: &str = "//#import ";

/// The naga capabilities matching the device features the runtime requests
/// (`SHADER_F16`, `SUBGROUP`, `SUBGROUP_BARRIER`).
pub const WGSL_CAPABILITIES: Capabilities =
    Capabilities::SHADER_FLOAT16.union(Capabilities::SUBGROUP).union(Capabilities::SUBGROUP_BARRIER);

/// The outcome of validating one shader file.
#[derive(Debug)]
pub struct ShaderReport {
    /// Path relative to `kernels/wgsl/`, with `/` separators.
    pub name: String,
    /// Entry points as `name (stage, workgroup x,y,z)`, or the error text.
    pub result: Result<Vec<String>, String>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(unknown) = args.first() {
        return Err(format!("unexpected argument `{unknown}`; usage: cargo xtask wgsl"));
    }
    let wgsl_root = crate::workspace_root().join("kernels").join("wgsl");
    let reports = validate_tree(&wgsl_root)?;
    let mut failures = 0;
    for report in &reports {
        match &report.result {
            Ok(entries) if entries.is_empty() => println!("ok   {}: (no entry points: shared helpers)", report.name),
            Ok(entries) => println!("ok   {}: {}", report.name, entries.join(", ")),
            Err(message) => {
                failures += 1;
                println!("FAIL {}:\n{message}", report.name);
            }
        }
    }
    if failures > 0 {
        return Err(format!("{failures} of {} WGSL files failed validation", reports.len()));
    }
    println!("{} WGSL files validated", reports.len());
    Ok(())
}

/// Validates every `.wgsl` file below `wgsl_root` (sorted by path). Errs only when the
/// tree cannot be read; per-file failures are in the reports.
pub fn validate_tree(wgsl_root: &Path) -> Result<Vec<ShaderReport>, String> {
    let mut files = Vec::new();
    collect_wgsl_files(wgsl_root, &mut files)?;
    files.sort();
    let mut reports = Vec::with_capacity(files.len());
    for path in files {
        let name = path
            .strip_prefix(wgsl_root)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/");
        let result = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|source| {
                validate_source(&name, &source, |import| {
                    std::fs::read_to_string(wgsl_root.join(import))
                        .map_err(|e| format!("cannot read {}: {e}", wgsl_root.join(import).display()))
                })
            });
        reports.push(ShaderReport { name, result });
    }
    Ok(reports)
}

fn collect_wgsl_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?.path();
        if path.is_dir() {
            collect_wgsl_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "wgsl") {
            out.push(path);
        }
    }
    Ok(())
}

/// Expands `//#import <path>` lines with `read_import(path)` (one level: imported files
/// may not import), as the runtime does.
pub fn expand_imports(
    name: &str,
    source: &str,
    mut read_import: impl FnMut(&str) -> Result<String, String>,
) -> Result<String, String> {
    let mut expanded = String::with_capacity(source.len());
    for (line_no, line) in source.lines().enumerate() {
        match line.trim().strip_prefix(IMPORT_DIRECTIVE) {
            Some(import) => {
                let import = import.trim();
                let text =
                    read_import(import).map_err(|e| format!("{name}:{}: import `{import}`: {e}", line_no + 1))?;
                if text.lines().any(|l| l.trim().starts_with(IMPORT_DIRECTIVE)) {
                    return Err(format!("{name}:{}: imported `{import}` imports again (one level only)", line_no + 1));
                }
                expanded.push_str(&text);
                if !text.ends_with('\n') {
                    expanded.push('\n');
                }
            }
            None => {
                expanded.push_str(line);
                expanded.push('\n');
            }
        }
    }
    Ok(expanded)
}

/// Expands imports, parses and validates one shader; returns its entry points.
pub fn validate_source(
    name: &str,
    source: &str,
    read_import: impl FnMut(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    let expanded = expand_imports(name, source, read_import)?;
    let module = naga::front::wgsl::parse_str(&expanded).map_err(|e| {
        format!(
            "parse error (line numbers are in the expanded source):\n{}",
            e.emit_to_string_with_path(&expanded, name)
        )
    })?;
    Validator::new(ValidationFlags::all(), WGSL_CAPABILITIES).validate(&module).map_err(|e| {
        format!(
            "validation error (line numbers are in the expanded source):\n{}",
            e.emit_to_string_with_path(&expanded, name)
        )
    })?;
    Ok(module
        .entry_points
        .iter()
        .map(|ep| {
            let [x, y, z] = ep.workgroup_size;
            format!("{} ({:?}, workgroup {x}x{y}x{z})", ep.name, ep.stage)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wgsl_kernel_validates() {
        let root = crate::workspace_root().join("kernels").join("wgsl");
        let reports = validate_tree(&root).expect("kernels/wgsl is readable");
        assert!(
            reports.iter().any(|r| r.name == "tensor/matmul.wgsl"),
            "expected the tensor kernels under {}",
            root.display()
        );
        let failures: Vec<String> =
            reports.iter().filter_map(|r| r.result.as_ref().err().map(|e| format!("{}:\n{e}", r.name))).collect();
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        let matmul = reports.iter().find(|r| r.name == "tensor/matmul.wgsl").unwrap();
        let entries = matmul.result.as_ref().unwrap();
        assert!(entries.iter().any(|e| e.starts_with("matmul_tiled (Compute, workgroup 16x16x1)")), "{entries:?}");
    }

    #[test]
    fn broken_shader_reports_file_and_line() {
        let source = "@compute @workgroup_size(64)\nfn main() {\n    let x: u32 = 1.5;\n}\n";
        let err = validate_source("broken/test.wgsl", source, |_| Err("no imports".into())).unwrap_err();
        assert!(err.contains("broken/test.wgsl:3"), "{err}");
    }

    #[test]
    fn imports_are_pasted_and_missing_imports_fail() {
        let source = "//#import common/x.wgsl\n@compute @workgroup_size(1)\nfn main() { let v = helper(); }\n";
        let ok = validate_source("t.wgsl", source, |path| {
            assert_eq!(path, "common/x.wgsl");
            Ok("fn helper() -> u32 { return 1u; }".into())
        })
        .unwrap();
        assert_eq!(ok, vec!["main (Compute, workgroup 1x1x1)".to_string()]);
        let err = validate_source("t.wgsl", source, |_| Err("not found".into())).unwrap_err();
        assert!(err.contains("t.wgsl:1") && err.contains("common/x.wgsl"), "{err}");
    }

    #[test]
    fn f16_and_subgroups_are_accepted() {
        let source = "enable f16;\n@group(0) @binding(0) var<storage, read_write> buf: array<f32>;\n\
                      @compute @workgroup_size(64)\nfn main(@builtin(local_invocation_index) i: u32) {\n\
                      let h = f16(buf[i]);\n    buf[i] = subgroupAdd(f32(h));\n}\n";
        validate_source("f16.wgsl", source, |_| Err("no imports".into())).unwrap();
    }
}
