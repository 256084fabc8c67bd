//! `linattn`: the command-line tool of linattn.
//!
//! Subcommands live in their own modules; this file only parses arguments and
//! dispatches. Every command returns `Result`; errors print as `error: ...` and exit 1.

mod bench;
mod conformance;
mod demo;
mod devices;
mod lora;
mod op;
mod quant;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "linattn",
    version,
    about = "Linear-attention kernels, quantization and adapters on CPU, CUDA and WebGPU"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The built-in default workload: a LoLCATs-style layer prefilled and decoded on every
    /// available device, checked against the CPU reference.
    Demo(demo::Args),
    /// List the devices of this machine and whether each can be opened.
    Devices,
    /// Run the cross-device conformance suite on one device against the CPU reference.
    Conformance(conformance::Args),
    /// Run one attention op on named tensors from a safetensors file.
    Op(op::Args),
    /// Quantized checkpoints: inspect GGUF / quantized safetensors, dequantize, quantize.
    Quant(quant::Args),
    /// peft-compatible LoRA/DoRA adapters: merge into checkpoints, inspect, combine.
    Lora(lora::Args),
    /// Benchmarks: print JSON lines, optionally update docs/benchmarks.md.
    Bench(bench::Args),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("LINATTN_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Devices => devices::run(),
        Command::Demo(args) => demo::run(&args),
        Command::Conformance(args) => conformance::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Lora(args) => lora::run(&args),
        Command::Op(args) => op::run(&args),
        Command::Quant(args) => quant::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}
