//! The weights `linattn bench quant` times: format names and where a weight's bytes
//! live ([`BenchFormat`]), and the further copies a CPU case cycles through so every
//! product reads its weight from memory ([`cpu_rotation`]).

use linattn_quant::bnb::four_bit::{FourBitKind, FourBitWeight};
use linattn_quant::gguf::{GgufFile, GgufWriter};
use linattn_quant::{QuantFormat, QuantizedWeight};
use linattn_tensor::{Error, Result};

/// A format to time: a [`QuantFormat`] by name, or `nf4_dq` / `fp4_dq`, NF4 / FP4 with
/// double-quantized absmax (bitsandbytes' `compress_statistics`, the layout of most
/// QLoRA checkpoints), which decode their scales per row. A trailing `_q16` on NF4 / FP4
/// (`nf4_q16`, `nf4_dq_q16`) times the CPU matvec with 15-bit instead of the default
/// 8-bit activations (`cpu::fourbit_matvec_q16_into`). A ggml format may carry a
/// source: `q4_0:gguf` reads the weight back from a one-tensor GGUF file written to the
/// temp directory and uses it straight from the mapping, as a loaded model does.
pub(super) struct BenchFormat {
    pub(super) label: String,
    pub(super) format: QuantFormat,
    double_quant: bool,
    source: WeightSource,
    /// NF4 / FP4 CPU matvec with 15-bit activations.
    pub(super) fifteen_bit: bool,
}

/// Where a benchmarked weight's bytes live.
#[derive(Clone, Copy, Debug, PartialEq)]
enum WeightSource {
    /// Quantized in this process (huge-page memory from 4 MiB on).
    Quantized,
    /// A memory-mapped GGUF file (page-cache pages).
    GgufMapped,
}

impl BenchFormat {
    pub(super) fn parse(name: &str) -> Result<BenchFormat> {
        let (format_name, source) = match name.split_once(':') {
            None => (name, WeightSource::Quantized),
            Some((f, "gguf")) => (f, WeightSource::GgufMapped),
            Some((_, other)) => {
                return Err(Error::invalid(format!(
                    "bench quant: format {name}: unknown source `{other}` (expected gguf)"
                )));
            }
        };
        let (format_name, fifteen_bit) = match format_name.strip_suffix("_q16") {
            Some(base) => (base, true),
            None => (format_name, false),
        };
        let (base, double_quant) = match format_name.strip_suffix("_dq") {
            Some(base @ ("nf4" | "fp4")) => (base, true),
            _ => (format_name, false),
        };
        let format = QuantFormat::parse(base)?;
        if fifteen_bit && !matches!(format, QuantFormat::Nf4 | QuantFormat::Fp4) {
            return Err(Error::invalid(format!("bench quant: format {name}: _q16 applies to nf4 and fp4 only")));
        }
        if source != WeightSource::Quantized && format.ggml().is_none() {
            return Err(Error::invalid(format!("bench quant: format {name}: only ggml formats are stored in GGUF")));
        }
        Ok(BenchFormat { label: name.to_string(), format, double_quant, source, fifteen_bit })
    }

    pub(super) fn quantize(&self, values: &[f32], rows: usize, cols: usize) -> Result<QuantizedWeight> {
        let weight = if self.double_quant {
            let kind = if self.format == QuantFormat::Nf4 { FourBitKind::Nf4 } else { FourBitKind::Fp4 };
            QuantizedWeight::FourBit(FourBitWeight::quantize(values, [rows, cols], kind, 64, true)?)
        } else {
            QuantizedWeight::quantize(values, [rows, cols], self.format)?
        };
        match self.source {
            WeightSource::Quantized => Ok(weight),
            WeightSource::GgufMapped => through_gguf(&weight),
        }
    }
}

/// `weight` written to a one-tensor GGUF file in the temp directory and read back mapped
/// (the file is removed once mapped; the mapping keeps its pages).
fn through_gguf(weight: &QuantizedWeight) -> Result<QuantizedWeight> {
    let path = std::env::temp_dir().join(format!("linattn-bench-quant-{}.gguf", std::process::id()));
    let mut writer = GgufWriter::new();
    writer.add_weight("weight", weight)?;
    writer.write(&path)?;
    let opened = GgufFile::open(&path).and_then(|file| file.weight("weight"));
    let removed = std::fs::remove_file(&path).map_err(|e| Error::io(&path, e));
    let mapped = opened?;
    removed?;
    Ok(mapped)
}

/// Bytes of weight a CPU case cycles through: as many as the bandwidth peer scans
/// ([`crate::bench::membw::SCAN_BYTES`], 256 MiB), so kernel and peer read from the same
/// cache regime, as a decode step does once a model is larger than the cache. With 64
/// MiB (twice the VM's 32 MiB L3) both the kernels and a peer scanning 64 MiB still read
/// 10-20% faster than at 256 MiB (2-core Zen 4 VM, 40 interleaved rounds: peer 39-43
/// against 35-38 GB/s, Q8_0 4096x4096 41-49 against 34-38), which overstated every
/// ratio to the 256 MiB peer.
const CPU_ROTATION_BYTES: usize = crate::bench::membw::SCAN_BYTES;

/// Most copies of one weight (small shapes stay cache-resident rather than being
/// quantized thousands of times).
const MAX_CPU_COPIES: usize = 32;

/// How many copies of a weight of `bytes` bytes hold at least [`CPU_ROTATION_BYTES`]
/// together (at most [`MAX_CPU_COPIES`]).
fn cpu_copies(bytes: usize) -> usize {
    CPU_ROTATION_BYTES.div_ceil(bytes.max(1)).clamp(1, MAX_CPU_COPIES)
}

/// The further copies of a weight of `bytes` bytes (quantized again, each in its own
/// mapping) that [`cpu_copies`] asks for.
pub(super) fn cpu_rotation(
    format: &BenchFormat,
    values: &[f32],
    rows: usize,
    cols: usize,
    bytes: usize,
) -> Result<Vec<QuantizedWeight>> {
    (1..cpu_copies(bytes)).map(|_| format.quantize(values, rows, cols)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_copies_hold_the_peer_scan() {
        // 4096x4096 Q4_0 (9.4 MB) -> 29 copies, 14336x4096 Q8_0 (62 MB) -> 5, tiny -> capped.
        assert_eq!(cpu_copies(9_437_184), 29);
        assert_eq!(cpu_copies(62_390_272), 5);
        assert_eq!(cpu_copies(CPU_ROTATION_BYTES), 1);
        assert_eq!(cpu_copies(1024), MAX_CPU_COPIES);
        assert_eq!(cpu_copies(0), MAX_CPU_COPIES);
    }

    #[test]
    fn formats_parse_with_their_sources() {
        let f = BenchFormat::parse("q4_0:gguf").unwrap();
        assert_eq!((f.format, f.source, f.double_quant), (QuantFormat::Q4_0, WeightSource::GgufMapped, false));
        let f = BenchFormat::parse("nf4_dq").unwrap();
        assert_eq!((f.format, f.source, f.double_quant), (QuantFormat::Nf4, WeightSource::Quantized, true));
        let f = BenchFormat::parse("fp4_dq_q16").unwrap();
        assert_eq!((f.format, f.double_quant, f.fifteen_bit), (QuantFormat::Fp4, true, true));
        assert!(!BenchFormat::parse("nf4").unwrap().fifteen_bit);
        for (bad, says) in
            [("nf4:gguf", "only ggml"), ("q4_0:disk", "unknown source"), ("q5_0", "q5_0"), ("q4_0_q16", "nf4 and fp4")]
        {
            let err = BenchFormat::parse(bad).err().unwrap().to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn weights_read_back_from_gguf_are_mapped_and_equal() {
        let values: Vec<f32> = (0..8 * 64).map(|i| (i % 13) as f32 / 6.0 - 1.0).collect();
        let f = BenchFormat::parse("q8_0:gguf").unwrap();
        let mapped = f.quantize(&values, 8, 64).unwrap();
        let fresh = QuantizedWeight::quantize(&values, [8, 64], QuantFormat::Q8_0).unwrap();
        match (&mapped, &fresh) {
            (QuantizedWeight::Ggml { bytes: m, .. }, QuantizedWeight::Ggml { bytes: q, .. }) => {
                assert!(m.is_mapped() && !q.is_mapped());
                assert_eq!(m.as_slice(), q.as_slice());
            }
            _ => panic!("expected ggml weights"),
        }
    }
}
