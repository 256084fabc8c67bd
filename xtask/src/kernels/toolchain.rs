//! Finding (and, when needed, fetching) NVRTC and ptxas.
//!
//! Search order for each tool:
//! 1. an explicit path: `LINATTN_NVRTC` (a `libnvrtc.so*` file) / `LINATTN_PTXAS`;
//! 2. a CUDA toolkit: `$CUDA_HOME`, `$CUDA_PATH`, `/usr/local/cuda`;
//! 3. the pinned Python wheels `nvidia-cuda-nvrtc-cu12==12.9.86` and
//!    `nvidia-cuda-nvcc-cu12==12.9.86`, unpacked under `<target>/cuda-tools/`
//!    (`<target>` is `$CARGO_TARGET_DIR` or the workspace's `target/`). When they are not
//!    there yet they are fetched with `python3 -m pip download --no-deps` and unpacked
//!    with Python's `zipfile`, unless `LINATTN_KERNELS_OFFLINE=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The pinned CUDA component version of the wheels.
pub const WHEEL_VERSION: &str = "12.9.86";

/// Where an NVRTC library lives.
pub struct NvrtcLocation {
    pub library: PathBuf,
    /// `libnvrtc-builtins.so.*` next to it, preloaded so NVRTC finds it.
    pub builtins: Option<PathBuf>,
    /// Where it came from (printed once).
    pub origin: String,
}

struct Wheel {
    package: &'static str,
    file_prefix: &'static str,
    cache_dir: &'static str,
    /// Members to unpack (prefix match inside the wheel).
    members: &'static [&'static str],
}

const NVRTC_WHEEL: Wheel = Wheel {
    package: "nvidia-cuda-nvrtc-cu12",
    file_prefix: "nvidia_cuda_nvrtc_cu12-",
    cache_dir: "nvrtc",
    members: &["nvidia/cuda_nvrtc/lib/"],
};

const NVCC_WHEEL: Wheel = Wheel {
    package: "nvidia-cuda-nvcc-cu12",
    file_prefix: "nvidia_cuda_nvcc_cu12-",
    cache_dir: "nvcc",
    members: &["nvidia/cuda_nvcc/bin/ptxas"],
};

/// The cache folder of unpacked tools: `<target>/cuda-tools`.
pub fn tools_dir(root: &Path) -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() { dir } else { root.join(dir) }
        }
        _ => root.join("target"),
    };
    target.join("cuda-tools")
}

fn offline() -> bool {
    matches!(std::env::var("LINATTN_KERNELS_OFFLINE").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

fn toolkit_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(dir) = std::env::var_os(var).filter(|d| !d.is_empty()) {
            roots.push(PathBuf::from(dir));
        }
    }
    roots.push(PathBuf::from("/usr/local/cuda"));
    roots
}

/// The builtins library in `dir` (`libnvrtc-builtins.so.<major>.<minor>`), if any.
fn builtins_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with("libnvrtc-builtins.so") && !name.contains(".alt.")
        })
        .collect();
    found.sort();
    // Prefer the versioned file (the soname NVRTC asks for) over a bare .so link.
    found.into_iter().max_by_key(|p| p.as_os_str().len())
}

fn nvrtc_at(library: PathBuf, origin: String) -> NvrtcLocation {
    let builtins = library.parent().and_then(builtins_in);
    NvrtcLocation { library, builtins, origin }
}

/// Finds NVRTC; fetches the pinned wheel when `fetch` is set and nothing else is found.
/// `Ok(None)` means not found and not fetched.
pub fn find_nvrtc(root: &Path, fetch: bool) -> Result<Option<NvrtcLocation>, String> {
    if let Some(path) = std::env::var_os("LINATTN_NVRTC").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("LINATTN_NVRTC={} is not a file", path.display()));
        }
        return Ok(Some(nvrtc_at(path, "LINATTN_NVRTC".into())));
    }
    for toolkit in toolkit_roots() {
        for lib_dir in ["lib64", "lib", "targets/x86_64-linux/lib"] {
            for name in ["libnvrtc.so.12", "libnvrtc.so"] {
                let candidate = toolkit.join(lib_dir).join(name);
                if candidate.is_file() {
                    return Ok(Some(nvrtc_at(candidate, format!("CUDA toolkit {}", toolkit.display()))));
                }
            }
        }
    }
    let unpacked = tools_dir(root).join(NVRTC_WHEEL.cache_dir).join("nvidia/cuda_nvrtc/lib/libnvrtc.so.12");
    let origin = format!("wheel {}=={WHEEL_VERSION}", NVRTC_WHEEL.package);
    if unpacked.is_file() {
        return Ok(Some(nvrtc_at(unpacked, origin)));
    }
    if !fetch || offline() {
        return Ok(None);
    }
    fetch_wheel(root, &NVRTC_WHEEL)?;
    if unpacked.is_file() {
        Ok(Some(nvrtc_at(unpacked, origin)))
    } else {
        Err(format!("the {} wheel did not contain {}", NVRTC_WHEEL.package, unpacked.display()))
    }
}

/// Finds ptxas (same order as NVRTC); `Ok(None)` when absent and not fetched.
pub fn find_ptxas(root: &Path, fetch: bool) -> Result<Option<(PathBuf, String)>, String> {
    if let Some(path) = std::env::var_os("LINATTN_PTXAS").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            return Err(format!("LINATTN_PTXAS={} is not a file", path.display()));
        }
        return Ok(Some((path, "LINATTN_PTXAS".into())));
    }
    for toolkit in toolkit_roots() {
        let candidate = toolkit.join("bin/ptxas");
        if candidate.is_file() {
            return Ok(Some((candidate, format!("CUDA toolkit {}", toolkit.display()))));
        }
    }
    let unpacked = tools_dir(root).join(NVCC_WHEEL.cache_dir).join("nvidia/cuda_nvcc/bin/ptxas");
    let origin = format!("wheel {}=={WHEEL_VERSION}", NVCC_WHEEL.package);
    if unpacked.is_file() {
        return Ok(Some((unpacked, origin)));
    }
    if !fetch || offline() {
        return Ok(None);
    }
    fetch_wheel(root, &NVCC_WHEEL)?;
    if !unpacked.is_file() {
        return Err(format!("the {} wheel did not contain {}", NVCC_WHEEL.package, unpacked.display()));
    }
    make_executable(&unpacked)?;
    Ok(Some((unpacked, origin)))
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<(), String> {
    Ok(())
}

fn run_python(args: &[&str], what: &str) -> Result<(), String> {
    let output = Command::new("python3")
        .args(args)
        .output()
        .map_err(|e| format!("{what}: cannot run python3 ({e}); install Python 3 with pip, or set CUDA_HOME / LINATTN_NVRTC / LINATTN_PTXAS"))?;
    if !output.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(())
}

/// Downloads `wheel` with pip (unless a downloaded copy is cached) and unpacks its members
/// into `<tools>/<cache_dir>` through a temporary folder renamed into place.
fn fetch_wheel(root: &Path, wheel: &Wheel) -> Result<(), String> {
    let tools = tools_dir(root);
    let wheels = tools.join("wheels");
    std::fs::create_dir_all(&wheels).map_err(|e| format!("create {}: {e}", wheels.display()))?;
    let find_cached = || -> Option<PathBuf> {
        let prefix = format!("{}{WHEEL_VERSION}-", wheel.file_prefix);
        std::fs::read_dir(&wheels).ok()?.filter_map(|e| e.ok().map(|e| e.path())).find(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(&prefix) && name.ends_with(".whl")
        })
    };
    let archive = match find_cached() {
        Some(path) => path,
        None => {
            let spec = format!("{}=={WHEEL_VERSION}", wheel.package);
            eprintln!("kernels: fetching {spec} with pip into {}", wheels.display());
            let dest = wheels.to_string_lossy().into_owned();
            run_python(
                &[
                    "-m",
                    "pip",
                    "download",
                    "--no-deps",
                    "--only-binary=:all:",
                    "--disable-pip-version-check",
                    "--quiet",
                    "--dest",
                    &dest,
                    &spec,
                ],
                &format!("pip download {spec}"),
            )?;
            find_cached().ok_or_else(|| format!("pip download {spec} left no wheel in {}", wheels.display()))?
        }
    };
    let final_dir = tools.join(wheel.cache_dir);
    let staging = tools.join(format!("{}.partial", wheel.cache_dir));
    let _ = std::fs::remove_dir_all(&staging);
    let script = "import sys, zipfile\n\
                  archive, dest, prefixes = sys.argv[1], sys.argv[2], sys.argv[3:]\n\
                  z = zipfile.ZipFile(archive)\n\
                  names = [n for n in z.namelist() if any(n.startswith(p) for p in prefixes)]\n\
                  assert names, 'no member matches ' + ' '.join(prefixes)\n\
                  [z.extract(n, dest) for n in names]\n";
    let archive_arg = archive.to_string_lossy().into_owned();
    let staging_arg = staging.to_string_lossy().into_owned();
    let mut args = vec!["-c", script, &archive_arg, &staging_arg];
    args.extend(wheel.members.iter().copied());
    run_python(&args, &format!("unpack {}", archive.display()))?;
    let _ = std::fs::remove_dir_all(&final_dir);
    std::fs::rename(&staging, &final_dir)
        .map_err(|e| format!("rename {} -> {}: {e}", staging.display(), final_dir.display()))
}
