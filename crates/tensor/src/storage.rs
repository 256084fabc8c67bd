//! Where a tensor's bytes live.
//!
//! `CpuBuffer` is a byte buffer backed by `u64` words, so it is 8-byte aligned and can be
//! viewed as a slice of any dense element type without copying. GPU storages are opaque
//! handles owned by the `cuda` and `wgpu` modules.

use crate::dtype::Element;
use crate::error::{Error, Result};

/// Host memory, 8-byte aligned, holding `len` bytes.
#[derive(Clone)]
pub struct CpuBuffer {
    words: Vec<u64>,
    len: usize,
}

impl CpuBuffer {
    /// A zero-filled buffer of `len` bytes. Buffers of [`HUGE_PAGE_MIN_BYTES`] or more
    /// are advised to use transparent huge pages (see [`advise_huge_pages`]).
    pub fn zeroed(len: usize) -> Self {
        let words = vec![0u64; len.div_ceil(8)];
        if len >= HUGE_PAGE_MIN_BYTES {
            advise_huge_pages(bytemuck::cast_slice(&words));
        }
        CpuBuffer { words, len }
    }

    /// A buffer of `len` bytes written by `fill` instead of being zeroed first: for
    /// outputs that a kernel overwrites completely, where zeroing 8 MB or more costs a
    /// serial pass over memory before the parallel kernel starts. `fill` gets the
    /// 8-byte aligned start of `len` uninitialized bytes (advised to use huge pages from
    /// [`HUGE_PAGE_MIN_BYTES`] on, like [`Self::zeroed`]). On `Err` the memory is freed
    /// and the error returned.
    ///
    /// # Safety
    /// When `fill` returns `Ok`, it must have initialized every one of the `len` bytes,
    /// and it must not read a byte it has not written.
    pub unsafe fn try_filled_uninit<E>(len: usize, fill: impl FnOnce(*mut u8) -> Result<(), E>) -> Result<Self, E> {
        let word_count = len.div_ceil(8);
        let mut words: Vec<u64> = Vec::with_capacity(word_count);
        let start = words.as_mut_ptr().cast::<u8>();
        if len >= HUGE_PAGE_MIN_BYTES {
            advise_huge_pages_raw(start as usize, len);
        }
        if !len.is_multiple_of(8) {
            // SAFETY: the capacity holds `word_count` words; the last one is only partly
            // covered by `len` bytes, so its padding bytes are zeroed here (whole-word
            // views of the vector then never see uninitialized padding).
            unsafe { words.as_mut_ptr().add(word_count - 1).write(0) };
        }
        fill(start)?;
        // SAFETY: `fill` initialized the `len` bytes (caller contract) and the padding
        // of the last word was zeroed above, so all `word_count` words are initialized;
        // `word_count` is the allocated capacity.
        unsafe { words.set_len(word_count) };
        Ok(CpuBuffer { words, len })
    }

    /// Copies `bytes` into a new aligned buffer.
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let mut buf = CpuBuffer::zeroed(bytes.len());
        buf.as_bytes_mut().copy_from_slice(bytes);
        buf
    }

    /// Copies a typed slice into a new buffer.
    pub fn from_slice<T: Element>(data: &[T]) -> Self {
        CpuBuffer::from_bytes(bytemuck::cast_slice(data))
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.words)[..self.len]
    }

    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut bytemuck::cast_slice_mut::<u64, u8>(&mut self.words)[..len]
    }

    /// Views the bytes as `T`s; errors if the length is not a multiple of `size_of::<T>()`.
    pub fn as_slice<T: Element>(&self) -> Result<&[T]> {
        bytemuck::try_cast_slice(self.as_bytes())
            .map_err(|e| Error::invalid(format!("cannot view {} bytes as {}: {e:?}", self.len, T::DTYPE)))
    }

    pub fn as_slice_mut<T: Element>(&mut self) -> Result<&mut [T]> {
        let len = self.len;
        bytemuck::try_cast_slice_mut(self.as_bytes_mut())
            .map_err(|e| Error::invalid(format!("cannot view {len} bytes as {}: {e:?}", T::DTYPE)))
    }
}

/// Size from which [`CpuBuffer::zeroed`] asks for transparent huge pages.
pub const HUGE_PAGE_MIN_BYTES: usize = 4 << 20;

/// Transparent huge page size (x86_64, and aarch64 with 4 KiB base pages): Linux backs
/// only whole, aligned ranges of this size with huge pages.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// Asks Linux to back the 2 MiB-aligned interior of `bytes` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`; a hint, ignored where THP is off, a no-op elsewhere).
///
/// Why: large activations are read with strides of `H * K` floats (one head's row per
/// token), so with 4 KiB pages nearly every row of a long sequence is a TLB miss the
/// hardware prefetchers do not cross, and a fresh 32 MiB output costs 8192 page
/// faults. With 2 MiB pages both go away. Must run before the memory is first touched
/// (fresh `calloc` memory from `mmap` is untouched), otherwise it only affects later
/// faults.
pub fn advise_huge_pages(bytes: &[u8]) {
    advise_huge_pages_raw(bytes.as_ptr() as usize, bytes.len());
}

/// [`advise_huge_pages`] for the `len` bytes at address `addr` of one live allocation
/// (initialized or not: madvise neither reads nor writes them).
fn advise_huge_pages_raw(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let start = addr.next_multiple_of(HUGE_PAGE_BYTES);
        let end = (addr + len) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        if end > start {
            // SAFETY: madvise with MADV_HUGEPAGE changes no memory contents and no
            // permissions; the range lies inside the `len` bytes at `addr`, one live
            // allocation (caller contract), and is page-aligned as madvise requires. Failure (EINVAL where THP is not
            // built in) is harmless and ignored.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE) };
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

impl std::fmt::Debug for CpuBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CpuBuffer({} bytes)", self.len)
    }
}

/// The bytes of a tensor on one device.
#[derive(Debug)]
pub enum Storage {
    Cpu(CpuBuffer),
    Cuda(crate::cuda::CudaBuffer),
    Wgpu(crate::wgpu::WgpuBuffer),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_views_are_aligned() {
        let buf = CpuBuffer::from_slice(&[1.0f64, 2.0, 3.0]);
        assert_eq!(buf.as_slice::<f64>().unwrap(), &[1.0, 2.0, 3.0]);
        assert_eq!(buf.as_slice::<f32>().unwrap().len(), 6);
        let odd = CpuBuffer::from_bytes(&[1, 2, 3]);
        assert!(odd.as_slice::<f32>().is_err());
    }

    /// The filled buffer holds what `fill` wrote (odd lengths included, their word
    /// padding zeroed), and an error from `fill` comes back unchanged.
    #[test]
    fn filled_uninit_keeps_what_fill_wrote() {
        for len in [0usize, 5, 8, 13, HUGE_PAGE_MIN_BYTES + 3] {
            // SAFETY: the closure writes all `len` bytes and reads none.
            let buf = unsafe {
                CpuBuffer::try_filled_uninit(len, |p| {
                    for i in 0..len {
                        p.add(i).write((i % 251) as u8);
                    }
                    Ok::<(), String>(())
                })
            }
            .unwrap();
            assert_eq!(buf.len(), len);
            assert!(buf.as_bytes().iter().enumerate().all(|(i, &b)| b == (i % 251) as u8), "len {len}");
            assert_eq!(buf.words.len(), len.div_ceil(8));
            if !len.is_multiple_of(8) {
                let last = buf.words[len / 8].to_le_bytes();
                assert!(last[len % 8..].iter().all(|&b| b == 0), "padding of len {len}");
            }
        }
        // SAFETY: the closure writes nothing and fails, so nothing is read.
        let err = unsafe { CpuBuffer::try_filled_uninit(64, |_| Err::<(), _>("kernel failed")) };
        assert_eq!(err.unwrap_err(), "kernel failed");
    }
}
