//! Byte-exactness against ggml itself: `tests/fixtures/quant/ggml_ref_quants.safetensors`
//! holds f32 rows and the blocks ggml's own `quantize_row_*_ref` (the quantizers
//! llama.cpp uses without an importance matrix) produced for them, compiled from the
//! llama-cpp-python source by `tests/fixtures/quant/gen_ggml_ref_fixture.py`. The rows
//! cover normal, uniform, outlier-heavy, tiny, all-zero, constant, one-signed and
//! periodic data. A failure names the format, row, block and first differing byte.

use std::path::PathBuf;

use linattn_quant::GgmlFormat;
use linattn_quant::ggml::quantize;
use linattn_tensor::io::SafeTensorsFile;

fn fixture() -> SafeTensorsFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/quant/ggml_ref_quants.safetensors");
    SafeTensorsFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn quantized_bytes_equal_ggml_reference_quantizers() {
    let file = fixture();
    let input = file.tensor("input").unwrap();
    let [rows, cols] = input.dims() else { panic!("input must be 2-D, got {}", input.shape()) };
    let (rows, cols) = (*rows, *cols);
    let values = input.as_slice::<f32>().unwrap();
    for (name, format) in
        [("q8_0", GgmlFormat::Q8_0), ("q4_0", GgmlFormat::Q4_0), ("q4_k", GgmlFormat::Q4K), ("q6_k", GgmlFormat::Q6K)]
    {
        let expected = file.bytes(name).unwrap();
        let row_bytes = format.row_bytes(cols).unwrap();
        assert_eq!(expected.len(), rows * row_bytes, "{name}: fixture size");
        for r in 0..rows {
            let ours = quantize(format, &values[r * cols..(r + 1) * cols]).unwrap();
            let theirs = &expected[r * row_bytes..(r + 1) * row_bytes];
            if let Some(i) = ours.iter().zip(theirs).position(|(a, b)| a != b) {
                let block = format.block_bytes();
                panic!(
                    "{name} row {r}: byte {i} (block {}, offset {} in the block) is {:#04x}, ggml wrote {:#04x}",
                    i / block,
                    i % block,
                    ours[i],
                    theirs[i]
                );
            }
            assert_eq!(ours.len(), theirs.len(), "{name} row {r}: length");
        }
    }
}
