//! `cargo xtask ci`: everything CI checks, in order, stopping at the first failure:
//!
//! 1. `cargo fmt --all --check`
//! 2. `cargo clippy --workspace --all-targets -- -D warnings`, then
//!    `cargo doc --workspace --no-deps` with `RUSTDOCFLAGS=-D warnings` (broken or
//!    private intra-doc links fail the run)
//! 3. `cargo xtask kernels --check` (committed PTX up to date, ptxas clean)
//! 4. `cargo xtask wgsl` (every shader validates with naga)
//! 5. `cargo test --workspace` with `LINATTN_REQUIRE_WGPU=1`, so the WebGPU conformance
//!    cases must run (on Mesa lavapipe in CI) instead of skipping.
//!
//! `--no-lint` skips steps 1 and 2 for a quicker local run.
//!
//! Before building, the free space under `target/` is checked: a clean run writes about
//! `CLEAN_RUN_GIB` there, and a full disk otherwise shows up much later as a linker
//! crash (SIGBUS) or "No space left on device" in the middle of the test build. Cargo's
//! incremental caches are turned off (`CARGO_INCREMENTAL=0`): CI builds once, and they
//! would double the space the debug builds take.

use std::process::Command;
use std::time::Instant;

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn step(name: &str, f: impl FnOnce() -> Result<(), String>) -> Result<(), String> {
    eprintln!("==> xtask ci: {name}");
    let start = Instant::now();
    let result = f();
    let secs = start.elapsed().as_secs_f64();
    match &result {
        Ok(()) => eprintln!("==> xtask ci: {name}: ok ({secs:.1} s)"),
        Err(e) => eprintln!("==> xtask ci: {name}: FAILED after {secs:.1} s: {e}"),
    }
    result.map_err(|e| format!("{name}: {e}"))
}

/// What a clean `cargo xtask ci` leaves under `target/`, rounded up: 2.1 GiB on a fresh
/// clone (debug info off for dependencies, line tables for tests, no incremental caches;
/// it was 9.6 GiB with full debug info and incremental caches).
const CLEAN_RUN_GIB: f64 = 3.0;

/// Free space, in GiB, on the filesystem that holds `dir`, from POSIX `df -Pk`; `None` when
/// `df` is missing or its output is not the POSIX format.
fn free_gib(dir: &std::path::Path) -> Option<f64> {
    let out = Command::new("df").arg("-Pk").arg(dir).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    let available_kib: f64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(available_kib / (1024.0 * 1024.0))
}

fn check_disk_space() -> Result<(), String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"));
    // The target directory may not exist yet: ask about its nearest existing ancestor.
    let probe = target.ancestors().find(|dir| dir.exists()).unwrap_or(&target).to_path_buf();
    match free_gib(&probe) {
        None => eprintln!("xtask ci: could not read the free space under {} (no POSIX df)", probe.display()),
        Some(free) if free < CLEAN_RUN_GIB => {
            return Err(format!(
                "only {free:.1} GiB free on the filesystem holding {}; a clean CI run writes about {CLEAN_RUN_GIB} GiB \
                 there. Free space (e.g. `cargo clean`) or point CARGO_TARGET_DIR elsewhere",
                probe.display()
            ));
        }
        Some(free) => eprintln!("xtask ci: {free:.1} GiB free under {}", probe.display()),
    }
    Ok(())
}

fn run_cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<(), String> {
    let mut cmd = cargo();
    cmd.args(args).current_dir(crate::workspace_root()).env("CARGO_INCREMENTAL", "0");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd.status().map_err(|e| format!("could not run cargo {}: {e}", args.join(" ")))?;
    if status.success() { Ok(()) } else { Err(format!("cargo {} exited with {status}", args.join(" "))) }
}

pub fn run(args: &[String]) -> Result<(), String> {
    let lint = !args.iter().any(|a| a == "--no-lint");
    if let Some(unknown) = args.iter().find(|a| a.as_str() != "--no-lint") {
        return Err(format!("unknown option `{unknown}`; expected --no-lint"));
    }
    let start = Instant::now();
    step("disk space", check_disk_space)?;
    if lint {
        step("fmt", || run_cargo(&["fmt", "--all", "--", "--check"], &[]))?;
        step("clippy", || run_cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"], &[]))?;
        step("doc", || run_cargo(&["doc", "--workspace", "--no-deps"], &[("RUSTDOCFLAGS", "-D warnings")]))?;
    }
    step("kernels --check", || crate::kernels::run(&["--check".to_string()]))?;
    step("wgsl", || crate::wgsl::run(&[]))?;
    let require_wgpu = std::env::var("LINATTN_REQUIRE_WGPU").unwrap_or_else(|_| "1".into());
    step("tests", || run_cargo(&["test", "--workspace"], &[("LINATTN_REQUIRE_WGPU", require_wgpu.as_str())]))?;
    eprintln!("==> xtask ci: all steps passed in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
