//! `linattn bench <area>`: benchmark programs. Each prints one JSON object per line
//! (`op`, `device`, `dtype`, shapes, `ms` (median), throughput, ratios to peers measured
//! in the same run) and, with `--update-docs FILE`, rewrites that area's section of
//! `docs/benchmarks.md` with the machine, date and commit.

mod adapters;
mod attn;
pub mod device_bw;
pub mod membw;
pub mod peer;
mod quant;
pub mod report;
mod tensor;
pub mod timing;

use std::process::ExitCode;

use linattn_tensor::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    area: Area,
}

#[derive(clap::Subcommand)]
enum Area {
    /// Dense matmul of the tensor core against PyTorch (CPU) in the same run.
    Tensor(tensor::Args),
    /// Fused unmerged LoRA forward against the base matmul alone.
    Adapters(adapters::Args),
    /// Linear-attention ops (prefill and decode step) against PyTorch / fla peers.
    Attn(attn::Args),
    /// Quantized matvec/matmul on one or more devices (`--device cpu,wgpu`) against each
    /// device's memory bandwidth and, between devices, as speed ratios.
    Quant(quant::Args),
    /// Memory read bandwidth of this machine (the peer of bandwidth-bound kernels).
    Membw,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.area {
        Area::Tensor(a) => tensor::run(a),
        Area::Adapters(a) => adapters::run(a),
        Area::Quant(a) => quant::run(a),
        Area::Attn(a) => attn::run(a),
        Area::Membw => {
            let gbps = membw::read_bandwidth_gbps(5);
            report::emit(
                &serde_json::json!({ "op": "memory_read", "device": "cpu", "gbps": gbps, "bytes": membw::SCAN_BYTES }),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
