//! `linattn bench adapters`: the fused unmerged LoRA forward `x W^T + s (x A^T) B^T`
//! against the base product `x W^T` alone, measured in the same run; the target is at most
//! 15% overhead at rank 8 for batch 1 and batch 64.

use std::process::ExitCode;

use linattn_adapters::base::{BaseLinear, DenseLinear};
use linattn_adapters::forward::lora_forward;
use linattn_adapters::lora::{LoraModule, ModuleKind};
use linattn_tensor::{DType, Device, Result, Tensor};
use serde_json::json;

use super::{report, timing};

#[derive(clap::Args)]
pub struct Args {
    /// cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16 (x and W).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Input features of the weight.
    #[arg(long, default_value_t = 4096)]
    in_features: usize,
    /// Output features of the weight.
    #[arg(long, default_value_t = 4096)]
    out_features: usize,
    /// Batch sizes (rows of x).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    batch: Vec<usize>,
    /// LoRA ranks.
    #[arg(long, value_delimiter = ',', default_value = "8")]
    rank: Vec<usize>,
    /// Rewrite the "Adapters" section of this markdown file.
    #[arg(long)]
    update_docs: Option<std::path::PathBuf>,
}

fn pattern(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) % 2001) as f32 / 1000.0 - 1.0)
        .collect()
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let device = Device::parse(&args.device)?;
    let dtype = DType::parse(&args.dtype)?;
    let (n_in, n_out) = (args.in_features, args.out_features);
    let weight = Tensor::from_f32(&pattern(n_in * n_out, 1), dtype, [n_out, n_in])?.to_device(&device)?;
    let base = DenseLinear::new(weight)?;
    let mut records = Vec::new();
    for &rank in &args.rank {
        let a = Tensor::from_f32(&pattern(rank * n_in, 2), DType::F32, [rank, n_in])?;
        let b = Tensor::from_f32(&pattern(n_out * rank, 3), DType::F32, [n_out, rank])?;
        let module = LoraModule::new("bench", ModuleKind::Linear, &a, &b, None, 2.0, false)?;
        for &batch in &args.batch {
            let x = Tensor::from_f32(&pattern(batch * n_in, 4), dtype, [batch, n_in])?.to_device(&device)?;
            let base_t = timing::time_runs(&device, 2, 7, 1.0, || base.forward(&x).map(|_| ()))?;
            let lora_t = timing::time_runs(&device, 2, 7, 1.0, || lora_forward(&base, &module, &x).map(|_| ()))?;
            let overhead = lora_t.median_ms / base_t.median_ms - 1.0;
            let flops = 2.0 * (batch * n_in * n_out) as f64;
            let rec = json!({
                "op": "lora_forward", "device": device.name(), "dtype": dtype.name(), "batch": batch,
                "in": n_in, "out": n_out, "rank": rank, "ms": lora_t.median_ms, "base_ms": base_t.median_ms,
                "overhead_vs_base": overhead, "target_overhead": 0.15, "meets_target": overhead <= 0.15,
                "tflops_base": flops / (base_t.median_ms * 1e-3) / 1e12,
                "gbps_weights": (n_in * n_out * dtype.block_bytes()) as f64 / (lora_t.median_ms * 1e-3) / 1e9,
            });
            report::emit(&rec);
            records.push(rec);
        }
    }
    if let Some(path) = &args.update_docs {
        let body = format!(
            "Machine: {}. Date: {}. Commit: {}. Command: `linattn bench adapters --device {} --dtype {}`. \
             Peer: the base product `x W^T` alone, timed in the same run.\n\n{}",
            report::machine(),
            report::today(),
            report::commit(),
            args.device,
            args.dtype,
            report::markdown_table(
                &records,
                &["device", "dtype", "batch", "in", "out", "rank", "base_ms", "ms", "overhead_vs_base", "meets_target"]
            )
        );
        report::update_markdown_section(path, &format!("Adapters: fused LoRA forward ({})", args.device), &body)?;
    }
    Ok(ExitCode::SUCCESS)
}
