//! `linattn quant ...`: what linattn reads and writes, for users and other tools.
//!
//! - `inspect FILE [--json]`: metadata and tensors (name, format, shape, offset) of a GGUF
//!   file or a quantized safetensors checkpoint (bitsandbytes, FP8).
//! - `dequant FILE --tensor NAME --out OUT.safetensors`: one tensor as f32.
//! - `quantize IN.safetensors --format q4_0|q8_0|q4_k|q6_k|nf4|fp4|int8|fp8 --out OUT`:
//!   a checkpoint quantized to GGUF (ggml formats) or safetensors (the others).

use std::path::PathBuf;
use std::process::ExitCode;

use linattn_quant::{QuantFormat, cli_support};
use linattn_tensor::Result;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: QuantCommand,
}

#[derive(clap::Subcommand)]
enum QuantCommand {
    /// List metadata and tensors of a GGUF or quantized safetensors file.
    Inspect {
        file: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Write one tensor as f32 safetensors.
    Dequant {
        file: PathBuf,
        #[arg(long)]
        tensor: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Quantize the 2-D float tensors of a safetensors checkpoint.
    Quantize {
        input: PathBuf,
        /// q4_0, q8_0, q4_k, q6_k (to .gguf) or nf4, fp4, int8, fp8 (to .safetensors).
        #[arg(long)]
        format: String,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(args: &Args) -> Result<ExitCode> {
    match &args.command {
        QuantCommand::Inspect { file, json } => {
            let report = cli_support::inspect(file)?;
            if *json {
                println!("{report}");
            } else {
                print!("{}", cli_support::inspect_text(&report));
            }
        }
        QuantCommand::Dequant { file, tensor, out } => {
            cli_support::dequant(file, tensor, out)?;
            println!("wrote {tensor} as f32 to {}", out.display());
        }
        QuantCommand::Quantize { input, format, out } => {
            let names = cli_support::quantize(input, QuantFormat::parse(format)?, out)?;
            println!("quantized {} tensors to {format} in {}", names.len(), out.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
