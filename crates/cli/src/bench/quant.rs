//! `linattn bench quant`: quantized matvec (decode, batch 1) and small-batch matmul on
//! the CPU, reported as weight bytes streamed per second against this machine's memory
//! read bandwidth measured in the same run (`membw`). Target: >= 70% of it with all
//! cores. The weight is far larger than the last-level cache, so every run streams it
//! from memory.

use std::process::ExitCode;

use linattn_quant::cpu::CpuKernel;
use linattn_quant::{QuantFormat, QuantizedWeight};
use linattn_tensor::{Device, Error, Result};
use serde_json::json;

use super::{membw, report, timing};

#[derive(clap::Args)]
pub struct Args {
    /// Only cpu is benchmarked here (GPU quantized kernels: see docs/benchmarks.md).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Formats to time.
    #[arg(long, value_delimiter = ',', default_value = "q4_0,q8_0,q4_k,nf4")]
    formats: Vec<String>,
    /// Weight shapes as OUTxIN.
    #[arg(long, value_delimiter = ',', default_value = "4096x4096,14336x4096")]
    shapes: Vec<String>,
    /// CPU kernel: scalar, avx2 or avx512 (default: the fastest this CPU supports).
    #[arg(long)]
    kernel: Option<String>,
    /// Batch sizes (1 = matvec).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// Rewrite the "Quantization" section of this markdown file.
    #[arg(long)]
    update_docs: Option<std::path::PathBuf>,
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s.split_once('x').ok_or_else(|| Error::invalid(format!("shape `{s}`: expected OUTxIN")))?;
    let parse = |v: &str| v.parse::<usize>().map_err(|_| Error::invalid(format!("shape `{s}`: `{v}` is not a number")));
    Ok((parse(a)?, parse(b)?))
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let device = Device::parse(&args.device)?;
    if !matches!(device, Device::Cpu) {
        return Err(Error::NotImplementedOnDevice { op: "bench quant", device: device.to_string() });
    }
    let bandwidth = membw::read_bandwidth_gbps(5);
    report::emit(&json!({ "op": "memory_read", "device": "cpu", "gbps": bandwidth }));
    let kernel = match &args.kernel {
        Some(name) => CpuKernel::parse(name)?,
        None => CpuKernel::detect(),
    };
    let mut records = Vec::new();
    for shape in &args.shapes {
        let (rows, cols) = parse_shape(shape)?;
        let values: Vec<f32> =
            (0..rows * cols).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
        for format in &args.formats {
            let weight = QuantizedWeight::quantize(&values, [rows, cols], QuantFormat::parse(format)?)?;
            let bytes = weight.storage_bytes();
            for &m in &args.batch {
                let x: Vec<f32> = (0..m * cols).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
                let mut y = vec![0f32; m * rows];
                let t = timing::time_runs(&device, 2, 7, 1.0, || {
                    if m == 1 {
                        weight.matvec_into(kernel, &x, &mut y)
                    } else {
                        weight.matmul_into(kernel, &x, m, &mut y)
                    }
                })?;
                let gbps = bytes as f64 / (t.median_ms * 1e-3) / 1e9;
                let rec = json!({
                    "op": if m == 1 { "matvec" } else { "matmul" }, "device": device.name(), "format": format,
                    "kernel": format!("{kernel:?}"), "out": rows, "in": cols, "batch": m, "weight_bytes": bytes,
                    "ms": t.median_ms, "min_ms": t.min_ms, "gbps": gbps, "memory_gbps": bandwidth,
                    "fraction_of_bandwidth": gbps / bandwidth,
                    "tflops": 2.0 * (m * rows * cols) as f64 / (t.median_ms * 1e-3) / 1e12,
                });
                report::emit(&rec);
                records.push(rec);
            }
        }
    }
    if let Some(path) = &args.update_docs {
        let body = format!(
            "Machine: {}. Date: {}. Commit: {}. Command: `linattn bench quant`. Peer: memory read bandwidth \
             measured in the same run: {bandwidth:.2} GB/s. Target: matvec at >= 70% of it.\n\n{}",
            report::machine(),
            report::today(),
            report::commit(),
            report::markdown_table(
                &records,
                &["op", "format", "kernel", "out", "in", "batch", "ms", "gbps", "fraction_of_bandwidth"]
            )
        );
        report::update_markdown_section(path, "Quantization: CPU matvec", &body)?;
    }
    Ok(ExitCode::SUCCESS)
}
