//! `linattn op <op> --in inputs.safetensors --out outputs.safetensors [--device D]`:
//! runs one attention op on named tensors from a file and writes its named outputs, so
//! any other framework can cross-check linattn. The tensor names per op are listed in
//! `docs/kernels.md` (`linattn_attn::run_named`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use linattn_tensor::io::{SafeTensorsFile, save};
use linattn_tensor::{Device, Result, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Op name: linear_attn, simple_gla, gla (each also *_reference, *_step), hedgehog,
    /// hedgehog_reference, window_linear, window_linear_reference, window_linear_step.
    op: String,
    /// Input tensors (safetensors).
    #[arg(long = "in")]
    input: PathBuf,
    /// Output tensors (safetensors), written atomically.
    #[arg(long)]
    out: PathBuf,
    /// cpu, cuda, cuda:N or wgpu.
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let device = Device::parse(&args.device)?;
    let file = SafeTensorsFile::open(&args.input)?;
    let mut inputs = BTreeMap::new();
    for name in file.names() {
        let tensor = file.tensor(name)?;
        // Index tensors (cu_seqlens) stay on the host; everything else moves to the device.
        let tensor = if tensor.dtype().is_compute_float() { tensor.to_device(&device)? } else { tensor };
        inputs.insert(name.to_string(), tensor);
    }
    let outputs = linattn_attn::run_named(&args.op, &inputs, &device)?;
    let host: Vec<(String, Tensor)> =
        outputs.into_iter().map(|(k, t)| Ok((k, t.to_device(&Device::Cpu)?))).collect::<Result<_>>()?;
    let refs: Vec<(&str, &Tensor)> = host.iter().map(|(k, t)| (k.as_str(), t)).collect();
    save(&args.out, &refs, None)?;
    for (name, t) in &host {
        println!("{name}: {} {}", t.dtype(), t.shape());
    }
    Ok(ExitCode::SUCCESS)
}
