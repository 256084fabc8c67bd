//! linattn-adapters against adapters and outputs produced by real peft
//! (`tests/fixtures/adapters/gen_peft_fixtures.py`), and adapters written by linattn
//! for peft to load (`from_linattn/`, checked by the same script with `--check-linattn`).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{assert_close, fixtures, random, tensors};
use linattn_adapters::config::OrderedPatterns;
use linattn_adapters::peft_io::write_safetensors;
use linattn_adapters::{
    DenseLinear, LoraAdapter, LoraConfig, LoraModule, ModuleKind, load_adapter, lora_embedding_forward, lora_forward,
    lora_forward_reference, merge_checkpoint, merge_weight, save_adapter,
};
use linattn_tensor::{DType, Tensor};

const VARIANTS: [&str; 4] = ["lora", "rslora", "dora", "patterns"];

fn dense(base: &BTreeMap<String, Tensor>, path: &str) -> DenseLinear {
    let lin = DenseLinear::new(base[&format!("{path}.weight")].clone()).unwrap();
    match base.get(&format!("{path}.bias")) {
        Some(b) => lin.with_bias(b.clone()).unwrap(),
        None => lin,
    }
}

fn ids(t: &Tensor) -> Vec<u32> {
    t.as_slice::<i64>().unwrap().iter().map(|&v| v as u32).collect()
}

#[test]
fn unmerged_forward_matches_peft() {
    let base = tensors(&fixtures().join("base.safetensors"));
    for variant in VARIANTS {
        let dir = fixtures().join(variant);
        let adapter = load_adapter(&dir).unwrap();
        let expected = tensors(&dir.join("expected.safetensors"));
        let mut checked = 0;
        for (key, x) in &expected {
            let Some(path) = key.strip_suffix(".x") else { continue };
            let module = adapter.module(path).unwrap();
            let lin = dense(&base, path);
            let want = expected[&format!("{path}.y")].to_f32_vec().unwrap();
            let fused = lora_forward(&lin, module, x).unwrap().to_f32_vec().unwrap();
            assert_close(&format!("{variant} {path} fused"), &fused, &want, 1e-5);
            let reference = lora_forward_reference(&lin, module, x).unwrap().to_f32_vec().unwrap();
            assert_close(&format!("{variant} {path} reference"), &reference, &want, 1e-5);
            checked += 1;
        }
        if let Some(id_tensor) = expected.get("emb.ids") {
            let y = lora_embedding_forward(&base["emb.weight"], adapter.module("emb").unwrap(), &ids(id_tensor))
                .unwrap()
                .to_f32_vec()
                .unwrap();
            assert_close(&format!("{variant} emb"), &y, &expected["emb.y"].to_f32_vec().unwrap(), 1e-5);
            checked += 1;
        }
        assert!(checked >= 2, "{variant}: only {checked} modules checked");
    }
}

#[test]
fn config_semantics_match_peft() {
    let patterns = load_adapter(&fixtures().join("patterns")).unwrap();
    let rank = |p: &str| patterns.module(p).unwrap().rank();
    assert_eq!((rank("layers.0.up"), rank("layers.1.up"), rank("layers.0.down")), (4, 2, 3));
    assert_eq!(patterns.module("layers.0.q_proj").unwrap().scaling(), 2.0 / 4.0);
    assert_eq!(patterns.module("layers.1.down").unwrap().scaling(), 8.0 / 3.0);
    let rs = load_adapter(&fixtures().join("rslora")).unwrap();
    assert_eq!(rs.module("layers.0.up").unwrap().scaling(), 8.0 / 2.0);
    assert!(rs.modules.keys().all(|p| !p.ends_with("down")));
    assert!(load_adapter(&fixtures().join("dora")).unwrap().is_dora());
}

#[test]
fn merged_weights_match_peft_merge_and_unload() {
    let base = tensors(&fixtures().join("base.safetensors"));
    for variant in VARIANTS {
        let dir = fixtures().join(variant);
        let adapter = load_adapter(&dir).unwrap();
        let expected = tensors(&dir.join("expected.safetensors"));
        for (path, module) in &adapter.modules {
            let merged = merge_weight(&base[&format!("{path}.weight")], module).unwrap().to_f32_vec().unwrap();
            let want = expected[&format!("{path}.merged")].to_f32_vec().unwrap();
            assert_close(&format!("{variant} merged {path}"), &merged, &want, 1e-5);
        }
    }
}

#[test]
fn streaming_checkpoint_merge_matches_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let base_path = fixtures().join("base.safetensors");
    let base = tensors(&base_path);
    for variant in VARIANTS {
        let dir = fixtures().join(variant);
        let out = tmp.path().join(format!("{variant}.safetensors"));
        let report = merge_checkpoint(&base_path, &dir, &out, false).unwrap();
        let expected = tensors(&dir.join("expected.safetensors"));
        let merged = tensors(&out);
        assert_eq!(merged.len(), base.len());
        assert_eq!(report.merged.len() + report.copied, base.len());
        for (name, t) in &merged {
            let want = match name.strip_suffix(".weight").and_then(|p| expected.get(&format!("{p}.merged"))) {
                Some(w) => w.to_f32_vec().unwrap(),
                None => base[name].to_f32_vec().unwrap(),
            };
            assert_close(&format!("{variant} checkpoint {name}"), &t.to_f32_vec().unwrap(), &want, 1e-5);
        }
        if variant != "dora" {
            let back = tmp.path().join(format!("{variant}.unmerged.safetensors"));
            merge_checkpoint(&out, &dir, &back, true).unwrap();
            for (name, t) in tensors(&back) {
                assert_close(
                    &format!("{variant} unmerged {name}"),
                    &t.to_f32_vec().unwrap(),
                    &base[&name].to_f32_vec().unwrap(),
                    1e-5,
                );
            }
        } else {
            let err = merge_checkpoint(&out, &dir, &tmp.path().join("x.safetensors"), true).unwrap_err().to_string();
            assert!(err.contains("DoRA module `"), "{err}");
        }
    }
    // Nothing but the outputs is left behind (the temp file was renamed).
    assert!(std::fs::read_dir(tmp.path()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains(".tmp")));
}

/// The adapters linattn writes for peft: LoRA with a rank pattern, and DoRA.
fn linattn_adapters() -> Vec<(&'static str, LoraAdapter)> {
    let base = tensors(&fixtures().join("base.safetensors"));
    let mut out = Vec::new();
    for (name, dora) in [("lora", false), ("dora", true)] {
        let mut config = LoraConfig::new(3, 5.0, vec!["layers.0.q_proj".into(), "layers.1.up".into()]);
        config.rank_pattern = OrderedPatterns(vec![("up".into(), 2)]);
        config.use_dora = dora;
        let mut modules = BTreeMap::new();
        for (i, path) in ["layers.0.q_proj", "layers.1.up"].into_iter().enumerate() {
            let w = &base[&format!("{path}.weight")];
            let (n_out, n_in) = (w.dims()[0], w.dims()[1]);
            let r = config.rank_for(path).unwrap();
            let a = random(&[r, n_in], 10 + i as u64, 0.3);
            let b = random(&[n_out, r], 20 + i as u64, 0.3);
            let s = config.scaling_for(path).unwrap();
            let mag = dora.then(|| {
                let m = random(&[n_out], 30 + i as u64, 0.2).to_f32_vec().unwrap();
                Tensor::from_vec(m.iter().map(|v| 1.0 + v.abs()).collect::<Vec<f32>>(), [n_out]).unwrap()
            });
            let module = LoraModule::new(path, ModuleKind::Linear, &a, &b, mag.as_ref(), s, false).unwrap();
            modules.insert(path.to_string(), module);
        }
        out.push((name, LoraAdapter { config, modules, saved_modules: BTreeMap::new(), file_dtype: DType::F32 }));
    }
    out
}

fn write_for_peft(root: &Path) {
    let base = tensors(&fixtures().join("base.safetensors"));
    for (name, adapter) in linattn_adapters() {
        save_adapter(&adapter, &root.join(name)).unwrap();
        let mut expected = Vec::new();
        for (i, (path, module)) in adapter.modules.iter().enumerate() {
            let x = random(&[4, module.in_features()], 40 + i as u64, 1.0);
            let y = lora_forward(&dense(&base, path), module, &x).unwrap();
            expected.push((format!("{path}.x"), x));
            expected.push((format!("{path}.y"), y));
        }
        write_safetensors(&root.join(format!("{name}.expected.safetensors")), &expected).unwrap();
    }
}

/// Writes the adapters (to a temp dir; to the committed fixture dir when
/// `LINATTN_WRITE_FIXTURES=1`) and checks they load back identically.
#[test]
fn saved_adapter_for_peft() {
    let tmp = tempfile::tempdir().unwrap();
    write_for_peft(tmp.path());
    if std::env::var("LINATTN_WRITE_FIXTURES").as_deref() == Ok("1") {
        write_for_peft(&fixtures().join("from_linattn"));
    }
    for (name, original) in linattn_adapters() {
        let loaded = load_adapter(&tmp.path().join(name)).unwrap();
        assert_eq!(loaded.config, original.config);
        for (path, m) in &original.modules {
            let l = loaded.module(path).unwrap();
            assert_eq!(l.a().to_f32_vec().unwrap(), m.a().to_f32_vec().unwrap());
            assert_eq!(l.b().to_f32_vec().unwrap(), m.b().to_f32_vec().unwrap());
            assert_eq!(l.scaling(), m.scaling());
            assert_eq!(l.magnitude().map(|t| t.to_f32_vec().unwrap()), m.magnitude().map(|t| t.to_f32_vec().unwrap()));
        }
    }
}

/// The committed `from_linattn/` files (which peft was checked against) still load and
/// still produce the outputs saved with them.
#[test]
fn committed_from_linattn_fixtures_reproduce() {
    let root = fixtures().join("from_linattn");
    let base = tensors(&fixtures().join("base.safetensors"));
    for name in ["lora", "dora"] {
        let adapter = load_adapter(&root.join(name)).unwrap();
        let expected = tensors(&root.join(format!("{name}.expected.safetensors")));
        let mut checked = 0;
        for (path, module) in &adapter.modules {
            let y = lora_forward(&dense(&base, path), module, &expected[&format!("{path}.x")]).unwrap();
            assert_close(
                &format!("from_linattn {name} {path}"),
                &y.to_f32_vec().unwrap(),
                &expected[&format!("{path}.y")].to_f32_vec().unwrap(),
                1e-6,
            );
            checked += 1;
        }
        assert_eq!(checked, 2);
    }
}
