//! The frozen base layer a LoRA module adapts.
//!
//! [`BaseLinear`] is the one thing adapters need from a base weight: its sizes, its
//! forward `y = x W^T (+ bias)`, and a dense `[out, in]` copy of `W` (for merging and
//! the DoRA norm). [`DenseLinear`] implements it for a plain tensor; QLoRA bases are
//! [`QuantizedWeight`]s of `linattn-quant` (every format: ggml Q8_0 / Q4_0 / Q4_K / Q6_K,
//! bitsandbytes NF4 / FP4 / LLM.int8, FP8): their forward is the quant crate's fused
//! dequantize-matmul (on the GPU for the formats it has kernels for), `dequantized()`
//! decodes to f32, and they have no bias. A bare `QuantizedWeight` copies its packed data
//! to the GPU on every GPU forward; [`QuantizedLinear`] uploads it once per device and
//! reuses it, which is what a QLoRA layer decoding token after token wants.

use std::sync::{Arc, Mutex};

use linattn_quant::QuantizedWeight;
use linattn_quant::gpu::{DeviceQuantizedWeight, format_on_gpu};
use linattn_tensor::{Device, Error, Result, Tensor, ops};

/// A frozen linear layer `y = x W^T + bias`, `W` logically `[out, in]`.
pub trait BaseLinear: Send + Sync {
    /// Rows of `W` (`out`).
    fn out_features(&self) -> usize;
    /// Columns of `W` (`in`).
    fn in_features(&self) -> usize;
    /// `x [..., in] -> [..., out]` in `x`'s dtype, bias included.
    fn forward(&self, x: &Tensor) -> Result<Tensor>;
    /// `W` as a dense float tensor `[out, in]` (dequantized when the base is quantized).
    fn dequantized(&self) -> Result<Tensor>;
    /// The bias `[out]`, if the layer has one (DoRA rescales `x W^T` but not the bias).
    fn bias(&self) -> Option<&Tensor> {
        None
    }
    /// The dense `[out, in]` weight when the base stores one (no dequantization), so
    /// GPU paths can fuse the base product with the LoRA update. `None` (the default)
    /// makes them call [`BaseLinear::forward`] and add the update afterwards.
    fn dense_weight(&self) -> Option<&Tensor> {
        None
    }
}

/// A dense base weight `[out, in]` with an optional bias `[out]`.
#[derive(Clone, Debug)]
pub struct DenseLinear {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl DenseLinear {
    /// Wraps a `[out, in]` float weight (PyTorch `nn.Linear` layout).
    pub fn new(weight: Tensor) -> Result<DenseLinear> {
        if weight.rank() != 2 || !weight.dtype().is_compute_float() {
            return Err(Error::invalid(format!(
                "DenseLinear: weight must be a rank-2 f32/f16/bf16 tensor [out, in], got {} {}",
                weight.dtype(),
                weight.shape()
            )));
        }
        Ok(DenseLinear { weight, bias: None })
    }

    /// Wraps a weight stored `[in, out]` (GPT-2 `Conv1D`, peft `fan_in_fan_out`),
    /// transposing it once to `[out, in]`.
    pub fn from_fan_in_fan_out(weight_in_out: &Tensor) -> Result<DenseLinear> {
        DenseLinear::new(transpose_2d(weight_in_out)?)
    }

    /// Adds a bias `[out]` (same dtype as the weight).
    pub fn with_bias(mut self, bias: Tensor) -> Result<DenseLinear> {
        if bias.dims() != [self.out_features()] || bias.dtype() != self.weight.dtype() {
            return Err(Error::invalid(format!(
                "DenseLinear: bias {} {} does not match weight {} {}",
                bias.dtype(),
                bias.shape(),
                self.weight.dtype(),
                self.weight.shape()
            )));
        }
        self.bias = Some(bias);
        Ok(self)
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }
}

impl BaseLinear for DenseLinear {
    fn out_features(&self) -> usize {
        self.weight.dims()[0]
    }
    fn in_features(&self) -> usize {
        self.weight.dims()[1]
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let w = if x.dtype() == self.weight.dtype() { self.weight.clone() } else { self.weight.to_dtype(x.dtype())? };
        let y = ops::linear(x, &w)?;
        match &self.bias {
            None => Ok(y),
            Some(b) => {
                let b = b.to_dtype(x.dtype())?;
                let rows = y.shape().rows();
                let out = self.out_features();
                let bv = b.to_f32_vec()?;
                let mut yv = y.to_f32_vec()?;
                for r in 0..rows {
                    for (v, bb) in yv[r * out..(r + 1) * out].iter_mut().zip(&bv) {
                        *v += bb;
                    }
                }
                Tensor::from_f32(&yv, x.dtype(), y.dims().to_vec())?.to_device(&x.device())
            }
        }
    }
    fn dequantized(&self) -> Result<Tensor> {
        Ok(self.weight.clone())
    }
    fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }
    fn dense_weight(&self) -> Option<&Tensor> {
        Some(&self.weight)
    }
}

/// QLoRA: a quantized base `W [out, in]` (2D) without bias. `forward` is
/// [`QuantizedWeight::matmul`] (fused dequantize-matmul, f32 accumulation, output in
/// `x`'s dtype; WebGPU / CUDA for the ggml formats the quant crate runs there, otherwise
/// `NotImplementedOnDevice` on a GPU `x`); `dequantized` decodes to f32 on the CPU.
impl BaseLinear for QuantizedWeight {
    fn out_features(&self) -> usize {
        self.rows()
    }
    fn in_features(&self) -> usize {
        self.cols()
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.matmul(x)
    }
    fn dequantized(&self) -> Result<Tensor> {
        let w = self.dequantize()?;
        w.reshape([self.rows(), self.cols()])
    }
}

/// A quantized base weight that keeps one uploaded copy per GPU: the first GPU forward
/// on a device uploads the packed data and quant state, later ones reuse it. CPU inputs
/// and formats without GPU kernels fall back to [`QuantizedWeight::matmul`].
pub struct QuantizedLinear {
    weight: QuantizedWeight,
    uploaded: Mutex<Vec<(Device, Arc<DeviceQuantizedWeight>)>>,
}

impl QuantizedLinear {
    pub fn new(weight: QuantizedWeight) -> QuantizedLinear {
        QuantizedLinear { weight, uploaded: Mutex::new(Vec::new()) }
    }

    /// The quantized weight on the host.
    pub fn weight(&self) -> &QuantizedWeight {
        &self.weight
    }

    /// How many devices hold an uploaded copy.
    pub fn uploaded_devices(&self) -> usize {
        self.uploaded.lock().map_or(0, |u| u.len())
    }

    fn on_device(&self, device: &Device) -> Result<Arc<DeviceQuantizedWeight>> {
        let mut uploaded =
            self.uploaded.lock().map_err(|_| Error::invalid("QuantizedLinear: device cache lock poisoned"))?;
        if let Some((_, w)) = uploaded.iter().find(|(d, _)| d.same_device(device)) {
            return Ok(w.clone());
        }
        let w = Arc::new(self.weight.to_device(device)?);
        uploaded.push((device.clone(), w.clone()));
        Ok(w)
    }
}

impl BaseLinear for QuantizedLinear {
    fn out_features(&self) -> usize {
        self.weight.rows()
    }
    fn in_features(&self) -> usize {
        self.weight.cols()
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let device = x.device();
        if !x.is_cpu() && format_on_gpu(self.weight.format(), &device) {
            return self.on_device(&device)?.matmul(x);
        }
        self.weight.matmul(x)
    }
    fn dequantized(&self) -> Result<Tensor> {
        BaseLinear::dequantized(&self.weight)
    }
}

/// Transposes a rank-2 float tensor on the host (`[a, b] -> [b, a]`), keeping its dtype.
pub fn transpose_2d(t: &Tensor) -> Result<Tensor> {
    let [rows, cols] = t.dims() else {
        return Err(Error::invalid(format!("transpose_2d: expected a rank-2 tensor, got {}", t.shape())));
    };
    let (rows, cols) = (*rows, *cols);
    let v = t.to_f32_vec()?;
    let mut out = vec![0f32; v.len()];
    for i in 0..rows {
        for j in 0..cols {
            out[j * rows + i] = v[i * cols + j];
        }
    }
    Tensor::from_f32(&out, t.dtype(), [cols, rows])?.to_device(&t.device())
}
