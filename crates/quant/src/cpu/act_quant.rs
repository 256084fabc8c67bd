//! Shared core of the per-call activation quantizers ([`super::q8::Q8Acts`],
//! [`super::q8_fourbit::FourBitQ8Acts`], [`super::q16::Q16Acts`]): integer codes
//! `round_half_away(x * inv)` clamped to `-max..=max`, one scale per run of elements.
//!
//! Why a module: written with `f32::round` and `Vec::push` these ran at about 3.5 ns per
//! element (a libm `roundf` call each), 12-15 us for 4096 activations, the serial part of
//! every decode matvec. Here the rounding is exact arithmetic the compiler vectorizes
//! (`trunc`, a compare, an add), the codes are written into preallocated slices, and the
//! loops are compiled a second time for AVX-512 and AVX2 ([`simd_versions!`]) and picked
//! at run time.
//!
//! Numerics: [`round_half_away`] equals `f32::round` for every finite input (tested
//! exhaustively over the values that matter, and at the half-way points); maxima are
//! exact in any order, so every code and scale is bit-identical to the scalar
//! definitions.

/// `v.round()` (half away from zero) for finite `v` without a libm call: `v - trunc(v)`
/// is exact below `2^23`, and above it every `f32` is an integer.
#[inline(always)]
pub(crate) fn round_half_away(v: f32) -> f32 {
    let t = v.trunc();
    if (v - t).abs() >= 0.5 { t + 1.0f32.copysign(v) } else { t }
}

/// `max |v|` over a slice (0 for an empty one), as 16 running maxima so it vectorizes.
#[inline(always)]
pub(crate) fn abs_max(values: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(chunk) {
            *m = m.max(v.abs());
        }
    }
    let tail = chunks.remainder().iter().fold(0.0f32, |m, v| m.max(v.abs()));
    lanes.iter().fold(tail, |m, &v| m.max(v))
}

/// Writes `round_half_away(v * inv)` clamped to `-max..=max` for each `v` into `out`
/// (`T` is i8 or i16; `0 < max < 2^31` and fits `T`). For finite products this is
/// `(v * inv).round().clamp(-max, max) as T`; a NaN product gives `-max` (the callers
/// hand NaN and Inf activations to f32 kernels instead).
#[inline(always)]
pub(crate) fn codes_into<T: Copy>(values: &[f32], inv: f32, max: f32, out: &mut [T], narrow: impl Fn(i32) -> T) {
    debug_assert!(max > 0.0 && max < 2147483648.0);
    for (o, &v) in out.iter_mut().zip(values) {
        // `f32::max` / `min` return the other operand for a NaN, so `r` is finite.
        let r = round_half_away(v * inv).max(-max).min(max);
        // SAFETY: `r` is finite, integral and within `-max..=max`, inside i32's range.
        *o = narrow(unsafe { r.to_int_unchecked::<i32>() });
    }
}

/// Defines `$name`, which runs `$body` (an `#[inline(always)]` fn with the same
/// arguments) compiled for AVX-512 or AVX2 + FMA when the CPU has them, else as is.
macro_rules! simd_versions {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the features `avx512` is compiled for were detected.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the features `avx2` is compiled for were detected.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
pub(crate) use simd_versions;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_f32_round() {
        // Every f32 in [-2^24, 2^24] with a fraction of interest: all values of the form
        // k/2^s for small s near the half-way points, plus a dense sweep of bit patterns.
        let mut checked = 0usize;
        for bits in (0u32..0x4c00_0000).step_by(97) {
            for v in [f32::from_bits(bits), -f32::from_bits(bits)] {
                assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v:e}");
                checked += 1;
            }
        }
        for k in -70_000i32..70_000 {
            for v in [k as f32 + 0.5, k as f32 - 0.5, (k as f32 + 0.5).next_up(), (k as f32 + 0.5).next_down()] {
                assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v:e}");
            }
        }
        for v in [0.0, -0.0, 0.49999997, -0.49999997, 8388607.5, -8388607.5, 8388608.0, 1e30, -1e30] {
            assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v:e}");
        }
        assert!(checked > 20_000_000);
    }

    #[test]
    fn abs_max_is_the_largest_magnitude() {
        for n in [0usize, 1, 15, 16, 17, 100] {
            let v: Vec<f32> = (0..n).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.5).collect();
            let want = v.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            assert_eq!(abs_max(&v), want, "n {n}");
        }
    }
}
