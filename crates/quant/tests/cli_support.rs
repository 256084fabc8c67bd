//! The `linattn quant` functions end to end on temporary files.

mod common;

use linattn_quant::cli_support;
use linattn_quant::{QuantFormat, checkpoint, gguf::GgufFile};

fn write_input(path: &std::path::Path) -> Vec<f32> {
    let w = common::rand_vec(16 * 256, 4);
    let bias = common::rand_vec(16, 5);
    let to_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    checkpoint::save_with(
        path,
        &[],
        vec![
            ("layer.weight".into(), safetensors::Dtype::F32, vec![16, 256], to_bytes(&w)),
            ("layer.bias".into(), safetensors::Dtype::F32, vec![16], to_bytes(&bias)),
        ],
    )
    .unwrap();
    w
}

#[test]
fn quantize_inspect_dequant_gguf_and_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let w = write_input(&input);
    for (fmt, ext) in
        [(QuantFormat::Q4K, "gguf"), (QuantFormat::Nf4, "safetensors"), (QuantFormat::Fp8E4M3, "safetensors")]
    {
        let out = dir.path().join(format!("out_{}.{ext}", fmt.name()));
        let done = cli_support::quantize(&input, fmt, &out).unwrap();
        assert_eq!(done, vec!["layer.weight".to_string()]);
        let report = cli_support::inspect(&out).unwrap();
        let text = cli_support::inspect_text(&report);
        assert!(text.contains("layer.weight"), "{text}");
        let t = report["tensors"].as_array().unwrap().iter().find(|t| t["name"] == "layer.weight").unwrap().clone();
        assert_eq!(t["format"], fmt.name());
        let deq_path = dir.path().join(format!("deq_{}.safetensors", fmt.name()));
        cli_support::dequant(&out, "layer.weight", &deq_path).unwrap();
        let raw = common::load(deq_path.to_str().unwrap());
        let back = raw["layer.weight"].f32s();
        let max_err = w.iter().zip(&back).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(max_err < 0.2, "{fmt}: max err {max_err}");
        if ext == "gguf" {
            assert_eq!(GgufFile::open(&out).unwrap().tensors.len(), 2);
        }
    }
    let err = cli_support::quantize(&input, QuantFormat::Nf4, dir.path().join("x.gguf")).unwrap_err().to_string();
    assert!(err.contains("nf4"), "{err}");
    assert!(
        cli_support::dequant(dir.path().join("out_q4_k.gguf"), "nope", dir.path().join("n.safetensors"))
            .unwrap_err()
            .to_string()
            .contains("nope")
    );
}
