//! `linattn lora ...`: peft-compatible adapters on whole checkpoints.
//!
//! - `merge --base BASE.safetensors --adapter DIR --out OUT.safetensors [--unmerge]`:
//!   W' = W + s B A (or back), streamed tensor by tensor.
//! - `inspect DIR`: the adapter's config and modules.
//! - `combine --adapter DIR:WEIGHT ... --method cat|linear|svd [--rank R] --out DIR`.
//! - `export-gguf --adapter DIR --out OUT.gguf [--dtype f32|f16] [--arch NAME]`: a GGUF
//!   LoRA adapter in llama.cpp's layout (`general.type = adapter`).

use std::path::PathBuf;
use std::process::ExitCode;

use linattn_adapters::cli_support;
use linattn_tensor::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: LoraCommand,
}

#[derive(clap::Subcommand)]
enum LoraCommand {
    /// Merge an adapter into a base checkpoint (or unmerge it), tensor by tensor.
    Merge {
        /// Base checkpoint (.safetensors).
        #[arg(long)]
        base: PathBuf,
        /// peft adapter directory (adapter_config.json + adapter_model.safetensors).
        #[arg(long)]
        adapter: PathBuf,
        /// Output checkpoint (.safetensors), written atomically.
        #[arg(long)]
        out: PathBuf,
        /// Subtract the adapter instead of adding it.
        #[arg(long)]
        unmerge: bool,
    },
    /// Print an adapter's configuration and modules.
    Inspect {
        /// peft adapter directory.
        dir: PathBuf,
    },
    /// Combine weighted adapters into a new one (peft's add_weighted_adapter).
    Combine {
        /// DIR:WEIGHT, repeated.
        #[arg(long = "adapter", required = true)]
        adapters: Vec<String>,
        /// cat (exact), linear or svd.
        #[arg(long, default_value = "cat")]
        method: String,
        /// Target rank for svd.
        #[arg(long)]
        rank: Option<usize>,
        /// Output adapter directory.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write an adapter as a GGUF LoRA adapter file (llama.cpp's convert_lora_to_gguf layout).
    ExportGguf {
        /// peft adapter directory.
        #[arg(long)]
        adapter: PathBuf,
        /// Output .gguf file.
        #[arg(long)]
        out: PathBuf,
        /// Tensor dtype: f32 or f16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        /// general.architecture to record (llama.cpp checks it against the base model).
        #[arg(long)]
        arch: Option<String>,
    },
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        LoraCommand::Merge { base, adapter, out, unmerge } => {
            let report = cli_support::lora_merge(base, adapter, out, *unmerge)?;
            println!(
                "{} {} tensors, replaced {}, copied {}, wrote {} bytes to {}",
                if *unmerge { "unmerged" } else { "merged" },
                report.merged.len(),
                report.replaced.len(),
                report.copied,
                report.bytes_written,
                out.display()
            );
        }
        LoraCommand::Inspect { dir } => println!("{}", cli_support::inspect_adapter(dir)?),
        LoraCommand::Combine { adapters, method, rank, out } => {
            let inputs = adapters.iter().map(|s| cli_support::parse_weighted_adapter(s)).collect::<Result<Vec<_>>>()?;
            let combination = cli_support::parse_combination(method, *rank)?;
            println!("{}", cli_support::combine_adapter_dirs(&inputs, combination, out)?);
        }
        LoraCommand::ExportGguf { adapter, out, dtype, arch } => {
            let report = cli_support::export_adapter_gguf(adapter, out, dtype, arch.as_deref())?;
            println!("wrote {}: {report}", out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
