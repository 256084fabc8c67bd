//! Runs any op of this crate on named tensors, for the CLI
//! (`linattn op <op> --in in.safetensors --out out.safetensors`) and conformance runs.
//!
//! Inputs are moved to `device` first. Options are 0-d (or one-element) tensors of any
//! numeric dtype; absent options take the documented defaults. Unknown input names are
//! an error (a typo must not silently fall back to a default). The full table of ops
//! and names is in docs/kernels.md:
//!
//! - `linear_attn`, `simple_gla`, `gla` (+ `_reference`, `_step`): q, k, v, g
//!   (gated ops), initial_state, initial_z, cu_seqlens (I32/I64), q_feature_map,
//!   k_feature_map, scale, normalize, eps, chunk_size -> o, final_state, final_z.
//!   Steps read their state from initial_state / initial_z.
//! - `hedgehog` (+ `_reference`): x, weight -> o.
//! - `window_linear` (+ `_reference`, `_step`): q, k, v, window_factor, window, scale,
//!   chunk_size, cu_seqlens, q_feature_map, k_feature_map; steps also initial_state,
//!   initial_z, cache_keys, cache_values, tokens_seen -> o, final_state, final_z,
//!   cache_keys, cache_values, tokens_seen.

use std::collections::BTreeMap;

use linattn_tensor::{DType, Device, Error, Result, Tensor};

use crate::options::{AttnOptions, AttnOutput, DEFAULT_CHUNK_SIZE, DEFAULT_NORMALIZER_EPS, LinearState};
use crate::window::{DEFAULT_WINDOW, WindowOptions, WindowOutput, WindowState};
use crate::{feature_map, gated, window};

const LINEAR_NAMES: &[&str] = &[
    "q",
    "k",
    "v",
    "g",
    "initial_state",
    "initial_z",
    "cu_seqlens",
    "q_feature_map",
    "k_feature_map",
    "scale",
    "normalize",
    "eps",
    "chunk_size",
];
const WINDOW_NAMES: &[&str] = &[
    "q",
    "k",
    "v",
    "window_factor",
    "window",
    "scale",
    "chunk_size",
    "cu_seqlens",
    "q_feature_map",
    "k_feature_map",
    "initial_state",
    "initial_z",
    "cache_keys",
    "cache_values",
    "tokens_seen",
];

/// Runs `op` on the named `inputs` on `device`; returns the named outputs (see the
/// module header and docs/kernels.md for the names).
pub fn run_named(op: &str, inputs: &BTreeMap<String, Tensor>, device: &Device) -> Result<BTreeMap<String, Tensor>> {
    let mut moved = BTreeMap::new();
    for (name, t) in inputs {
        moved.insert(name.clone(), t.to_device(device)?);
    }
    let inp = Inputs { op, map: &moved };
    match op {
        "hedgehog" | "hedgehog_reference" => {
            inp.only(&["x", "weight"])?;
            let (x, w) = (inp.req("x")?, inp.req("weight")?);
            let o = if op == "hedgehog" {
                feature_map::hedgehog_feature_map(x, w)?
            } else {
                feature_map::hedgehog_feature_map_reference(x, w)?
            };
            Ok(BTreeMap::from([("o".to_string(), o)]))
        }
        "linear_attn"
        | "linear_attn_reference"
        | "linear_attn_step"
        | "simple_gla"
        | "simple_gla_reference"
        | "simple_gla_step"
        | "gla"
        | "gla_reference"
        | "gla_step" => run_linear(&inp),
        "window_linear" | "window_linear_reference" | "window_linear_step" => run_window(&inp),
        _ => Err(Error::invalid(format!(
            "unknown attention op `{op}`; expected linear_attn, simple_gla, gla (each also _reference, _step), \
             hedgehog, hedgehog_reference, window_linear, window_linear_reference, window_linear_step"
        ))),
    }
}

struct Inputs<'m> {
    op: &'m str,
    map: &'m BTreeMap<String, Tensor>,
}

impl Inputs<'_> {
    fn only(&self, allowed: &[&str]) -> Result<()> {
        match self.map.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(Error::invalid(format!("{}: unknown input `{k}`; accepted names: {allowed:?}", self.op))),
            None => Ok(()),
        }
    }

    fn req(&self, name: &str) -> Result<&Tensor> {
        self.map.get(name).ok_or_else(|| Error::invalid(format!("{}: missing input tensor `{name}`", self.op)))
    }

    fn opt(&self, name: &str) -> Option<&Tensor> {
        self.map.get(name)
    }

    /// A one-element option as f64.
    fn scalar(&self, name: &str) -> Result<Option<f64>> {
        let Some(t) = self.map.get(name) else { return Ok(None) };
        if t.numel() != 1 {
            return Err(Error::invalid(format!(
                "{}: option `{name}` must be a 0-d tensor, got shape {}",
                self.op,
                t.shape()
            )));
        }
        Ok(Some(as_f64_values(self.op, name, t)?[0]))
    }

    fn usize_option(&self, name: &str, default: usize) -> Result<usize> {
        match self.scalar(name)? {
            None => Ok(default),
            Some(x) if x >= 0.0 && x.fract() == 0.0 && x < 1e15 => Ok(x as usize),
            Some(x) => {
                Err(Error::invalid(format!("{}: option `{name}` = {x} must be a non-negative integer", self.op)))
            }
        }
    }

    fn cu_seqlens(&self) -> Result<Option<Vec<usize>>> {
        let Some(t) = self.map.get("cu_seqlens") else { return Ok(None) };
        if t.rank() != 1 || !matches!(t.dtype(), DType::I32 | DType::I64) {
            return Err(Error::invalid(format!(
                "{}: `cu_seqlens` must be a 1-d i32 or i64 tensor, got {} {}",
                self.op,
                t.dtype(),
                t.shape()
            )));
        }
        let vals = as_f64_values(self.op, "cu_seqlens", t)?;
        if let Some(i) = vals.iter().position(|&x| x < 0.0) {
            return Err(Error::invalid(format!("{}: cu_seqlens[{i}] = {} is negative", self.op, vals[i])));
        }
        Ok(Some(vals.into_iter().map(|x| x as usize).collect()))
    }

    fn state(&self) -> Option<LinearState> {
        self.opt("initial_state").map(|kv| LinearState { kv: kv.clone(), z: self.opt("initial_z").cloned() })
    }
}

fn as_f64_values(op: &str, name: &str, t: &Tensor) -> Result<Vec<f64>> {
    Ok(match t.dtype() {
        DType::I32 => t.to_vec::<i32>()?.into_iter().map(f64::from).collect(),
        DType::I64 => t.to_vec::<i64>()?.into_iter().map(|x| x as f64).collect(),
        DType::U32 => t.to_vec::<u32>()?.into_iter().map(f64::from).collect(),
        DType::U8 => t.to_vec::<u8>()?.into_iter().map(f64::from).collect(),
        DType::F32 | DType::F16 | DType::BF16 | DType::F64 => t.to_f32_vec()?.into_iter().map(f64::from).collect(),
        other => return Err(Error::invalid(format!("{op}: `{name}` has unsupported dtype {other}"))),
    })
}

fn run_linear(inp: &Inputs) -> Result<BTreeMap<String, Tensor>> {
    inp.only(LINEAR_NAMES)?;
    let op = inp.op;
    let (q, k, v) = (inp.req("q")?, inp.req("k")?, inp.req("v")?);
    let cu = inp.cu_seqlens()?;
    let state = inp.state();
    if inp.opt("initial_z").is_some() && state.is_none() {
        return Err(Error::invalid(format!("{op}: `initial_z` given without `initial_state`")));
    }
    let step = op.ends_with("_step");
    let opts = AttnOptions {
        scale: inp.scalar("scale")?.map(|s| s as f32),
        chunk_size: inp.usize_option("chunk_size", DEFAULT_CHUNK_SIZE)?,
        cu_seqlens: cu.as_deref(),
        initial_state: if step { None } else { state.as_ref() },
        normalize: inp.scalar("normalize")?.is_some_and(|x| x != 0.0),
        eps: inp.scalar("eps")?.map_or(DEFAULT_NORMALIZER_EPS, |e| e as f32),
        q_feature_map: inp.opt("q_feature_map"),
        k_feature_map: inp.opt("k_feature_map"),
    };
    let base = op.trim_end_matches("_step").trim_end_matches("_reference");
    let g = if base == "linear_attn" {
        if inp.opt("g").is_some() {
            return Err(Error::invalid(format!("{op}: linear_attn takes no gate `g`")));
        }
        None
    } else {
        Some(inp.req("g")?)
    };
    let out: AttnOutput = match (op, g) {
        ("linear_attn", _) => gated::linear_attn(q, k, v, &opts)?,
        ("linear_attn_reference", _) => gated::linear_attn_reference(q, k, v, &opts)?,
        ("linear_attn_step", _) => gated::decode::linear_attn_step(q, k, v, state.as_ref(), &opts)?,
        ("simple_gla", Some(g)) => gated::simple_gla(q, k, v, g, &opts)?,
        ("simple_gla_reference", Some(g)) => gated::simple_gla_reference(q, k, v, g, &opts)?,
        ("simple_gla_step", Some(g)) => gated::decode::simple_gla_step(q, k, v, g, state.as_ref(), &opts)?,
        ("gla", Some(g)) => gated::gla(q, k, v, g, &opts)?,
        ("gla_reference", Some(g)) => gated::gla_reference(q, k, v, g, &opts)?,
        ("gla_step", Some(g)) => gated::decode::gla_step(q, k, v, g, state.as_ref(), &opts)?,
        _ => return Err(Error::invalid(format!("{op}: not a linear attention op"))),
    };
    let mut res = BTreeMap::from([("o".to_string(), out.output), ("final_state".to_string(), out.final_state.kv)]);
    if let Some(z) = out.final_state.z {
        res.insert("final_z".into(), z);
    }
    Ok(res)
}

fn run_window(inp: &Inputs) -> Result<BTreeMap<String, Tensor>> {
    inp.only(WINDOW_NAMES)?;
    let op = inp.op;
    let (q, k, v) = (inp.req("q")?, inp.req("k")?, inp.req("v")?);
    let factor = inp.req("window_factor")?;
    let cu = inp.cu_seqlens()?;
    let opts = WindowOptions {
        window: inp.usize_option("window", DEFAULT_WINDOW)?,
        scale: inp.scalar("scale")?.map(|s| s as f32),
        chunk_size: inp.usize_option("chunk_size", DEFAULT_CHUNK_SIZE)?,
        cu_seqlens: cu.as_deref(),
        q_feature_map: inp.opt("q_feature_map"),
        k_feature_map: inp.opt("k_feature_map"),
    };
    let out: WindowOutput = if op == "window_linear_step" {
        let state = WindowState {
            linear: LinearState { kv: inp.req("initial_state")?.clone(), z: Some(inp.req("initial_z")?.clone()) },
            keys: inp.req("cache_keys")?.clone(),
            values: inp.req("cache_values")?.clone(),
            tokens_seen: inp.req("tokens_seen")?.clone(),
        };
        window::window_linear_step(q, k, v, factor, &state, &opts)?
    } else {
        for name in ["initial_state", "initial_z", "cache_keys", "cache_values", "tokens_seen"] {
            if inp.opt(name).is_some() {
                return Err(Error::invalid(format!(
                    "{op}: prefill starts from an empty state; `{name}` is only for window_linear_step"
                )));
            }
        }
        if op == "window_linear" {
            window::window_linear(q, k, v, factor, &opts)?
        } else {
            window::window_linear_reference(q, k, v, factor, &opts)?
        }
    };
    let s = out.state;
    let z = s.linear.z.ok_or_else(|| Error::invalid(format!("{op}: window state without a normalizer")))?;
    Ok(BTreeMap::from([
        ("o".to_string(), out.output),
        ("final_state".to_string(), s.linear.kv),
        ("final_z".to_string(), z),
        ("cache_keys".to_string(), s.keys),
        ("cache_values".to_string(), s.values),
        ("tokens_seen".to_string(), s.tokens_seen),
    ]))
}
