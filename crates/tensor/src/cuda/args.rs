//! Kernel argument checking: what the Rust side pushes against the PTX `.param` list.
//!
//! A wrong argument count, size or int/float class in a launch is undefined behaviour on
//! the GPU. Each pushed argument has an [`ArgShape`] (bytes, float or not) through the
//! [`KernelArg`] trait; each entry point's parameters are read from its PTX
//! (`.param .u64 name_param_0`, `.param .f32 ...`, `.param .align 8 .b8 name[16]`).
//! `KernelLaunch::launch` refuses to launch when they disagree. Pointers are `.u64` in
//! PTX, so a pointer and a `u64` cannot be told apart; everything else can.

use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};

/// Size and class of one kernel parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgShape {
    pub bytes: usize,
    pub float: bool,
}

impl std::fmt::Display for ArgShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", if self.float { "f" } else { "b" }, self.bytes * 8)
    }
}

/// A value `KernelLaunch::arg` accepts, with the parameter shape it fills.
pub trait KernelArg {
    const SHAPE: ArgShape;
}

const POINTER: ArgShape = ArgShape { bytes: 8, float: false };

impl<T> KernelArg for &CudaSlice<T> {
    const SHAPE: ArgShape = POINTER;
}
impl<T> KernelArg for &mut CudaSlice<T> {
    const SHAPE: ArgShape = POINTER;
}
impl<T> KernelArg for &CudaView<'_, T> {
    const SHAPE: ArgShape = POINTER;
}
impl<T> KernelArg for &mut CudaViewMut<'_, T> {
    const SHAPE: ArgShape = POINTER;
}

macro_rules! scalar_arg {
    ($float:expr => $($t:ty),*) => {
        $(impl KernelArg for &$t {
            const SHAPE: ArgShape = ArgShape { bytes: std::mem::size_of::<$t>(), float: $float };
        })*
    };
}
scalar_arg!(false => u8, i8, u16, i16, u32, i32, u64, i64, usize, isize);
scalar_arg!(true => f32, f64);

/// The parameters of `entry` in `ptx`, or `None` when the PTX has no such entry.
pub fn entry_params(ptx: &str, entry: &str) -> Option<Vec<ArgShape>> {
    let mut lines = ptx.lines().skip_while(|line| {
        let t = line.trim_start();
        let t = t.strip_prefix(".visible ").unwrap_or(t);
        match t.strip_prefix(".entry ") {
            Some(rest) => !(rest.starts_with(entry) && rest[entry.len()..].trim_start().starts_with('(')),
            None => true,
        }
    });
    lines.next()?;
    let mut params = Vec::new();
    for line in lines {
        let t = line.trim();
        if t.starts_with(')') {
            return Some(params);
        }
        let Some(decl) = t.strip_prefix(".param ") else { continue };
        params.push(param_shape(decl)?);
    }
    None
}

fn param_shape(decl: &str) -> Option<ArgShape> {
    let words: Vec<&str> = decl.trim_end_matches(',').split_whitespace().collect();
    let ty = words.iter().find(|w| w.starts_with('.') && !w.starts_with(".align") && !w.starts_with(".ptr"))?;
    let ty = match *ty {
        // `.param .u64 .ptr .global ...` : the first type word is what counts.
        ".global" | ".shared" | ".const" | ".local" => return None,
        t => t,
    };
    let (float, bits) = match ty.as_bytes().get(1)? {
        b'f' => (true, &ty[2..]),
        b'u' | b's' | b'b' => (false, &ty[2..]),
        _ => return None,
    };
    let bits: usize = bits.parse().ok()?;
    // Arrays (`.b8 name[16]`): the byte count is in brackets.
    let count = words
        .last()
        .and_then(|name| name.split_once('['))
        .and_then(|(_, n)| n.trim_end_matches(']').parse::<usize>().ok())
        .unwrap_or(1);
    Some(ArgShape { bytes: bits / 8 * count, float })
}

/// Compares pushed arguments (`None` = unchecked) with the entry's parameters.
pub fn check_args(params: &[ArgShape], pushed: &[Option<ArgShape>]) -> Result<(), String> {
    if params.len() != pushed.len() {
        return Err(format!("{} arguments pushed, the kernel takes {}", pushed.len(), params.len()));
    }
    for (index, (want, got)) in params.iter().zip(pushed).enumerate() {
        if let Some(got) = got
            && got != want
        {
            return Err(format!("argument {index} is {got}, the kernel parameter is {want}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PTX: &str = ".visible .entry k_f32(\n\t.param .u64 .ptr .global .align 4 k_f32_param_0,\n\t.param .f32 k_f32_param_1,\n\
                       \t.param .u32 k_f32_param_2,\n\t.param .align 8 .b8 k_f32_param_3[24]\n)\n{\n}\n\
                       .visible .entry k(\n\t.param .u64 k_param_0\n)\n";

    #[test]
    fn parses_params_and_checks_pushes() {
        let p = entry_params(PTX, "k_f32").unwrap();
        let ptr = ArgShape { bytes: 8, float: false };
        let f32s = ArgShape { bytes: 4, float: true };
        let u32s = ArgShape { bytes: 4, float: false };
        assert_eq!(p, vec![ptr, f32s, u32s, ArgShape { bytes: 24, float: false }]);
        assert_eq!(entry_params(PTX, "k").unwrap(), vec![ptr]);
        assert!(entry_params(PTX, "k_f").is_none());
        assert!(check_args(&p, &[Some(ptr), Some(f32s), Some(u32s), None]).is_ok());
        let err = check_args(&p, &[Some(ptr), Some(u32s), Some(u32s), None]).unwrap_err();
        assert!(err.contains("argument 1"), "{err}");
        assert!(check_args(&p, &[Some(ptr)]).unwrap_err().contains("1 arguments pushed"));
        assert_eq!(<&f32 as KernelArg>::SHAPE, f32s);
        assert_eq!(<&u64 as KernelArg>::SHAPE, ptr);
    }
}
