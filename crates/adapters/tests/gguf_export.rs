//! GGUF LoRA export: the peft fixtures written as GGUF adapters and read back with
//! `linattn_quant::gguf::GgufFile` (metadata, names, ggml dims, values, the per-module
//! scaling folded into B). `LINATTN_WRITE_FIXTURES=1` also writes
//! `tests/fixtures/adapters/gguf/*.gguf`, which `tests/fixtures/adapters/check_gguf_lora.py`
//! reads with the `gguf` Python package; the committed files must reproduce byte for byte.

mod common;

use common::fixtures;
use linattn_adapters::gguf_export::{adapter_to_gguf, llama_cpp_scaling};
use linattn_adapters::peft_io::load_adapter;
use linattn_adapters::{LoraAdapter, ModuleKind, export_gguf};
use linattn_quant::gguf::{GgufFile, GgufValue};
use linattn_tensor::DType;

const CASES: [(&str, DType); 3] = [("lora", DType::F32), ("patterns", DType::F16), ("rslora", DType::F32)];

fn file_name(name: &str, dtype: DType) -> String {
    format!("{name}_{dtype}.gguf")
}

fn check_file(adapter: &LoraAdapter, dtype: DType, gguf: &GgufFile) {
    assert_eq!(gguf.get("general.type").and_then(|v| v.as_str()), Some("adapter"));
    assert_eq!(gguf.get("adapter.type").and_then(|v| v.as_str()), Some("lora"));
    let alpha = adapter.config.lora_alpha as f32;
    assert_eq!(gguf.get("adapter.lora.alpha"), Some(&GgufValue::F32(alpha)));
    let tol = if dtype == DType::F32 { 0.0 } else { 1e-3 };
    for (path, m) in &adapter.modules {
        let (r, n_in, n_out) = (m.rank() as u64, m.in_features() as u64, m.out_features() as u64);
        let a_info = gguf.info(&format!("{path}.weight.lora_a")).unwrap();
        let b_info = gguf.info(&format!("{path}.weight.lora_b")).unwrap();
        let a_dims = if m.kind() == ModuleKind::Embedding { vec![r, n_in] } else { vec![n_in, r] };
        assert_eq!(a_info.ggml_dims, a_dims, "{path} lora_a dims (innermost first)");
        assert_eq!(b_info.ggml_dims, vec![r, n_out], "{path} lora_b dims (innermost first)");
        assert_eq!(a_info.dtype().unwrap(), dtype);
        let a = gguf.tensor(&a_info.name).unwrap().to_f32_vec().unwrap();
        let b = gguf.tensor(&b_info.name).unwrap().to_f32_vec().unwrap();
        // What llama.cpp computes: (alpha / r) * B A must equal s B A.
        let scale = llama_cpp_scaling(alpha, m.rank());
        let want_b: Vec<f32> = m.b().to_f32_vec().unwrap().iter().map(|v| v * m.scaling() / scale).collect();
        let mut want_a = m.a().to_f32_vec().unwrap();
        if m.kind() == ModuleKind::Embedding {
            let (rr, nn) = (m.rank(), m.in_features());
            want_a = (0..nn * rr).map(|k| want_a[(k % rr) * nn + k / rr]).collect();
        }
        for (what, got, want) in [("lora_a", &a, &want_a), ("lora_b", &b, &want_b)] {
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() <= tol * w.abs().max(1e-2), "{path} {what}: {g} vs {w}");
            }
        }
    }
    assert_eq!(gguf.tensors.len(), 2 * adapter.modules.len());
}

#[test]
fn exported_adapters_read_back_with_gguf_file() {
    let tmp = tempfile::tempdir().unwrap();
    let write_fixtures = std::env::var("LINATTN_WRITE_FIXTURES").as_deref() == Ok("1");
    for (name, dtype) in CASES {
        let adapter = load_adapter(&fixtures().join(name)).unwrap();
        let out = tmp.path().join(file_name(name, dtype));
        let report = export_gguf(&adapter, dtype, Some("tiny"), &out).unwrap();
        assert_eq!(report.modules, adapter.modules.len());
        assert_eq!(report.rescaled.is_empty(), name == "lora", "{name}: {:?}", report.rescaled);
        let gguf = GgufFile::open(&out).unwrap();
        assert_eq!(gguf.get("general.architecture").and_then(|v| v.as_str()), Some("tiny"));
        check_file(&adapter, dtype, &gguf);
        let committed = fixtures().join("gguf").join(file_name(name, dtype));
        if write_fixtures {
            std::fs::copy(&out, &committed).unwrap();
        }
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(std::fs::read(&committed).unwrap(), bytes, "{} differs from a fresh export", committed.display());
    }
}

#[test]
fn export_rejects_what_gguf_lora_cannot_hold() {
    let dora = load_adapter(&fixtures().join("dora")).unwrap();
    let err = adapter_to_gguf(&dora, DType::F32, None).err().expect("DoRA is rejected");
    assert!(err.to_string().contains("DoRA"), "{err}");
    let lora = load_adapter(&fixtures().join("lora")).unwrap();
    let err = adapter_to_gguf(&lora, DType::BF16, None).err().expect("bf16 is rejected");
    assert!(err.to_string().contains("f32 or f16"), "{err}");
    let err = linattn_adapters::cli_support::export_adapter_gguf(
        &fixtures().join("lora"),
        &std::env::temp_dir().join("never.gguf"),
        "q8_0",
        None,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--dtype"), "{err}");
}
