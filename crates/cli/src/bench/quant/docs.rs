//! The markdown sections `linattn bench quant --update-docs` writes: the CPU matvec
//! table and the GPU section (machine, command, peers, table with ratios, notes), with
//! small ratios kept to three significant digits.

use super::*;

/// `x` with three significant digits (no exponent): lavapipe ratios reach 1e-3 and less,
/// which the table's fixed three decimals would round away.
pub(super) fn three_significant(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return x.to_string();
    }
    let decimals = (2 - x.abs().log10().floor() as i64).clamp(0, 9) as usize;
    format!("{x:.decimals$}")
}

/// A copy of `record` whose float fields among `columns` are strings of three significant
/// digits (integers stay as they are).
pub(super) fn with_significant_digits(record: &Value, columns: &[&str]) -> Value {
    let mut row = record.clone();
    for c in columns {
        if let Some(Value::Number(n)) = record.get(*c)
            && n.is_f64()
        {
            row[*c] = json!(three_significant(n.as_f64().unwrap_or(f64::NAN)));
        }
    }
    row
}

/// The records that hold a time (not the `skipped` / `error` lines).
pub(super) fn timed_records(records: &[Value]) -> Vec<Value> {
    records.iter().filter(|r| r.get("ms").is_some()).cloned().collect()
}

/// The CPU-only section: machine, command, peer and one table of every timed case.
pub(super) fn cpu_section(bandwidth: f64, records: &[Value]) -> String {
    let columns = [
        "op",
        "format",
        "kernel",
        "activations",
        "out",
        "in",
        "batch",
        "weight_copies",
        "ms",
        "gbps",
        "memory_gbps",
        "fraction_of_bandwidth",
        "tflops",
    ];
    let rows: Vec<Value> = timed_records(records).iter().map(|r| with_significant_digits(r, &columns)).collect();
    format!(
        "Machine: {}. Date: {}. Commit: {}. Command: `{}`. Peer: memory read bandwidth measured right before \
         each matvec (`memory_gbps`; {bandwidth:.2} GB/s at the start of the run). Target: matvec at >= 70% of \
         it. `gbps` counts the quantized weight's bytes (for batches above 1 it is not a bandwidth figure: \
         those products are compute-bound, see `tflops`, counting `2 batch out in`); `activations` says how x \
         enters the product (`q8`: quantized per row and dotted with integer kernels; `f32`; `q16`: the \
         15-bit NF4 matvec; `llm.int8`).\n\n{}",
        report::machine(),
        report::today(),
        report::commit(),
        command_line(),
        report::markdown_table(&rows, &columns)
    )
}

/// The command line of this process with the binary named `linattn`, quoted for a shell.
pub(super) fn command_line() -> String {
    let plain = |a: &str| !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || ",._:/=+-".contains(c));
    std::iter::once("linattn".to_string())
        .chain(std::env::args().skip(1).map(|a| if plain(&a) { a } else { format!("'{}'", a.replace('\'', "'\\''")) }))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a run measured, for its docs section.
#[derive(Clone, Copy)]
pub(super) struct RunOutcome<'a> {
    pub(super) specs: &'a [DeviceSpec],
    pub(super) devices: &'a [BenchDevice],
    pub(super) records: &'a [Value],
    pub(super) problems: &'a [String],
    pub(super) batch_sizes: &'a [usize],
    pub(super) elapsed_s: f64,
}

/// The section of a run that lists a GPU: machine, command, peers, table, notes.
pub(super) fn gpu_section(outcome: &RunOutcome, gpu_dtype: DType, max_run_s: f64) -> String {
    let RunOutcome { specs, devices, records, problems, batch_sizes, elapsed_s } = *outcome;
    let bandwidths: String = devices
        .iter()
        .map(|d| {
            let who = match d.device {
                Device::Cpu => d.device.name(),
                _ => format!("`{}`, {}", d.device, d.device.name()),
            };
            let how = d.bandwidth.as_ref().map_or_else(
                || "not measured".to_string(),
                |b| {
                    format!(
                        "{:.2} GB/s ({}, {} MiB x {} per pass, best of {} passes)",
                        b.gbps,
                        b.method,
                        b.buffer_bytes >> 20,
                        b.scans_per_pass,
                        b.passes
                    )
                },
            );
            format!("  - {who}: {how}\n")
        })
        .collect();
    let x_dtype = if gpu_dtype == DType::F32 {
        "x is f32 on every device".to_string()
    } else {
        format!("x is {} on GPUs and f32 on the CPU", gpu_dtype.name())
    };
    let mut body = format!(
        "Machine: {}. Date: {}. Commit: {}. Command: `{}` (batches {}; {elapsed_s:.0} s in all).\n\n\
         Peers measured in the same run:\n\
         - each device's memory read bandwidth, the base of `fraction_of_bandwidth` (GPU buffers: 256 MiB or the \
         device's largest storage binding; see `crates/cli/src/bench/device_bw.rs`):\n{bandwidths}\
         - `ratio_vs_cpu` = CPU ms / device ms for the same format, shape and batch, timed back to back with the \
         CPU;\n\
         - `wgpu_vs_cuda` = CUDA ms / WebGPU ms, likewise.\n\n\
         {x_dtype}; `gbps` counts the quantized weight's bytes; each case cycles through `weight_copies` copies of \
         its weight (at least 256 MiB on both, the CPU's as much as its peer scans), so they are read from \
         memory, not from a cache; `--max-run-s` skips batches predicted to run \
         longer than {} s (listed below). Targets: CUDA matvec at >= 70% of HBM bandwidth on an H100, batch 64 \
         and 512 in TFLOP/s.\n\n",
        report::machine(),
        report::today(),
        report::commit(),
        command_line(),
        batch_sizes.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        max_run_s,
    );
    if devices.iter().any(|d| matches!(&d.device, Device::Wgpu(_)) && d.device.name().contains("llvmpipe")) {
        body.push_str(
            "The WebGPU adapter here is Mesa lavapipe (llvmpipe), a Vulkan driver that runs on the CPU: \
             `ratio_vs_cpu` says how the WGSL kernels do on this CPU against the native CPU kernels, not how \
             they do on a GPU. ",
        );
    }
    if !devices.iter().any(|d| matches!(d.device, Device::Cuda(_))) {
        let why = if specs.iter().any(|s| matches!(s, DeviceSpec::Cuda(_))) {
            "the CUDA device listed did not open".to_string()
        } else {
            match Device::cuda(0) {
                Ok(_) => "no CUDA device was listed, though one opens here".to_string(),
                Err(e) => format!("none was available: {e}"),
            }
        };
        body.push_str(&format!(
            "No CUDA figures and no `wgpu_vs_cuda` ({why}): they need a machine with an NVIDIA GPU, \
             `linattn bench quant --device cpu,cuda,wgpu --update-docs docs/benchmarks.md`."
        ));
    }
    let columns = [
        "op",
        "device_id",
        "format",
        "dtype",
        "out",
        "in",
        "batch",
        "weight_copies",
        "ms",
        "gbps",
        "fraction_of_bandwidth",
        "tflops",
        "ratio_vs_cpu",
        "wgpu_vs_cuda",
    ];
    let rows: Vec<Value> = timed_records(records).iter().map(|r| with_significant_digits(r, &columns)).collect();
    body.push_str(&format!("\n\n{}", report::markdown_table(&rows, &columns)));
    if !problems.is_empty() {
        body.push_str("\nNot measured:\n");
        for p in problems {
            body.push_str(&format!("- {p}\n"));
        }
    }
    body
}
