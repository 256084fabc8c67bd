//! `linattn bench quant`: quantized matvec (decode, batch 1) and matmul `y = x W^T` on
//! one or more devices (`--device cpu,wgpu`, `cuda,wgpu`, ...), reported as weight bytes
//! streamed per second against each device's memory read bandwidth measured in the same
//! run (`device_bw`), and in TFLOP/s (`2 batch out in` per product).
//!
//! Layout of a run: the devices are opened and their bandwidth measured first (a device
//! that fails to open prints a JSON line with `error` and the run goes on without it).
//! Then for each shape and format the weight is quantized once on the host and uploaded
//! once per GPU (`QuantizedWeight::to_device`); for each batch every device is timed
//! back to back, so the ratios of one record come from the same moment:
//! - `ratio_vs_cpu` = CPU ms / device ms (same format, shape and batch) on GPU records
//!   when `cpu` is listed too; on Mesa lavapipe it compares the WGSL kernels run by a
//!   CPU Vulkan driver with the native CPU kernels;
//! - `wgpu_vs_cuda` = CUDA ms / WebGPU ms on WebGPU records when a CUDA device is listed
//!   (the first one listed).
//!
//! Numerics and counting: the weight is the same deterministic pattern in [-1, 1] on every
//! device; x is f32 on the CPU (its kernels take f32) and `--dtype` (f32, f16, bf16) on
//! GPUs, where accumulation is f32. `weight_bytes` is the host storage of the quantized
//! weight (the device form of NF4/FP4/int8 may be a little larger), `gbps` =
//! weight_bytes / median time, `fraction_of_bandwidth` = gbps / the device's bandwidth.
//! Targets (the project issue): CPU matvec >= 70% of memory bandwidth; CUDA matvec >= 70%
//! of HBM bandwidth on an H100, batch 64 and 512 in TFLOP/s; WGSL as ratios to CUDA on
//! the same GPU and to the CPU on lavapipe.
//!
//! Batches: `--batch`, else 1 for a CPU-only run and 1,64,512 (the shapes) on
//! every device as soon as a GPU is listed. Timing: one first run (kernel compilation,
//! allocation) picks the plan: runs slower than [`SLOW_RUN_S`] are timed 3 times with no
//! further warm-up, others get one more warm-up and at least 7 runs and 1 s, as the
//! CPU-only bench always did. `--max-run-s` (10 s by default) skips, with a `skipped`
//! line, a batch whose run the same device's previous batch of that shape and format
//! predicts (linearly in the batch) to be longer: on Mesa lavapipe a 4096x4096 matvec
//! takes 0.1-0.5 s, so batch 64 and 512 would take minutes per format there.
//!
//! The CPU's peer is measured again right before each matvec (batch 1) case and that
//! figure is the record's `memory_gbps`: this VM's memory bandwidth switches between
//! two modes for minutes at a time (32-40 and 55-68 GB/s), so one figure from the start
//! of a run could compare a kernel with the other mode. Every peer is the best of
//! [`BANDWIDTH_PASSES`] scans of 256 MiB (`membw`); GPU records use the figure measured
//! when the device was opened.
//!
//! Weight copies: a CPU case cycles through copies of its weight (quantized again, each
//! in its own mapping) totalling at least the peer's 256 MiB, at most 32 copies
//! (`weight_copies` in the record), so a 4096x4096 weight (9-18 MB) is read from memory
//! on every product as in a model's decode step, not from the L3 where repeated products
//! of one copy found it, and kernel and peer stream the same footprint (at 64 MiB both
//! still read 10-20% faster; `weights::CPU_ROTATION_BYTES`). A GPU case likewise cycles through uploads of its weight totalling at least
//! [`GPU_ROTATION_BYTES`] (five times an H100's 50 MB L2, at most [`MAX_GPU_COPIES`]),
//! so its figure is HBM (or, on lavapipe, host memory) bandwidth, not L2 hits.
//!
//! CPU calls: by default the timed loop runs on a rayon worker (inside `rayon::scope`),
//! as a decode loop run in the pool would call the matvec; `--caller outside` times it
//! from the main thread, where every call also hands its work to the pool and waits for
//! it (15-22 us per call on the 2-core VM, about a tenth of a 4096x4096 Q4_0 matvec).
//! The records say which (`caller`: `pool` or `outside`).
//!
//! The last JSON line, `{"op": "bench_quant_done", "seconds": ..}`, is the run's wall time.
//! `--update-docs FILE`: a CPU-only run rewrites the section "Quantization: CPU matvec",
//! a run with a GPU the section "Quantization: GPU (WGSL / CUDA)".

use std::process::ExitCode;
use std::time::Instant;

use linattn_quant::QuantizedWeight;
use linattn_quant::cpu::CpuKernel;
use linattn_quant::gpu::{DeviceQuantizedWeight, format_on_gpu};
use linattn_tensor::{DType, Device, DeviceKind, Error, Result, Tensor};
use serde_json::{Value, json};

use super::{device_bw, report, timing};

mod devices;
mod docs;
mod weights;

use devices::{BenchDevice, DeviceSpec, batches, open_devices, parse_device_list};
use docs::{RunOutcome, cpu_section, gpu_section, three_significant};
use weights::{BenchFormat, cpu_rotation};

/// A first run slower than this (seconds) is timed 3 times with no further warm-up.
pub const SLOW_RUN_S: f64 = 0.5;
/// Batches of a run that lists a GPU and gives no `--batch`.
const GPU_DEFAULT_BATCHES: [usize; 3] = [1, 64, 512];
/// Default of `--max-run-s`.
const DEFAULT_MAX_RUN_S: f64 = 10.0;
/// Timed passes of each device's bandwidth measure.
const BANDWIDTH_PASSES: usize = 5;
const CPU_SECTION: &str = "Quantization: CPU matvec";
const GPU_SECTION: &str = "Quantization: GPU (WGSL / CUDA)";

#[derive(clap::Args)]
pub struct Args {
    /// Devices, comma-separated: cpu, wgpu, cuda or cuda:N (e.g. cpu,wgpu or cpu,cuda,wgpu).
    /// List cpu with a GPU to get `ratio_vs_cpu`, cuda with wgpu to get `wgpu_vs_cuda`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Formats to time (any quantization format; `nf4_dq` / `fp4_dq` for double-quantized absmax;
    /// `_q16` on nf4/fp4 for the 15-bit-activation matvec; a ggml format with `:gguf`, e.g.
    /// `q4_0:gguf`, uses the weight mapped from a GGUF file).
    #[arg(long, value_delimiter = ',', default_value = "q4_0,q8_0,q4_k,nf4")]
    formats: Vec<String>,
    /// Weight shapes as OUTxIN.
    #[arg(long, value_delimiter = ',', default_value = "4096x4096,14336x4096")]
    shapes: Vec<String>,
    /// CPU kernel: scalar, avx2 or avx512 (default: the fastest this CPU supports).
    #[arg(long)]
    kernel: Option<String>,
    /// Batch sizes (1 = matvec) [default: 1 when only cpu is listed, 1,64,512 on every
    /// device when a GPU is listed].
    #[arg(long, value_delimiter = ',')]
    batch: Option<Vec<usize>>,
    /// Dtype of x on GPU devices: f32, f16 or bf16 (the CPU kernels always take f32).
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Skip a case whose run is predicted to take longer than this many seconds (0: never
    /// skip). The prediction scales the same device's last measured batch of that shape
    /// and format linearly in the batch (lavapipe needs ~6 s for 4096x4096 batch 64).
    #[arg(long, default_value_t = DEFAULT_MAX_RUN_S)]
    max_run_s: f64,
    /// Where the CPU products are called from: `pool` (a rayon worker, as a decode loop run
    /// inside the pool) or `outside` (the main thread, paying a hand-off per call).
    #[arg(long, default_value = "pool")]
    caller: String,
    /// CPU activations: `q8` (quantized once per row and dotted with integer kernels, the
    /// `matvec_into` / `matmul_q8_into` decode and prefill path for the ggml formats and
    /// NF4/FP4) or `f32` (`matmul_into`, the exact path). Records say which (`activations`).
    #[arg(long, default_value = "q8")]
    activations: String,
    /// Rewrite a section of this markdown file: "Quantization: CPU matvec" for a CPU-only
    /// run, "Quantization: GPU (WGSL / CUDA)" when a GPU is listed.
    #[arg(long)]
    update_docs: Option<std::path::PathBuf>,
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let (a, b) = s.split_once('x').ok_or_else(|| Error::invalid(format!("shape `{s}`: expected OUTxIN")))?;
    let parse = |v: &str| match v.trim().parse::<usize>() {
        Ok(0) => Err(Error::invalid(format!("shape `{s}`: dimensions must be at least 1"))),
        Ok(n) => Ok(n),
        Err(_) => Err(Error::invalid(format!("shape `{s}`: `{v}` is not a number"))),
    };
    let (rows, cols) = (parse(a)?, parse(b)?);
    rows.checked_mul(cols).ok_or_else(|| Error::invalid(format!("shape `{s}`: too many elements")))?;
    Ok((rows, cols))
}

/// `peer_ms / ours_ms` when both are positive and finite.
fn ratio(peer_ms: Option<f64>, ours_ms: Option<f64>) -> Option<f64> {
    let (p, o) = (peer_ms?, ours_ms?);
    (p.is_finite() && o.is_finite() && p > 0.0 && o > 0.0).then(|| p / o)
}

/// Peer ratios of one case, in the order of `timings` (device kind, median ms if it ran):
/// `(ratio_vs_cpu, wgpu_vs_cuda)`; the CPU's own `ratio_vs_cpu` and non-WebGPU
/// `wgpu_vs_cuda` are `None`. The first CUDA device listed is the CUDA peer.
fn peer_ratios(timings: &[(DeviceKind, Option<f64>)]) -> Vec<(Option<f64>, Option<f64>)> {
    let first_ms = |kind: DeviceKind| timings.iter().find(|(k, _)| *k == kind).and_then(|(_, ms)| *ms);
    let (cpu_ms, cuda_ms) = (first_ms(DeviceKind::Cpu), first_ms(DeviceKind::Cuda));
    timings
        .iter()
        .map(|&(kind, ms)| {
            let vs_cpu = if kind == DeviceKind::Cpu { None } else { ratio(cpu_ms, ms) };
            let vs_cuda = if kind == DeviceKind::Wgpu { ratio(cuda_ms, ms) } else { None };
            (vs_cpu, vs_cuda)
        })
        .collect()
}

/// Seconds one run of `batch` should take, scaled linearly from the last measured
/// `(batch, median ms)` of the same device, shape and format.
fn predicted_run_s(last_measured: Option<(usize, f64)>, batch: usize) -> Option<f64> {
    let (last_batch, last_ms) = last_measured?;
    (last_batch > 0 && last_ms.is_finite()).then(|| last_ms * 1e-3 * batch as f64 / last_batch as f64)
}

/// Whether a predicted run time is over the `--max-run-s` budget (0 = no budget).
fn over_budget(predicted_s: Option<f64>, max_run_s: f64) -> bool {
    max_run_s > 0.0 && predicted_s.is_some_and(|p| p > max_run_s)
}

/// Warm-up and run counts chosen from the first run's seconds (see the module header).
#[derive(Clone, Copy, Debug, PartialEq)]
struct RunPlan {
    warmup: usize,
    min_runs: usize,
    min_total_s: f64,
}

impl RunPlan {
    fn after_first_run(first_s: f64) -> RunPlan {
        if first_s > SLOW_RUN_S {
            RunPlan { warmup: 0, min_runs: 3, min_total_s: 0.0 }
        } else {
            RunPlan { warmup: 1, min_runs: 7, min_total_s: 1.0 }
        }
    }
}

fn time_case(device: &Device, mut f: impl FnMut() -> Result<()>) -> Result<timing::Timing> {
    let start = Instant::now();
    f()?;
    device.synchronize()?;
    let plan = RunPlan::after_first_run(start.elapsed().as_secs_f64());
    timing::time_runs(device, plan.warmup, plan.min_runs, plan.min_total_s, f)
}

/// Bytes of weight uploads a GPU case cycles through: five times an H100's (and H200's)
/// 50 MB L2.
const GPU_ROTATION_BYTES: usize = 256 << 20;

/// Most uploads of one weight.
const MAX_GPU_COPIES: usize = 32;

/// How many uploads of a weight of `bytes` bytes hold at least [`GPU_ROTATION_BYTES`]
/// together (at most [`MAX_GPU_COPIES`]).
fn gpu_copies(bytes: usize) -> usize {
    GPU_ROTATION_BYTES.div_ceil(bytes.max(1)).clamp(1, MAX_GPU_COPIES)
}

/// The weight of one (shape, format) in the form each device runs it.
enum PreparedWeight {
    Cpu,
    /// Uploads of the same weight, each in its own buffers, timed in turn.
    Gpu(Vec<DeviceQuantizedWeight>),
    /// No kernel or a failed upload: already reported, nothing to time.
    Unavailable,
}

/// One measurement: a quantized weight and a batch.
struct Case<'w> {
    /// The format's name, or `nf4_dq` / `fp4_dq` for double-quantized absmax.
    label: &'w str,
    weight: &'w QuantizedWeight,
    /// Further copies of the weight the CPU cycles through (`weights::cpu_rotation`).
    rotation: &'w [QuantizedWeight],
    /// NF4 / FP4 CPU matvec with 15-bit activations.
    fifteen_bit: bool,
    /// CPU products with 8-bit activations (`--activations q8`) or f32 ones.
    q8_activations: bool,
    rows: usize,
    cols: usize,
    batch: usize,
}

impl Case<'_> {
    /// The fields that name the case.
    fn base(&self) -> Value {
        json!({ "format": self.label, "out": self.rows, "in": self.cols, "batch": self.batch })
    }
}

/// What one device measured for a case.
struct Measured {
    timing: timing::Timing,
    kernel: String,
    dtype: DType,
    /// CPU only: where the products were called from.
    caller: Option<Caller>,
    /// CPU only: how the activations enter the product ([`cpu_activations`]).
    activations: Option<&'static str>,
}

/// How a CPU case's activations enter the product: `q16` (the 15-bit NF4/FP4 matvec),
/// `q8` (8-bit, integer kernels), `llm.int8` (int8 rows with f32 outlier columns) or
/// `f32`.
fn cpu_activations(case: &Case) -> &'static str {
    match case.weight {
        QuantizedWeight::FourBit(_) if case.batch == 1 && case.fifteen_bit => "q16",
        QuantizedWeight::Int8(_) => "llm.int8",
        QuantizedWeight::Ggml { .. } | QuantizedWeight::FourBit(_) if case.q8_activations => "q8",
        _ => "f32",
    }
}

/// Where the CPU products of a run are called from (`--caller`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Caller {
    /// A rayon worker (the timed loop runs inside `rayon::scope`).
    Pool,
    /// The main thread.
    Outside,
}

impl Caller {
    fn parse(name: &str) -> Result<Caller> {
        match name {
            "pool" => Ok(Caller::Pool),
            "outside" => Ok(Caller::Outside),
            other => Err(Error::invalid(format!("bench quant: --caller {other}: expected pool or outside"))),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Caller::Pool => "pool",
            Caller::Outside => "outside",
        }
    }
}

/// Times `case` on `dev` with its prepared weight.
fn measure(
    dev: &BenchDevice,
    prepared: &PreparedWeight,
    case: &Case,
    cpu_kernel: CpuKernel,
    gpu_dtype: DType,
    caller: Caller,
) -> Result<Measured> {
    let (rows, cols, batch, weight) = (case.rows, case.cols, case.batch, case.weight);
    let x: Vec<f32> = (0..batch * cols).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    match prepared {
        PreparedWeight::Cpu => {
            let mut y = vec![0f32; batch * rows];
            let rotation: Vec<&QuantizedWeight> = std::iter::once(weight).chain(case.rotation).collect();
            let mut turn = 0usize;
            let product = || {
                let weight = rotation[turn % rotation.len()];
                turn += 1;
                match (batch, case.fifteen_bit, case.q8_activations, weight) {
                    (1, true, _, QuantizedWeight::FourBit(w)) => {
                        linattn_quant::cpu::fourbit_matvec_q16_into(cpu_kernel, w, &x, &mut y)
                    }
                    (1, _, true, _) => weight.matvec_into(cpu_kernel, &x, &mut y),
                    (_, _, true, _) => weight.matmul_q8_into(cpu_kernel, &x, batch, &mut y),
                    _ => weight.matmul_into(cpu_kernel, &x, batch, &mut y),
                }
            };
            let timing = match caller {
                Caller::Pool => rayon::scope(|_| time_case(&dev.device, product))?,
                Caller::Outside => time_case(&dev.device, product)?,
            };
            Ok(Measured {
                timing,
                kernel: format!("{cpu_kernel:?}"),
                dtype: DType::F32,
                caller: Some(caller),
                activations: Some(cpu_activations(case)),
            })
        }
        PreparedWeight::Gpu(copies) => {
            let x = Tensor::from_f32(&x, gpu_dtype, [batch, cols])?.to_device(&dev.device)?;
            let mut turn = 0usize;
            let timing = time_case(&dev.device, || {
                let weight = &copies[turn % copies.len()];
                turn += 1;
                weight.matmul(&x).map(|_| ())
            })?;
            let kernel = if matches!(dev.device, Device::Cuda(_)) { "cuda" } else { "wgsl" };
            Ok(Measured { timing, kernel: kernel.into(), dtype: gpu_dtype, caller: None, activations: None })
        }
        PreparedWeight::Unavailable => Err(Error::invalid("bench quant: no weight on this device")),
    }
}

/// Uploads `weight` to a GPU `dev` (the CPU uses it as it is); a format without kernels
/// there or a failed upload prints a `skipped` / `error` line and gives `Unavailable`.
fn prepare(
    dev: &BenchDevice,
    weight: &QuantizedWeight,
    shape_fields: &Value,
    problems: &mut Vec<String>,
) -> PreparedWeight {
    let format = weight.format();
    if matches!(dev.device, Device::Cpu) {
        return PreparedWeight::Cpu;
    }
    let mut line = dev.tag(shape_fields);
    if !format_on_gpu(format, &dev.device) {
        let why = format!("no {format} kernel on {}", dev.device);
        problems.push(format!("{} {format} {}: {why}", dev.device, weight.shape()));
        line["skipped"] = json!(why);
        report::emit(&line);
        return PreparedWeight::Unavailable;
    }
    let mut copies = Vec::new();
    for copy in 0..gpu_copies(weight.storage_bytes()) {
        match weight.to_device(&dev.device) {
            Ok(w) => copies.push(w),
            Err(e) if copy > 0 => {
                // Fewer copies still time the kernel; the record's `weight_copies` says
                // how many, and the run's problems why.
                problems.push(format!("{} {format} {}: upload of copy {}: {e}", dev.device, weight.shape(), copy + 1));
                break;
            }
            Err(e) => {
                let why = format!("upload to {}: {e}", dev.device);
                problems.push(format!("{} {format} {}: {why}", dev.device, weight.shape()));
                line["error"] = json!(why);
                report::emit(&line);
                return PreparedWeight::Unavailable;
            }
        }
    }
    PreparedWeight::Gpu(copies)
}

/// The JSON record of one timed case (with the fields the CPU-only bench always printed);
/// `peer` is the memory read bandwidth it is compared with.
fn case_record(dev: &BenchDevice, prepared: &PreparedWeight, case: &Case, m: &Measured, peer: Option<f64>) -> Value {
    let secs = m.timing.median_ms * 1e-3;
    let bytes = case.weight.storage_bytes();
    let gbps = bytes as f64 / secs / 1e9;
    let mut rec = dev.tag(&case.base());
    rec["op"] = json!(if case.batch == 1 { "matvec" } else { "matmul" });
    rec["kernel"] = json!(m.kernel);
    if let Some(caller) = m.caller {
        rec["caller"] = json!(caller.name());
    }
    if let Some(activations) = m.activations {
        rec["activations"] = json!(activations);
    }
    rec["dtype"] = json!(m.dtype.name());
    rec["weight_bytes"] = json!(bytes);
    rec["weight_copies"] = json!(match prepared {
        PreparedWeight::Gpu(copies) => copies.len(),
        _ => 1 + case.rotation.len(),
    });
    rec["ms"] = json!(m.timing.median_ms);
    rec["min_ms"] = json!(m.timing.min_ms);
    rec["runs"] = json!(m.timing.runs);
    rec["gbps"] = json!(gbps);
    rec["memory_gbps"] = json!(peer);
    rec["fraction_of_bandwidth"] = json!(peer.map(|bw| gbps / bw));
    rec["tflops"] = json!(2.0 * (case.batch * case.rows * case.cols) as f64 / secs / 1e12);
    rec
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let started = Instant::now();
    let specs = parse_device_list(&args.device)?;
    let batch_sizes = batches(args.batch.as_deref(), &specs)?;
    let shapes = args.shapes.iter().map(|s| parse_shape(s)).collect::<Result<Vec<_>>>()?;
    let formats = args.formats.iter().map(|f| BenchFormat::parse(f)).collect::<Result<Vec<_>>>()?;
    let gpu_dtype = DType::parse(&args.dtype)?;
    if !gpu_dtype.is_compute_float() {
        return Err(Error::invalid(format!("bench quant: --dtype {gpu_dtype}: expected f32, f16 or bf16")));
    }
    if args.max_run_s.is_nan() || args.max_run_s < 0.0 {
        return Err(Error::invalid(format!("bench quant: --max-run-s {}: expected seconds >= 0", args.max_run_s)));
    }
    let kernel = match &args.kernel {
        Some(name) => CpuKernel::parse(name)?,
        None => CpuKernel::detect(),
    };
    let caller = Caller::parse(&args.caller)?;
    let q8_activations = match args.activations.as_str() {
        "q8" => true,
        "f32" => false,
        other => return Err(Error::invalid(format!("bench quant: --activations {other}: expected q8 or f32"))),
    };
    let mut problems = Vec::new();
    let devices = open_devices(&specs, &mut problems);
    if devices.is_empty() {
        return Ok(ExitCode::FAILURE);
    }
    let mut records = Vec::new();
    for &(rows, cols) in &shapes {
        let values: Vec<f32> =
            (0..rows * cols).map(|i| ((i.wrapping_mul(2_654_435_761) >> 7) % 2001) as f32 / 1000.0 - 1.0).collect();
        for format in &formats {
            let weight = format.quantize(&values, rows, cols)?;
            let rotation = if devices.iter().any(|d| matches!(d.device, Device::Cpu)) {
                cpu_rotation(format, &values, rows, cols, weight.storage_bytes())?
            } else {
                Vec::new()
            };
            let shape_fields = json!({ "format": format.label, "out": rows, "in": cols });
            let prepared: Vec<PreparedWeight> =
                devices.iter().map(|d| prepare(d, &weight, &shape_fields, &mut problems)).collect();
            let mut last_measured: Vec<Option<(usize, f64)>> = vec![None; devices.len()];
            for &batch in &batch_sizes {
                let case = Case {
                    label: &format.label,
                    weight: &weight,
                    rotation: &rotation,
                    fifteen_bit: format.fifteen_bit,
                    q8_activations,
                    rows,
                    cols,
                    batch,
                };
                let mut case_records = Vec::new();
                for ((dev, prepared), last) in devices.iter().zip(&prepared).zip(&mut last_measured) {
                    if matches!(prepared, PreparedWeight::Unavailable) {
                        continue;
                    }
                    let predicted_s = predicted_run_s(*last, batch);
                    if over_budget(predicted_s, args.max_run_s) {
                        let why = format!(
                            "one run predicted to take {} s (from batch {}), over --max-run-s {}",
                            three_significant(predicted_s.unwrap_or(f64::NAN)),
                            last.map_or(0, |(b, _)| b),
                            args.max_run_s
                        );
                        problems.push(format!("{} {} {rows}x{cols} batch {batch}: {why}", dev.device, format.label));
                        let mut line = dev.tag(&case.base());
                        line["skipped"] = json!(why);
                        case_records.push((dev.device.kind(), line));
                        continue;
                    }
                    let peer = if matches!(dev.device, Device::Cpu) && batch == 1 {
                        Some(super::membw::read_bandwidth_gbps(BANDWIDTH_PASSES))
                    } else {
                        dev.bandwidth_gbps()
                    };
                    let rec = match measure(dev, prepared, &case, kernel, gpu_dtype, caller) {
                        Ok(measured) => {
                            *last = Some((batch, measured.timing.median_ms));
                            case_record(dev, prepared, &case, &measured, peer)
                        }
                        Err(e) => {
                            problems.push(format!("{} {} {rows}x{cols} batch {batch}: {e}", dev.device, format.label));
                            let mut rec = dev.tag(&case.base());
                            rec["error"] = json!(e.to_string());
                            rec
                        }
                    };
                    case_records.push((dev.device.kind(), rec));
                }
                let timings: Vec<(DeviceKind, Option<f64>)> =
                    case_records.iter().map(|(kind, rec)| (*kind, rec.get("ms").and_then(Value::as_f64))).collect();
                for ((_, mut rec), (vs_cpu, vs_cuda)) in case_records.into_iter().zip(peer_ratios(&timings)) {
                    if let Some(r) = vs_cpu {
                        rec["ratio_vs_cpu"] = json!(r);
                    }
                    if let Some(r) = vs_cuda {
                        rec["wgpu_vs_cuda"] = json!(r);
                    }
                    report::emit(&rec);
                    records.push(rec);
                }
            }
        }
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    report::emit(&json!({ "op": "bench_quant_done", "seconds": elapsed_s }));
    if let Some(path) = &args.update_docs {
        if specs.iter().any(|s| s.is_gpu()) {
            let body = gpu_section(
                &RunOutcome {
                    specs: &specs,
                    devices: &devices,
                    records: &records,
                    problems: &problems,
                    batch_sizes: &batch_sizes,
                    elapsed_s,
                },
                gpu_dtype,
                args.max_run_s,
            );
            report::update_markdown_section(path, GPU_SECTION, &body)?;
        } else {
            let bandwidth = devices.first().and_then(BenchDevice::bandwidth_gbps).unwrap_or(f64::NAN);
            report::update_markdown_section(path, CPU_SECTION, &cpu_section(bandwidth, &records))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::docs::with_significant_digits;
    use super::*;

    #[test]
    fn device_lists_parse_and_reject_bad_entries() {
        assert_eq!(parse_device_list("cpu").unwrap(), vec![DeviceSpec::Cpu]);
        assert_eq!(
            parse_device_list("cpu, WGPU,cuda:1").unwrap(),
            vec![DeviceSpec::Cpu, DeviceSpec::Wgpu, DeviceSpec::Cuda(1)]
        );
        assert_eq!(parse_device_list("gpu").unwrap(), vec![DeviceSpec::Cuda(0)]);
        for (bad, names) in [("tpu", "tpu"), ("cpu,,wgpu", "empty"), ("cuda:x", "cuda:x"), ("cpu,cpu", "twice")] {
            let err = parse_device_list(bad).unwrap_err().to_string();
            assert!(err.contains(names), "{bad}: {err}");
        }
        assert!(parse_device_list("cuda,cuda:0").unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn default_batches_follow_the_device_list() {
        let cpu = [DeviceSpec::Cpu];
        let mixed = [DeviceSpec::Cpu, DeviceSpec::Wgpu];
        assert_eq!(batches(None, &cpu).unwrap(), vec![1]);
        assert_eq!(batches(None, &mixed).unwrap(), vec![1, 64, 512]);
        assert_eq!(batches(None, &[DeviceSpec::Cuda(0)]).unwrap(), vec![1, 64, 512]);
        assert_eq!(batches(Some(&[1, 8]), &mixed).unwrap(), vec![1, 8]);
        assert!(batches(Some(&[1, 0]), &cpu).is_err());
        assert!(batches(Some(&[]), &cpu).is_err());
    }

    #[test]
    fn shapes_parse_and_reject_bad_input() {
        assert_eq!(parse_shape("14336x4096").unwrap(), (14336, 4096));
        for bad in ["4096", "ax4096", "0x4096", "4096x", "18446744073709551615x2"] {
            assert!(parse_shape(bad).unwrap_err().to_string().contains(bad), "{bad}");
        }
    }

    #[test]
    fn ratios_compare_with_the_cpu_and_the_first_cuda_device() {
        let timings = [
            (DeviceKind::Cpu, Some(10.0)),
            (DeviceKind::Cuda, Some(0.5)),
            (DeviceKind::Wgpu, Some(2.0)),
            (DeviceKind::Cuda, Some(1.0)),
        ];
        let r = peer_ratios(&timings);
        assert_eq!(r[0], (None, None));
        assert_eq!(r[1], (Some(20.0), None));
        assert_eq!(r[2], (Some(5.0), Some(0.25)));
        assert_eq!(r[3], (Some(10.0), None));
    }

    #[test]
    fn ratios_are_absent_without_a_peer_or_a_time() {
        let r = peer_ratios(&[(DeviceKind::Wgpu, Some(2.0)), (DeviceKind::Cpu, None)]);
        assert_eq!(r, vec![(None, None), (None, None)]);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
        assert_eq!(ratio(Some(3.0), Some(1.5)), Some(2.0));
    }

    #[test]
    fn runs_over_the_budget_are_predicted_from_the_last_batch() {
        assert_eq!(predicted_run_s(None, 512), None);
        assert_eq!(predicted_run_s(Some((64, 6000.0)), 512), Some(48.0));
        assert!(over_budget(Some(48.0), 10.0));
        assert!(!over_budget(Some(48.0), 0.0));
        assert!(!over_budget(Some(9.0), 10.0));
        assert!(!over_budget(None, 10.0));
    }

    #[test]
    fn table_numbers_keep_three_significant_digits() {
        assert_eq!(three_significant(0.0013736), "0.00137");
        assert_eq!(three_significant(1.097), "1.10");
        assert_eq!(three_significant(6083.9), "6084");
        assert_eq!(three_significant(0.0), "0");
        let row = with_significant_digits(&json!({ "ms": 0.024927, "batch": 64, "op": "matvec" }), &["ms", "batch"]);
        assert_eq!(row, json!({ "ms": "0.0249", "batch": 64, "op": "matvec" }));
    }

    #[test]
    fn gpu_copies_hold_five_h100_l2s() {
        // 4096x4096 Q4_0 (9.4 MB) -> 29 uploads, 14336x4096 Q8_0 (62 MB) -> 5, tiny -> capped.
        assert_eq!(gpu_copies(4096 * 4096 / 32 * 18), 29);
        assert_eq!(gpu_copies(14336 * 4096 / 32 * 34), 5);
        assert_eq!(gpu_copies(1000), MAX_GPU_COPIES);
        assert_eq!(gpu_copies(0), MAX_GPU_COPIES);
        assert_eq!(gpu_copies(GPU_ROTATION_BYTES + 1), 1);
        assert!(4096 * 4096 / 32 * 18 * gpu_copies(4096 * 4096 / 32 * 18) >= 5 * 50_000_000);
    }

    #[test]
    fn slow_first_runs_get_three_runs() {
        assert_eq!(RunPlan::after_first_run(2.0), RunPlan { warmup: 0, min_runs: 3, min_total_s: 0.0 });
        assert_eq!(RunPlan::after_first_run(0.01), RunPlan { warmup: 1, min_runs: 7, min_total_s: 1.0 });
    }
}
