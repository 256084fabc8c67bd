//! Activation buffers placed at a chosen offset from a cache-line boundary, for the
//! per-call activation copies of the matvec kernels.
//!
//! Why: a `Vec` is only 16-byte aligned, so its offset within a 64-byte line is whatever
//! the allocator's history left, and the NF4/FP4 AVX-512 q16 kernel is very sensitive to
//! it. Measured on the 2-core Zen 4 VM (14336x4096 NF4 matvec, one thread, same binary,
//! only the offset of the regrouped activations changed): 0 bytes past a line 10.5-16
//! GB/s, 32 bytes 13.2-15, 16 or 48 bytes 17.5-18.2 GB/s. At 4096x4096 every offset ran
//! the same, and the Q8 activation lanes of the ggml kernels showed no effect above the
//! run-to-run noise. Before this buffer, `linattn bench quant` swung between 22 and 34
//! GB/s (two threads) on nothing but an extra `--shapes` entry.
//!
//! Layout: whole 64-byte lines (`Line`); element 0 sits `lead` bytes into the first
//! line; every byte outside the `len` elements is zero. Elements are plain data
//! (`bytemuck::Pod`), viewed through a cast of the lines' bytes.

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

/// One cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

// SAFETY: `Line` is 64 plain bytes with no padding (size 64, align 64); every bit
// pattern is valid and all-zero is a valid value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; `Line` is `Copy`, `repr(C)` and holds no pointers.
unsafe impl bytemuck::Pod for Line {}

/// A zero-initialised, fixed-length buffer of `T` whose element 0 lies `lead` bytes
/// past a 64-byte boundary.
#[derive(Clone)]
pub(crate) struct LineOffsetBuffer<T: bytemuck::Pod> {
    lines: Vec<Line>,
    lead: usize,
    len: usize,
    _elements: PhantomData<T>,
}

impl<T: bytemuck::Pod> LineOffsetBuffer<T> {
    /// `len` zeros starting `lead` bytes into a cache line (`lead < 64`, a multiple of
    /// the element's alignment).
    pub(crate) fn zeroed(len: usize, lead: usize) -> LineOffsetBuffer<T> {
        let size = std::mem::size_of::<T>();
        assert!(
            size > 0 && lead < 64 && lead.is_multiple_of(std::mem::align_of::<T>()),
            "lead {lead} for {size}-byte elements"
        );
        let bytes = len.checked_mul(size).and_then(|b| b.checked_add(lead)).expect("buffer size overflows usize");
        LineOffsetBuffer { lines: vec![Line([0; 64]); bytes.div_ceil(64)], lead, len, _elements: PhantomData }
    }

    fn byte_range(&self) -> std::ops::Range<usize> {
        self.lead..self.lead + self.len * std::mem::size_of::<T>()
    }
}

impl<T: bytemuck::Pod> Deref for LineOffsetBuffer<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        let bytes: &[u8] = bytemuck::cast_slice(&self.lines);
        // The lead is a multiple of T's alignment and the lines are 64-aligned, so the
        // cast cannot fail on alignment.
        bytemuck::cast_slice(&bytes[self.byte_range()])
    }
}

impl<T: bytemuck::Pod> DerefMut for LineOffsetBuffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let range = self.byte_range();
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut self.lines);
        bytemuck::cast_slice_mut(&mut bytes[range])
    }
}

#[cfg(test)]
mod tests {
    use super::LineOffsetBuffer;

    #[test]
    fn elements_start_at_the_lead_and_keep_their_values() {
        for lead in [0usize, 16, 48] {
            for len in [0usize, 1, 15, 16, 33, 4096] {
                let mut buffer = LineOffsetBuffer::<i16>::zeroed(len, lead);
                assert_eq!(buffer.len(), len);
                assert!(buffer.iter().all(|&v| v == 0));
                for (i, v) in buffer.iter_mut().enumerate() {
                    *v = (i as i16).wrapping_mul(31);
                }
                assert!(buffer.iter().enumerate().all(|(i, &v)| v == (i as i16).wrapping_mul(31)));
                if len > 0 {
                    assert_eq!(buffer.as_ptr() as usize % 64, lead, "len {len}");
                }
                let floats = LineOffsetBuffer::<f32>::zeroed(len, lead);
                assert!(floats.iter().all(|&v| v == 0.0) && floats.len() == len);
            }
        }
    }

    #[test]
    #[should_panic(expected = "lead")]
    fn leads_that_break_element_alignment_are_refused() {
        let _ = LineOffsetBuffer::<f32>::zeroed(4, 2);
    }
}
