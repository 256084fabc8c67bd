//! `linattn bench tensor`: f32 matmul through the tensor core (`gemm` on the CPU, tiled
//! kernels on GPUs) against `torch.matmul` on the CPU, measured in the same run.

use std::process::ExitCode;

use linattn_tensor::{DType, Device, Result, Tensor, ops};
use serde_json::json;

use super::{peer, report, timing};

#[derive(clap::Args)]
pub struct Args {
    /// cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// f32, f16 or bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Square sizes to time (M = N = K).
    #[arg(long, value_delimiter = ',', default_value = "256,1024,2048")]
    sizes: Vec<usize>,
    /// Skip the PyTorch peer.
    #[arg(long)]
    no_peer: bool,
    /// Rewrite the "Tensor core" section of this markdown file.
    #[arg(long)]
    update_docs: Option<std::path::PathBuf>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let device = Device::parse(&args.device)?;
    let dtype = DType::parse(&args.dtype)?;
    let mut records = Vec::new();
    for &n in &args.sizes {
        let a = Tensor::from_f32(&vec![0.5f32; n * n], dtype, [n, n])?.to_device(&device)?;
        let b = Tensor::from_f32(&vec![0.25f32; n * n], dtype, [n, n])?.to_device(&device)?;
        let t = timing::time_runs(&device, 2, 5, 0.5, || ops::matmul(&a, &b).map(|_| ()))?;
        let flops = 2.0 * (n as f64).powi(3);
        let mut rec = json!({
            "op": "matmul", "device": device.name(), "dtype": dtype.name(), "M": n, "N": n, "K": n,
            "ms": t.median_ms, "min_ms": t.min_ms, "max_ms": t.max_ms, "runs": t.runs, "tflops": flops / (t.median_ms * 1e-3) / 1e12,
        });
        if !args.no_peer {
            match peer::run_peer(
                "tensor_torch.py",
                &["--n".into(), n.to_string(), "--dtype".into(), dtype.name().into()],
            ) {
                Ok(lines) => {
                    if let Some(ms) = lines.first().and_then(|l| l.get("ms")).and_then(|v| v.as_f64()) {
                        rec["torch_ms"] = json!(ms);
                        rec["speedup_vs_torch"] = json!(ms / t.median_ms);
                    }
                }
                Err(e) => rec["peer_error"] = json!(e.to_string()),
            }
        }
        report::emit(&rec);
        records.push(rec);
    }
    if let Some(path) = &args.update_docs {
        let body = format!(
            "Machine: {}. Date: {}. Commit: {}. Command: `linattn bench tensor --device {} --dtype {}`.\n\n{}",
            report::machine(),
            report::today(),
            report::commit(),
            args.device,
            args.dtype,
            report::markdown_table(
                &records,
                &["op", "device", "dtype", "M", "ms", "tflops", "torch_ms", "speedup_vs_torch"]
            )
        );
        report::update_markdown_section(path, "Tensor core: matmul", &body)?;
    }
    Ok(ExitCode::SUCCESS)
}
