//! `cargo xtask kernels [--check]`: CUDA C++ -> PTX with NVRTC, MANIFEST, ptxas report.
//!
//! Build (no flag): compiles every `kernels/cuda/<crate>/*.cu` for compute_80 (plus
//! compute_90a when the source is marked, see `sources`), writes
//! `kernels/ptx/<crate>/<stem>[.sm90a].ptx` and `kernels/ptx/MANIFEST`, removes PTX whose
//! source is gone, then assembles every PTX with ptxas (sm_80 and sm_90, or sm_90a) and
//! prints registers, shared memory, stack and spills per kernel.
//!
//! `--check`: fails naming each stale file: a source or header whose sha256 differs
//! from the MANIFEST, a `.cu` without PTX, a PTX without source or MANIFEST entry, a
//! PTX edited by hand; when NVRTC is available and is the MANIFEST's version it also
//! recompiles in memory and compares bytes. Then the same ptxas checks.
//!
//! `--emulate`: runs the kernels on the CPU through a C++ shim (see `emulate`), checking
//! them against double-precision references without a GPU.
//!
//! Failures: any NVRTC or ptxas error, and spills in a kernel not listed in
//! `kernels/cuda/allow-spills.txt`. Toolchain discovery is in `toolchain`.

mod emulate;
mod nvrtc;
mod ptxas;
mod sources;
mod toolchain;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use sources::{KernelOutput, Manifest};

const USAGE: &str = "usage: cargo xtask kernels [--check] [--emulate]\n\
  (no flag)  compile kernels/cuda/**/*.cu to kernels/ptx with NVRTC, write the MANIFEST, run ptxas\n\
  --check    fail if the committed PTX or MANIFEST is stale; run the ptxas checks\n\
  --emulate  also run the kernels on the CPU (C++20 compiler: $CXX or c++) against references\n\
environment: CUDA_HOME / CUDA_PATH (toolkit), LINATTN_NVRTC (libnvrtc.so path), LINATTN_PTXAS,\n\
  LINATTN_KERNELS_OFFLINE=1 (never fetch the pinned NVIDIA wheels with pip)";

pub fn run(args: &[String]) -> Result<(), String> {
    let mut check = false;
    let mut emulate_kernels = false;
    for arg in args {
        match arg.as_str() {
            "--check" => check = true,
            "--emulate" => emulate_kernels = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    let root = crate::workspace_root();
    let started = Instant::now();
    let outputs = sources::discover(&root)?;
    if check {
        run_check(&root, &outputs)?
    } else {
        run_build(&root, &outputs)?
    }
    if emulate_kernels {
        emulate::run(&root)?;
    }
    println!("kernels: {} PTX file(s) ok in {:.1}s", outputs.len(), started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `f` over `items` on all cores, keeping the input order in the results.
fn parallel_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let workers = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(items.len()).max(1);
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        done.push((i, f(item)));
                    }
                    done
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("kernel worker panicked")).collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

fn open_nvrtc(root: &Path, fetch: bool) -> Result<Option<nvrtc::Nvrtc>, String> {
    let Some(location) = toolchain::find_nvrtc(root, fetch)? else { return Ok(None) };
    let compiler = nvrtc::Nvrtc::open(&location.library, location.builtins.as_deref())?;
    println!("kernels: NVRTC {} from {} ({})", compiler.version(), location.origin, compiler.path().display());
    Ok(Some(compiler))
}

/// Compiles every output; returns PTX texts in order or all compile errors.
fn compile_all(root: &Path, compiler: &nvrtc::Nvrtc, outputs: &[KernelOutput]) -> Result<Vec<String>, String> {
    let cuda = sources::cuda_dir(root);
    let results = parallel_map(outputs, |out| {
        let source =
            std::fs::read_to_string(cuda.join(&out.source)).map_err(|e| format!("read {}: {e}", out.source))?;
        let compiled = compiler.compile(&source, &out.source, &out.nvrtc_options(root))?;
        if !compiled.log.is_empty() {
            eprintln!("kernels: NVRTC log for {} ({}):\n{}", out.source, out.arch, compiled.log);
        }
        Ok::<String, String>(compiled.ptx)
    });
    let errors: Vec<String> = results.iter().filter_map(|r| r.as_ref().err().cloned()).collect();
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    Ok(results.into_iter().map(|r| r.expect("errors handled above")).collect())
}

fn run_build(root: &Path, outputs: &[KernelOutput]) -> Result<(), String> {
    let compiler = open_nvrtc(root, true)?.ok_or_else(|| {
        "NVRTC not found: set CUDA_HOME or LINATTN_NVRTC, or unset LINATTN_KERNELS_OFFLINE so the pinned wheel is fetched"
            .to_string()
    })?;
    let ptx_texts = compile_all(root, &compiler, outputs)?;
    let ptx_root = sources::ptx_dir(root);
    let mut manifest = Manifest { nvrtc: compiler.version(), entries: Default::default() };
    for (out, ptx) in outputs.iter().zip(&ptx_texts) {
        let path = ptx_root.join(&out.ptx);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        }
        if std::fs::read(&path).ok().as_deref() != Some(ptx.as_bytes()) {
            std::fs::write(&path, ptx).map_err(|e| format!("write {}: {e}", path.display()))?;
            println!("kernels: wrote kernels/ptx/{}", out.ptx);
        }
        manifest.entries.insert(out.ptx.clone(), sources::entry_for(root, out, ptx.as_bytes())?);
    }
    for orphan in sources::committed_ptx(root)? {
        if !manifest.entries.contains_key(&orphan) {
            let path = ptx_root.join(&orphan);
            std::fs::remove_file(&path).map_err(|e| format!("remove {}: {e}", path.display()))?;
            println!("kernels: removed kernels/ptx/{orphan} (its source is gone)");
        }
    }
    let manifest_path = ptx_root.join("MANIFEST");
    std::fs::write(&manifest_path, manifest.render()).map_err(|e| format!("write {}: {e}", manifest_path.display()))?;
    run_ptxas(root, outputs, true)
}

fn run_check(root: &Path, outputs: &[KernelOutput]) -> Result<(), String> {
    let ptx_root = sources::ptx_dir(root);
    let manifest_path = ptx_root.join("MANIFEST");
    let manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => Manifest::parse(&text)?,
        Err(e) => return Err(format!("kernels/ptx/MANIFEST: {e}; run `cargo xtask kernels`")),
    };
    let committed = sources::committed_ptx(root)?;
    let mut stale: Vec<String> = Vec::new();
    let mut present: Vec<&KernelOutput> = Vec::new();
    for out in outputs {
        if !committed.contains(&out.ptx) {
            stale.push(format!("kernels/cuda/{} has no PTX kernels/ptx/{}", out.source, out.ptx));
            continue;
        }
        let ptx = std::fs::read(ptx_root.join(&out.ptx)).map_err(|e| format!("read kernels/ptx/{}: {e}", out.ptx))?;
        let current = sources::entry_for(root, out, &ptx)?;
        let Some(recorded) = manifest.entries.get(&out.ptx) else {
            stale.push(format!("kernels/ptx/{} is missing from the MANIFEST", out.ptx));
            continue;
        };
        if recorded.source != current.source {
            stale.push(format!("kernels/cuda/{} changed since kernels/ptx/{} was built", out.source, out.ptx));
        }
        if recorded.headers != current.headers {
            let changed: Vec<&str> = current
                .headers
                .iter()
                .filter(|h| !recorded.headers.contains(h))
                .map(|(name, _)| name.as_str())
                .chain(
                    recorded
                        .headers
                        .iter()
                        .filter(|h| !current.headers.iter().any(|c| c.0 == h.0))
                        .map(|(n, _)| n.as_str()),
                )
                .collect();
            stale.push(format!(
                "headers of kernels/cuda/{} changed ({}) since it was built",
                out.source,
                changed.join(", ")
            ));
        }
        if recorded.arch != current.arch || recorded.options != current.options {
            stale.push(format!("kernels/ptx/{}: arch or options differ from this xtask's", out.ptx));
        }
        if recorded.ptx_sha256 != current.ptx_sha256 {
            stale.push(format!("kernels/ptx/{} does not match its MANIFEST hash (edited by hand?)", out.ptx));
        }
        present.push(out);
    }
    for ptx in &committed {
        if !outputs.iter().any(|o| &o.ptx == ptx) {
            stale.push(format!("kernels/ptx/{ptx} has no source in kernels/cuda"));
        }
    }
    for ptx in manifest.entries.keys() {
        if !outputs.iter().any(|o| &o.ptx == ptx) && !committed.contains(ptx) {
            stale.push(format!("MANIFEST lists kernels/ptx/{ptx}, which does not exist"));
        }
    }

    match open_nvrtc(root, true)? {
        Some(compiler) if compiler.version() == manifest.nvrtc => {
            let owned: Vec<KernelOutput> = present.iter().map(|o| (*o).clone()).collect();
            let fresh = compile_all(root, &compiler, &owned)?;
            for (out, ptx) in owned.iter().zip(&fresh) {
                let committed_ptx = std::fs::read(ptx_root.join(&out.ptx)).unwrap_or_default();
                if committed_ptx != ptx.as_bytes() {
                    stale.push(format!(
                        "kernels/ptx/{} differs from a fresh NVRTC build of kernels/cuda/{}",
                        out.ptx, out.source
                    ));
                }
            }
        }
        Some(compiler) => println!(
            "kernels: NVRTC {} differs from the MANIFEST's {}; byte comparison skipped",
            compiler.version(),
            manifest.nvrtc
        ),
        None => println!("kernels: NVRTC not available (offline); byte comparison skipped"),
    }
    if !stale.is_empty() {
        return Err(format!("stale kernels (run `cargo xtask kernels` and commit):\n  {}", stale.join("\n  ")));
    }
    run_ptxas(root, outputs, true)
}

/// Assembles every committed PTX for its targets, prints the report and enforces the
/// spill allowlist. With `fetch` the pinned ptxas is downloaded if needed.
fn run_ptxas(root: &Path, outputs: &[KernelOutput], fetch: bool) -> Result<(), String> {
    let Some((ptxas_path, origin)) = toolchain::find_ptxas(root, fetch)? else {
        println!("kernels: ptxas not available (offline); resource checks skipped");
        return Ok(());
    };
    println!("kernels: ptxas from {origin} ({})", ptxas_path.display());
    let allow_path = sources::cuda_dir(root).join("allow-spills.txt");
    let allowed = ptxas::read_allowlist(&allow_path)?;
    let scratch = toolchain::tools_dir(root).join("scratch");
    std::fs::create_dir_all(&scratch).map_err(|e| format!("create {}: {e}", scratch.display()))?;
    let ptx_root = sources::ptx_dir(root);
    let jobs: Vec<(&KernelOutput, &str)> =
        outputs.iter().flat_map(|o| o.sm_targets().iter().map(move |sm| (o, *sm))).collect();
    let reports =
        parallel_map(&jobs, |(out, sm)| ptxas::assemble(&ptxas_path, &ptx_root.join(&out.ptx), &out.ptx, sm, &scratch));

    let mut failures = Vec::new();
    println!("{:<44} {:<7} {:>5} {:>7} {:>6} {:>12}", "kernel", "target", "regs", "smem", "stack", "spill st/ld");
    for report in &reports {
        let report = match report {
            Ok(r) => r,
            Err(e) => {
                failures.push(e.clone());
                continue;
            }
        };
        for warning in &report.warnings {
            println!("kernels: {} {}: {warning}", report.ptx, report.sm);
        }
        if report.kernels.is_empty() {
            failures.push(format!("{} {}: ptxas reported no entry functions", report.ptx, report.sm));
        }
        for (name, r) in &report.kernels {
            println!(
                "{:<44} {:<7} {:>5} {:>7} {:>6} {:>5}/{:<6}",
                name, report.sm, r.registers, r.shared_bytes, r.stack_bytes, r.spill_stores, r.spill_loads
            );
            if (r.spill_stores > 0 || r.spill_loads > 0) && !allowed.contains_key(name) {
                failures.push(format!(
                    "{name} ({}, {}) spills {} B stores / {} B loads; fix it or list it with a reason in kernels/cuda/allow-spills.txt",
                    report.ptx, report.sm, r.spill_stores, r.spill_loads
                ));
            }
        }
    }
    if failures.is_empty() { Ok(()) } else { Err(failures.join("\n")) }
}
