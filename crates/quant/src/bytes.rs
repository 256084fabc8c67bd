//! `ByteView`: a cheap, shareable, immutable view of bytes owned by a `Vec`, a
//! memory mapping (GGUF / safetensors files) or a CPU tensor. Quantized weights hold
//! their packed bytes through it, so a tensor read from a mapped file is used in place.

use std::sync::Arc;

use linattn_tensor::{Error, Result, Tensor};

/// The zeroed, writable bytes of a quantized weight being built; [`Self::into_view`]
/// freezes them into a [`ByteView`].
///
/// From [`linattn_tensor::storage::HUGE_PAGE_MIN_BYTES`] on they are a fresh anonymous
/// mapping advised to use transparent huge pages before anything touches it: a matvec
/// streams the whole weight once per token, and with 4 KiB pages every page costs a TLB
/// miss and restarts the hardware prefetcher (one thread, 14336x4096 Q4_0: 16 -> 21
/// GB/s). A heap allocation would not do: glibc serves a large request from memory it
/// already faulted in with 4 KiB pages once earlier frees have raised its mmap
/// threshold (an NF4 weight quantized after others measured 22 instead of 35 GB/s).
///
/// The bytes start on a 2 MiB boundary of the mapping, and their last 2 MiB page lies
/// inside it when padding to it costs at most an eighth of the weight ([`huge_span`]):
/// Linux backs only whole, aligned 2 MiB ranges of a mapping with huge pages, and
/// `mmap` returns 4 KiB-aligned addresses, so a 4096x4096 Q4_0 weight (9.4 MB) had a
/// fifth of its bytes in 4 KiB pages at its two ends (two Zen 4 threads: 38-41 -> 42-47
/// GB/s with the peer at 59-62, 28-31 -> 29-32 with it at 32-35; 30 interleaved rounds).
pub(crate) enum WeightBuffer {
    Heap(Vec<u8>),
    /// A mapping whose bytes `offset..offset + len` hold the weight.
    Anon {
        map: memmap2::MmapMut,
        offset: usize,
        len: usize,
    },
}

/// Transparent huge page size (shared with the tensor crate's huge-page advice).
const HUGE_PAGE: usize = linattn_tensor::storage::HUGE_PAGE_BYTES;

/// Bytes a huge-page-aligned weight of `len` bytes spans: `len` rounded up to whole huge
/// pages when the padding is at most `len / 8` (its last page is then a huge page too;
/// the padding is resident), `len` otherwise (the tail past the last whole huge page
/// stays in 4 KiB pages).
fn huge_span(len: usize) -> usize {
    let rounded = len.next_multiple_of(HUGE_PAGE);
    if rounded - len <= len / 8 { rounded } else { len }
}

impl WeightBuffer {
    /// `len` zero bytes (a heap vector below the huge-page size or if the mapping fails).
    pub(crate) fn zeroed(len: usize) -> WeightBuffer {
        let span = huge_span(len);
        if len >= linattn_tensor::storage::HUGE_PAGE_MIN_BYTES
            && let Some(map_len) = span.checked_add(HUGE_PAGE)
            && let Ok(map) = memmap2::MmapMut::map_anon(map_len)
        {
            let offset = (map.as_ptr() as usize).next_multiple_of(HUGE_PAGE) - map.as_ptr() as usize;
            // A hint, on the span's whole huge pages only (a tail not worth padding stays
            // in small pages; the slack around the span is never touched). Where THP is
            // off or unsupported the mapping stays in small pages.
            #[cfg(target_os = "linux")]
            let _ = map.advise_range(memmap2::Advice::HugePage, offset, span / HUGE_PAGE * HUGE_PAGE);
            return WeightBuffer::Anon { map, offset, len };
        }
        WeightBuffer::Heap(vec![0u8; len])
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        match self {
            WeightBuffer::Heap(v) => v,
            WeightBuffer::Anon { map, offset, len } => &mut map[*offset..*offset + *len],
        }
    }

    /// The finished bytes as a shareable view (read-only from here on: a view only
    /// hands out shared slices).
    pub(crate) fn into_view(self) -> ByteView {
        match self {
            WeightBuffer::Heap(v) => ByteView::from_vec(v),
            WeightBuffer::Anon { map, offset, len } => {
                ByteView { owner: Arc::new(Owner::Anon(map)), start: offset, len }
            }
        }
    }
}

/// Owner of the bytes behind a [`ByteView`].
enum Owner {
    Vec(Vec<u8>),
    Mmap(memmap2::Mmap),
    /// An anonymous mapping built by [`WeightBuffer`].
    Anon(memmap2::MmapMut),
    Tensor(Tensor),
}

impl Owner {
    fn bytes(&self) -> &[u8] {
        match self {
            Owner::Vec(v) => v,
            Owner::Mmap(m) => m,
            Owner::Anon(m) => m,
            // A tensor owner is only built from a CPU tensor (checked in `from_tensor`).
            Owner::Tensor(t) => t.as_bytes().unwrap_or(&[]),
        }
    }
}

/// An immutable byte range of a shared owner.
#[derive(Clone)]
pub struct ByteView {
    owner: Arc<Owner>,
    start: usize,
    len: usize,
}

impl ByteView {
    /// Takes ownership of a vector.
    pub fn from_vec(v: Vec<u8>) -> ByteView {
        let len = v.len();
        ByteView { owner: Arc::new(Owner::Vec(v)), start: 0, len }
    }

    /// Wraps a memory mapping (the whole mapping).
    pub fn from_mmap(m: memmap2::Mmap) -> ByteView {
        let len = m.len();
        ByteView { owner: Arc::new(Owner::Mmap(m)), start: 0, len }
    }

    /// Shares the bytes of a CPU tensor (zero-copy); errors for GPU tensors.
    pub fn from_tensor(t: &Tensor) -> Result<ByteView> {
        let len = t.as_bytes()?.len();
        Ok(ByteView { owner: Arc::new(Owner::Tensor(t.clone())), start: 0, len })
    }

    /// The sub-range `start..start+len` of this view (zero-copy).
    pub fn slice(&self, start: usize, len: usize) -> Result<ByteView> {
        let end = start.checked_add(len).filter(|&e| e <= self.len).ok_or_else(|| {
            Error::invalid(format!("byte range {start}..{start}+{len} is outside a view of {} bytes", self.len))
        })?;
        let _ = end;
        Ok(ByteView { owner: self.owner.clone(), start: self.start + start, len })
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.owner.bytes()[self.start..self.start + self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the bytes live in a memory-mapped file.
    pub fn is_mapped(&self) -> bool {
        matches!(*self.owner, Owner::Mmap(_))
    }
}

impl std::fmt::Debug for ByteView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ByteView({} bytes{})", self.len, if self.is_mapped() { ", mapped" } else { "" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small and huge-page-sized buffers start zeroed, keep what was written, and
    /// freeze into views of exactly those bytes (sub-views included); the large ones
    /// are anonymous mappings, not file mappings, and start on a huge-page boundary.
    #[test]
    fn weight_buffers_keep_their_bytes() {
        // The last one is a 4096x4096 Q4_0 weight, whose span is padded to 10 MiB.
        for len in [0usize, 100, linattn_tensor::storage::HUGE_PAGE_MIN_BYTES + 5, 9_437_184] {
            let mut buffer = WeightBuffer::zeroed(len);
            let bytes = buffer.as_mut_slice();
            assert_eq!(bytes.len(), len);
            assert!(bytes.iter().all(|&b| b == 0), "zeroed, len {len}");
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (i % 253) as u8;
            }
            let large = matches!(buffer, WeightBuffer::Anon { .. });
            assert_eq!(large, len >= linattn_tensor::storage::HUGE_PAGE_MIN_BYTES, "len {len}");
            let view = buffer.into_view();
            if large {
                assert_eq!(view.as_slice().as_ptr() as usize % HUGE_PAGE, 0, "len {len} starts on a huge page");
            }
            assert!(!view.is_mapped(), "an anonymous buffer is not a mapped file");
            assert!(view.as_slice().iter().enumerate().all(|(i, &b)| b == (i % 253) as u8), "len {len}");
            if len > 10 {
                assert_eq!(view.slice(3, 4).unwrap().as_slice(), &[3, 4, 5, 6]);
            }
        }
    }

    /// The span is padded to whole huge pages only when that costs at most an eighth.
    #[test]
    fn huge_span_pads_only_cheaply() {
        const MIB: usize = 1 << 20;
        assert_eq!(huge_span(9_437_184), 10 * MIB); // 0.6 MB of 9.4
        assert_eq!(huge_span(33_030_144), 32 * MIB); // exactly 31.5 MiB -> 32
        assert_eq!(huge_span(4 * MIB + 5), 4 * MIB + 5); // 2 MiB of padding: too much
        assert_eq!(huge_span(16 * MIB), 16 * MIB);
        assert_eq!(huge_span(17 * MIB), 18 * MIB);
    }
}
