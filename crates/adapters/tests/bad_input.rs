//! Bad adapters and bad arguments: every case is an `Err` whose message names the key,
//! the module or both shapes. Adapters are built by editing the committed peft fixture.

mod common;

use std::path::Path;

use common::{fixtures, random, tensors};
use linattn_adapters::cli_support::{combine_adapter_dirs, inspect_adapter, parse_combination, parse_weighted_adapter};
use linattn_adapters::peft_io::{CONFIG_FILE, WEIGHTS_FILE, write_safetensors};
use linattn_adapters::{
    DenseLinear, LoraModule, ModuleKind, load_adapter, lora_forward, merge_checkpoint, merge_weight,
};
use linattn_tensor::{Device, Tensor};

/// Copies the `lora` fixture into `dir`, letting `edit` change its tensors and config.
fn edited(dir: &Path, edit: impl FnOnce(&mut Vec<(String, Tensor)>, &mut serde_json::Value)) {
    let src = fixtures().join("lora");
    let mut tensors: Vec<(String, Tensor)> = tensors(&src.join(WEIGHTS_FILE)).into_iter().collect();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join(CONFIG_FILE)).unwrap()).unwrap();
    edit(&mut tensors, &mut config);
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), config.to_string()).unwrap();
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors).unwrap();
}

fn load_err(edit: impl FnOnce(&mut Vec<(String, Tensor)>, &mut serde_json::Value)) -> String {
    let tmp = tempfile::tempdir().unwrap();
    edited(tmp.path(), edit);
    load_adapter(tmp.path()).unwrap_err().to_string()
}

const A_KEY: &str = "base_model.model.layers.0.up.lora_A.weight";

#[test]
fn adapter_files_with_problems_are_rejected_by_key() {
    let e = load_err(|t, _| t.retain(|(k, _)| k != "base_model.model.layers.0.up.lora_B.weight"));
    assert!(e.contains("missing key `base_model.model.layers.0.up.lora_B.weight`"), "{e}");
    let e = load_err(|t, _| t.push(("base_model.model.layers.0.up.extra".into(), random(&[2], 1, 1.0))));
    assert!(e.contains("unexpected key `base_model.model.layers.0.up.extra`"), "{e}");
    let e = load_err(|t, _| t.push(("model.layers.0.up.lora_A.weight".into(), random(&[2], 1, 1.0))));
    assert!(e.contains("`model.layers.0.up.lora_A.weight`"), "{e}");
    let e = load_err(|t, _| {
        let a = t.iter_mut().find(|(k, _)| k == A_KEY).unwrap();
        let mut v = a.1.to_f32_vec().unwrap();
        v[5] = f32::NAN;
        a.1 = Tensor::from_vec(v, a.1.dims().to_vec()).unwrap();
    });
    assert!(e.contains(&format!("`{A_KEY}`")) && e.contains("index 5"), "{e}");
    let e = load_err(|_, c| c["r"] = 3.into());
    assert!(e.contains("has shape [4, ") && e.contains("rank 3"), "{e}");
    let e = load_err(|_, c| c["r"] = 0.into());
    assert!(e.contains("`r` is 0"), "{e}");
    let e = load_err(|t, _| {
        let a = t.iter_mut().find(|(k, _)| k == A_KEY).unwrap();
        a.1 = random(&[4, 0], 1, 1.0);
        let b = t.iter_mut().find(|(k, _)| k == "base_model.model.layers.0.up.lora_B.weight").unwrap();
        b.1 = random(&[24, 3], 1, 1.0);
    });
    assert!(e.contains("[4, 0]") && e.contains("[24, 3]"), "{e}");
    let e = load_err(|_, c| c["target_modules"] = serde_json::json!(["q_proj", "down", "emb"]));
    assert!(e.contains("not targeted") && e.contains("layers.0.up"), "{e}");
    let e = load_err(|_, c| c["use_dora"] = true.into());
    assert!(e.contains("lora_magnitude_vector"), "{e}");
}

#[test]
fn checkpoint_merge_rejects_mismatches_before_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let base = fixtures().join("base.safetensors");
    let out = tmp.path().join("out.safetensors");
    // A target entry that matches no base module.
    let dir = tmp.path().join("unknown_target");
    edited(&dir, |_, c| c["target_modules"] = serde_json::json!(["q_proj", "up", "down", "emb", "o_proj"]));
    let e = merge_checkpoint(&base, &dir, &out, false).unwrap_err().to_string();
    assert!(e.contains("`o_proj`") && e.contains("matches no"), "{e}");
    // A targeted base module without adapter weights.
    let dir = tmp.path().join("missing_module");
    edited(&dir, |t, _| t.retain(|(k, _)| !k.contains("layers.1.down")));
    let e = merge_checkpoint(&base, &dir, &out, false).unwrap_err().to_string();
    assert!(e.contains("layers.1.down"), "{e}");
    // A base whose tensor has the wrong shape for the adapter.
    let mut base_tensors: Vec<(String, Tensor)> = tensors(&base).into_iter().collect();
    let w = base_tensors.iter_mut().find(|(k, _)| k == "layers.0.q_proj.weight").unwrap();
    w.1 = random(&[16, 8], 1, 1.0);
    let bad_base = tmp.path().join("bad_base.safetensors");
    write_safetensors(&bad_base, &base_tensors).unwrap();
    let e = merge_checkpoint(&bad_base, &fixtures().join("lora"), &out, false).unwrap_err().to_string();
    assert!(e.contains("layers.0.q_proj.weight") && e.contains("[16, 8]") && e.contains("[16, 16]"), "{e}");
    assert!(!out.exists(), "no output after a failed merge");
}

#[test]
fn op_arguments_are_checked() {
    let a = random(&[2, 8], 1, 1.0);
    let b = random(&[6, 3], 2, 1.0);
    let e = LoraModule::new("m", ModuleKind::Linear, &a, &b, None, 1.0, false).unwrap_err().to_string();
    assert!(e.contains("[2, 8]") && e.contains("[6, 3]") && e.contains("m.lora_A.weight"), "{e}");
    let e =
        LoraModule::new("m", ModuleKind::Linear, &random(&[0, 8], 1, 1.0), &random(&[6, 0], 1, 1.0), None, 1.0, false)
            .unwrap_err()
            .to_string();
    assert!(e.contains("rank 0"), "{e}");
    let m = LoraModule::new("m", ModuleKind::Linear, &a, &random(&[6, 2], 2, 1.0), None, 1.0, false).unwrap();
    let lin = DenseLinear::new(random(&[6, 9], 3, 1.0)).unwrap();
    let e = lora_forward(&lin, &m, &random(&[3, 9], 4, 1.0)).unwrap_err().to_string();
    assert!(e.contains("[2, 8]") && e.contains("[6, 9]"), "{e}");
    let lin = DenseLinear::new(random(&[6, 8], 3, 1.0)).unwrap();
    let e = lora_forward(&lin, &m, &random(&[3, 9], 4, 1.0)).unwrap_err().to_string();
    assert!(e.contains("[3, 9]") && e.contains("8 input features"), "{e}");
    let e = merge_weight(&random(&[8, 6], 5, 1.0), &m).unwrap_err().to_string();
    assert!(e.contains("[8, 6]") && e.contains("[6, 8]"), "{e}");
    let mut w = random(&[6, 8], 5, 1.0).to_f32_vec().unwrap();
    w[3] = f32::INFINITY;
    let e = merge_weight(&Tensor::from_vec(w, [6, 8]).unwrap(), &m).unwrap_err().to_string();
    assert!(e.contains("`m.weight`") && e.contains("index 3"), "{e}");
    // The CPU tensor path is the one that runs here; GPU tensors are routed in one place.
    assert!(linattn_adapters::device::cpu_only("op", &random(&[1], 1, 1.0)).is_ok());
    let _ = Device::Cpu;
}

#[test]
fn cli_helpers_parse_and_report() {
    assert_eq!(parse_weighted_adapter("a/b:0.5").unwrap(), ("a/b".into(), 0.5));
    assert_eq!(parse_weighted_adapter("a/b").unwrap(), ("a/b".into(), 1.0));
    assert!(parse_combination("svd", None).unwrap_err().to_string().contains("--rank"));
    assert!(parse_combination("ties", None).unwrap_err().to_string().contains("`ties`"));
    let s = inspect_adapter(&fixtures().join("patterns")).unwrap();
    assert_eq!(s.modules.len(), 6);
    assert!(s.to_string().contains("layers.1.up") && s.to_string().contains("r=2"));
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![(fixtures().join("lora"), 0.5), (fixtures().join("rslora"), 1.0)];
    let combined = combine_adapter_dirs(&inputs, parse_combination("cat", None).unwrap(), tmp.path()).unwrap();
    assert_eq!(combined.modules.len(), 7); // union of lora's 7 modules and rslora's 4
    let reloaded = load_adapter(tmp.path()).unwrap();
    assert_eq!(reloaded.module("layers.0.up").unwrap().rank(), 8);
    assert_eq!(reloaded.module("layers.0.down").unwrap().rank(), 8); // zero-padded like peft
}
