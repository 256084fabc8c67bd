//! xtask: kernel builds and CI for linattn, run as `cargo xtask <command>`.
//!
//! - `kernels [--check]`: CUDA C++ -> PTX with NVRTC, MANIFEST, ptxas resource report.
//! - `wgsl`: validates every WGSL shader with naga.
//! - `ci`: fmt, clippy, kernels --check, wgsl, tests.

mod ci;
mod kernels;
mod wgsl;

use std::path::PathBuf;
use std::process::ExitCode;

/// The workspace root (the parent of this crate's directory). `cargo run` sets
/// `CARGO_MANIFEST_DIR` at run time too, so a binary built in one checkout and run from
/// another (a worktree, a clone sharing the target directory) acts on the right tree; the
/// compile-time value is the fallback when the binary is run directly.
pub fn workspace_root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir.parent().map(PathBuf::from).unwrap_or(manifest_dir)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = args.split_first() else {
        eprintln!("usage: cargo xtask <kernels [--check] | wgsl | ci>");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "kernels" => kernels::run(rest),
        "wgsl" => wgsl::run(rest),
        "ci" => ci::run(rest),
        other => Err(format!("unknown command `{other}`; expected kernels, wgsl or ci")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask {command}: {message}");
            ExitCode::FAILURE
        }
    }
}
