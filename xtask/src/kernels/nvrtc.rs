//! NVRTC loaded at run time from an absolute path with `libloading`.
//!
//! Only the handful of C entry points the kernel build needs are declared here:
//! version, create/compile/destroy a program, and read its log and PTX. The library's
//! `libnvrtc-builtins.so.*` sibling is loaded first from the same directory, so NVRTC
//! finds it by soname without `LD_LIBRARY_PATH`.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::{Path, PathBuf};

type NvrtcProgram = *mut c_void;
type NvrtcStatus = c_int;

/// The NVRTC functions we call, resolved once when the library is opened.
pub struct Nvrtc {
    version: (i32, i32),
    create_program: unsafe extern "C" fn(
        *mut NvrtcProgram,
        *const c_char,
        *const c_char,
        c_int,
        *const *const c_char,
        *const *const c_char,
    ) -> NvrtcStatus,
    compile_program: unsafe extern "C" fn(NvrtcProgram, c_int, *const *const c_char) -> NvrtcStatus,
    destroy_program: unsafe extern "C" fn(*mut NvrtcProgram) -> NvrtcStatus,
    get_log_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcStatus,
    get_log: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> NvrtcStatus,
    get_ptx_size: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcStatus,
    get_ptx: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> NvrtcStatus,
    get_error_string: unsafe extern "C" fn(NvrtcStatus) -> *const c_char,
    // Kept alive for as long as the function pointers above are used.
    _builtins: Option<libloading::Library>,
    _library: libloading::Library,
    path: PathBuf,
}

/// The output of one successful compilation.
pub struct Compiled {
    pub ptx: String,
    /// Warnings NVRTC printed (empty when clean).
    pub log: String,
}

impl Nvrtc {
    /// Opens `libnvrtc.so.*` at `library` (an absolute path), preloading `builtins` if given.
    pub fn open(library: &Path, builtins: Option<&Path>) -> Result<Nvrtc, String> {
        // SAFETY: loading a shared library runs its initializers; these are NVIDIA's NVRTC
        // libraries found at paths we chose, which have no unusual initialization.
        let builtins_lib = match builtins {
            Some(path) => Some(
                unsafe { libloading::Library::new(path) }
                    .map_err(|e| format!("cannot load NVRTC builtins {}: {e}", path.display()))?,
            ),
            None => None,
        };
        // SAFETY: as above.
        let library_handle = unsafe { libloading::Library::new(library) }
            .map_err(|e| format!("cannot load NVRTC {}: {e}", library.display()))?;
        macro_rules! symbol {
            ($name:literal) => {
                // SAFETY: the declared signature matches nvrtc.h of CUDA 12 for this symbol,
                // and the pointer is only used while `_library` is alive (same struct).
                *unsafe { library_handle.get($name) }.map_err(|e| {
                    format!("{}: missing symbol {}: {e}", library.display(), String::from_utf8_lossy($name))
                })?
            };
        }
        let version_fn: unsafe extern "C" fn(*mut c_int, *mut c_int) -> NvrtcStatus = symbol!(b"nvrtcVersion\0");
        let (mut major, mut minor) = (0, 0);
        // SAFETY: nvrtcVersion writes two ints through valid pointers.
        let status = unsafe { version_fn(&mut major, &mut minor) };
        if status != 0 {
            return Err(format!("nvrtcVersion failed with status {status}"));
        }
        Ok(Nvrtc {
            version: (major, minor),
            create_program: symbol!(b"nvrtcCreateProgram\0"),
            compile_program: symbol!(b"nvrtcCompileProgram\0"),
            destroy_program: symbol!(b"nvrtcDestroyProgram\0"),
            get_log_size: symbol!(b"nvrtcGetProgramLogSize\0"),
            get_log: symbol!(b"nvrtcGetProgramLog\0"),
            get_ptx_size: symbol!(b"nvrtcGetPTXSize\0"),
            get_ptx: symbol!(b"nvrtcGetPTX\0"),
            get_error_string: symbol!(b"nvrtcGetErrorString\0"),
            _builtins: builtins_lib,
            _library: library_handle,
            path: library.to_path_buf(),
        })
    }

    /// `major.minor` of the loaded NVRTC.
    pub fn version(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn error_string(&self, status: NvrtcStatus) -> String {
        // SAFETY: nvrtcGetErrorString returns a static NUL-terminated string for any code.
        let text = unsafe { (self.get_error_string)(status) };
        if text.is_null() {
            return format!("NVRTC status {status}");
        }
        // SAFETY: non-null, NUL-terminated, static lifetime per the NVRTC docs.
        unsafe { CStr::from_ptr(text) }.to_string_lossy().into_owned()
    }

    /// Compiles `source` (named `name` in diagnostics) with `options` to PTX.
    pub fn compile(&self, source: &str, name: &str, options: &[String]) -> Result<Compiled, String> {
        let c_source = CString::new(source).map_err(|_| format!("{name}: source contains a NUL byte"))?;
        let c_name = CString::new(name).map_err(|_| format!("{name}: name contains a NUL byte"))?;
        let c_options: Vec<CString> = options
            .iter()
            .map(|o| CString::new(o.as_str()).map_err(|_| format!("option `{o}` contains a NUL byte")))
            .collect::<Result<_, _>>()?;
        let option_ptrs: Vec<*const c_char> = c_options.iter().map(|o| o.as_ptr()).collect();

        let mut program: NvrtcProgram = std::ptr::null_mut();
        // SAFETY: all pointers are valid NUL-terminated strings that outlive the call; no
        // in-memory headers are passed (count 0, null arrays).
        let status = unsafe {
            (self.create_program)(
                &mut program,
                c_source.as_ptr(),
                c_name.as_ptr(),
                0,
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        if status != 0 {
            return Err(format!("{name}: nvrtcCreateProgram: {}", self.error_string(status)));
        }
        let result = self.compile_created(program, name, &option_ptrs);
        // SAFETY: `program` was created above and is destroyed exactly once.
        unsafe { (self.destroy_program)(&mut program) };
        result
    }

    fn compile_created(
        &self,
        program: NvrtcProgram,
        name: &str,
        options: &[*const c_char],
    ) -> Result<Compiled, String> {
        let count = c_int::try_from(options.len()).map_err(|_| "too many NVRTC options".to_string())?;
        // SAFETY: `program` is live; `options` holds `count` valid C strings.
        let status = unsafe { (self.compile_program)(program, count, options.as_ptr()) };
        let log = self.read_string(program, name, self.get_log_size, self.get_log)?;
        if status != 0 {
            return Err(format!("{name}: NVRTC compilation failed ({}):\n{log}", self.error_string(status)));
        }
        let ptx = self.read_string(program, name, self.get_ptx_size, self.get_ptx)?;
        Ok(Compiled { ptx, log: log.trim().to_string() })
    }

    fn read_string(
        &self,
        program: NvrtcProgram,
        name: &str,
        size_fn: unsafe extern "C" fn(NvrtcProgram, *mut usize) -> NvrtcStatus,
        read_fn: unsafe extern "C" fn(NvrtcProgram, *mut c_char) -> NvrtcStatus,
    ) -> Result<String, String> {
        let mut size = 0usize;
        // SAFETY: `program` is live and `size` is a valid out-pointer.
        let status = unsafe { size_fn(program, &mut size) };
        if status != 0 {
            return Err(format!("{name}: NVRTC size query: {}", self.error_string(status)));
        }
        let mut buffer = vec![0u8; size.max(1)];
        // SAFETY: the buffer holds `size` bytes, as NVRTC asked for (including the NUL).
        let status = unsafe { read_fn(program, buffer.as_mut_ptr().cast()) };
        if status != 0 {
            return Err(format!("{name}: NVRTC read: {}", self.error_string(status)));
        }
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        buffer.truncate(end);
        String::from_utf8(buffer).map_err(|_| format!("{name}: NVRTC returned non-UTF-8 text"))
    }
}
