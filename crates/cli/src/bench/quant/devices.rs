//! Devices of `linattn bench quant`: the `--device` list (`cpu`, `wgpu`, `cuda[:N]`),
//! the batches it implies, and opening each device with its read bandwidth measured in
//! the same run (a device that fails is reported and left out).

use super::*;

/// A device named on the command line, before it is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeviceSpec {
    Cpu,
    Wgpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// `cpu`, `wgpu` (or `webgpu`), `cuda` (or `gpu`, = `cuda:0`) or `cuda:N`.
    pub(super) fn parse(spec: &str) -> Result<DeviceSpec> {
        let lower = spec.trim().to_ascii_lowercase();
        match lower.as_str() {
            "cpu" => Ok(DeviceSpec::Cpu),
            "wgpu" | "webgpu" => Ok(DeviceSpec::Wgpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            other => match other.strip_prefix("cuda:") {
                Some(ordinal) => ordinal.parse().map(DeviceSpec::Cuda).map_err(|_| {
                    Error::invalid(format!("bench quant: device `{spec}`: expected cuda:N with N a GPU index"))
                }),
                None => Err(Error::invalid(format!(
                    "bench quant: unknown device `{spec}`: expected cpu, wgpu, cuda or cuda:N (comma-separated)"
                ))),
            },
        }
    }

    pub(super) fn label(self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".into(),
            DeviceSpec::Wgpu => "wgpu".into(),
            DeviceSpec::Cuda(n) => format!("cuda:{n}"),
        }
    }

    pub(super) fn is_gpu(self) -> bool {
        self != DeviceSpec::Cpu
    }

    pub(super) fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Wgpu => Device::wgpu(),
            DeviceSpec::Cuda(n) => Device::cuda(n),
        }
    }
}

/// Parses `--device`: a non-empty comma-separated list without repeats.
pub(super) fn parse_device_list(list: &str) -> Result<Vec<DeviceSpec>> {
    let mut specs: Vec<DeviceSpec> = Vec::new();
    for item in list.split(',') {
        if item.trim().is_empty() {
            return Err(Error::invalid(format!("bench quant: empty entry in device list `{list}`")));
        }
        let spec = DeviceSpec::parse(item)?;
        if specs.contains(&spec) {
            return Err(Error::invalid(format!("bench quant: device {} is listed twice in `{list}`", spec.label())));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// The batches to time: `--batch` when given (every entry >= 1), else 1 for a CPU-only
/// run and [`GPU_DEFAULT_BATCHES`] when a GPU is listed.
pub(super) fn batches(given: Option<&[usize]>, specs: &[DeviceSpec]) -> Result<Vec<usize>> {
    match given {
        Some(list) if list.contains(&0) => Err(Error::invalid("bench quant: --batch sizes must be at least 1")),
        Some([]) => Err(Error::invalid("bench quant: --batch is empty")),
        Some(list) => Ok(list.to_vec()),
        None if specs.iter().any(|s| s.is_gpu()) => Ok(GPU_DEFAULT_BATCHES.to_vec()),
        None => Ok(vec![1]),
    }
}

/// An opened device with its bandwidth measured in this run.
pub(super) struct BenchDevice {
    pub(super) device: Device,
    pub(super) bandwidth: Option<device_bw::DeviceBandwidth>,
}

impl BenchDevice {
    pub(super) fn bandwidth_gbps(&self) -> Option<f64> {
        self.bandwidth.as_ref().map(|b| b.gbps)
    }

    /// `base` with this device's name and id.
    pub(super) fn tag(&self, base: &Value) -> Value {
        let mut line = base.clone();
        line["device"] = json!(self.device.name());
        line["device_id"] = json!(self.device.to_string());
        line
    }
}

/// Opens each listed device and measures its bandwidth; failures are printed as JSON
/// lines with `error` (and kept for the docs) instead of ending the run.
pub(super) fn open_devices(specs: &[DeviceSpec], problems: &mut Vec<String>) -> Vec<BenchDevice> {
    let mut opened = Vec::new();
    for &spec in specs {
        let device = match spec.open() {
            Ok(d) => d,
            Err(e) => {
                report::emit(&json!({ "op": "open_device", "device": spec.label(), "error": e.to_string() }));
                problems.push(format!("{}: could not open: {e}", spec.label()));
                continue;
            }
        };
        let bandwidth = match device_bw::read_bandwidth(&device, BANDWIDTH_PASSES) {
            Ok(bw) => {
                report::emit(&bw.record(&device));
                Some(bw)
            }
            Err(e) => {
                report::emit(&json!({ "op": "memory_read", "device": spec.label(), "error": e.to_string() }));
                problems.push(format!("{}: bandwidth not measured: {e}", spec.label()));
                None
            }
        };
        opened.push(BenchDevice { device, bandwidth });
    }
    opened
}
