// quant/codebook_matmul.wgsl: fused dequantize + matmul `y [m, rows] = x [m, cols] W^T` for
// weights whose element is `code_table[code] * scale`: bitsandbytes NF4 / FP4 (4-bit
// codes, 16-entry table, blockwise absmax) and FP8 E4M3 / E5M2 (8-bit codes, table = the
// exact FP8 decode, per-tensor or block scales). W [rows, cols] is never materialized.
// (LLM.int8 has its own kernels with the outlier decomposition: quant/int8_mixed.wgsl.)
//
// Entry points: codebook_matmul_u4 (codes are nibbles), codebook_matmul_u8 (codes are
// bytes). One workgroup of 64 invocations per (weight row, tile of TILE_M = 4 rows of x),
// as quant/ggml_matmul.wgsl. Invocation `l` walks the row's units of 32 columns
// l, l + 64, ..., decodes each element once and dots it with the (up to) 4 x rows; the
// 4 x 64 partial sums are then reduced by a shared-memory tree (no subgroup size is
// assumed). m = 1 is the decode matvec.
// Grid: rows * ceil(m / TILE_M) workgroups (linear index = tile * rows + row), split over
// x and y by the host; extra workgroups exit (workgroup-uniform, before any barrier).
//
// Bindings: 0 codes (read, the packed bytes as little-endian u32 words), 1 table (read,
//   f32: 16 or 256 entries, copied into workgroup memory), 2 scales (read, f32),
//   3 x (read, DTYPE elements in u32 words), 4 y (read_write, atomic words over a
//   zero-filled buffer: 16-bit results are OR-ed into their half word), 5 params.
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16 for x and y.
//
// Layout (docs/formats.md): element (r, c) has flat index e = r * cols + c.
//   u4 (bitsandbytes): byte e / 2 holds element e in its HIGH nibble when e is even and
//     in its LOW nibble when e is odd; the code indexes the 16-entry table.
//   u8: byte e is the code; table has 256 entries.
//   Scale of element (r, c): scales[e / flat_block] when flat_block > 0 (bitsandbytes
//     blocks run over the flattened weight); otherwise
//     scales[(r / block_rows) * scale_cols + c / block_cols] (FP8 per tensor: rows x cols;
//     FP8 blocks: 128 x 128 with scale_cols = ceil(cols/128)).
//   Value: table[code] * scale, the same f32 product as the CPU decoders
//     (`FourBitWeight::decode_range`, `Fp8Weight::decode_row`).
// Every word read is bounds-checked against arrayLength (out of range reads as 0); the
// host checks the sizes of every buffer and that rows * cols and the scale indices fit
// in u32 before the dispatch.
//
// Numerics: per element one f32 weight value as above, dotted with x in f32 (fma) per
// invocation, then the tree sum in f32; the output is rounded once to DTYPE.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    cols: u32,
    m: u32,
    // ceil(m / TILE_M).
    m_tiles: u32,
    // > 0: the scale index is the flat element index / flat_block.
    flat_block: u32,
    block_rows: u32,
    block_cols: u32,
    // Scales per row of scale blocks (ceil(cols / block_cols)).
    scale_cols: u32,
}

@group(0) @binding(0) var<storage, read> codes: array<u32>;
@group(0) @binding(1) var<storage, read> table: array<u32>;
@group(0) @binding(2) var<storage, read> scales: array<u32>;
@group(0) @binding(3) var<storage, read> x: array<u32>;
@group(0) @binding(4) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(5) var<uniform> params: Params;

const WORKGROUP: u32 = 64u;
const TILE_M: u32 = 4u;
const UNIT: u32 = 32u;

var<workgroup> partial: array<f32, 256>; // TILE_M * WORKGROUP
var<workgroup> lut: array<f32, 256>;

fn code_word(i: u32) -> u32 {
    if i < arrayLength(&codes) {
        return codes[i];
    }
    return 0u;
}

fn scale_at(i: u32) -> f32 {
    if i < arrayLength(&scales) {
        return bitcast<f32>(scales[i]);
    }
    return 0.0;
}

fn load_x(i: u32) -> f32 {
    let w = word_of(i);
    if w < arrayLength(&x) {
        return decode(x[w], i);
    }
    return 0.0;
}

fn store_y(i: u32, v: f32) {
    let w = word_of(i);
    if w >= arrayLength(&y) {
        return;
    }
    if DTYPE == DTYPE_F32 {
        atomicStore(&y[w], bitcast<u32>(v));
    } else {
        atomicOr(&y[w], encode_bits(v) << lane_shift(i));
    }
}

fn scale_index(r: u32, c: u32) -> u32 {
    if params.flat_block > 0u {
        return (r * params.cols + c) / params.flat_block;
    }
    return (r / params.block_rows) * params.scale_cols + c / params.block_cols;
}

// Copies the code table into workgroup memory (entries past the buffer read as 0).
fn load_table(local: u32) {
    for (var i = local; i < 256u; i += WORKGROUP) {
        var v = 0.0;
        if i < arrayLength(&table) {
            v = bitcast<f32>(table[i]);
        }
        lut[i] = v;
    }
    workgroupBarrier();
}

// Adds the dot of columns col0 .. min(col0 + 32, cols) of row `row` with the tile's x rows
// to acc. NIBBLES selects 4-bit codes.
fn unit_dot(nibbles: bool, row: u32, col0: u32, t0: u32, tokens: u32, acc: ptr<function, array<f32, 4>>) {
    let col_end = min(col0 + UNIT, params.cols);
    let e0 = row * params.cols;
    // One cached code word and scale: consecutive elements mostly share both.
    var word_index = 0xffffffffu;
    var word = 0u;
    var scale_idx = 0xffffffffu;
    var scale = 0.0;
    for (var c = col0; c < col_end; c++) {
        let e = e0 + c;
        var byte_index = e;
        if nibbles {
            byte_index = e >> 1u;
        }
        if (byte_index >> 2u) != word_index {
            word_index = byte_index >> 2u;
            word = code_word(word_index);
        }
        let byte = (word >> ((byte_index & 3u) * 8u)) & 0xffu;
        var code = byte;
        if nibbles {
            if (e & 1u) == 0u {
                code = byte >> 4u;
            } else {
                code = byte & 15u;
            }
        }
        let si = scale_index(row, c);
        if si != scale_idx {
            scale_idx = si;
            scale = scale_at(si);
        }
        let w = lut[code] * scale;
        for (var t = 0u; t < tokens; t++) {
            (*acc)[t] = fma(w, load_x((t0 + t) * params.cols + c), (*acc)[t]);
        }
    }
}

// Tree-reduces the tile's partial sums and writes y[t0 + t, row].
fn reduce_and_store(local: u32, row: u32, t0: u32, tokens: u32, acc: array<f32, 4>) {
    for (var t = 0u; t < TILE_M; t++) {
        partial[t * WORKGROUP + local] = acc[t];
    }
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            for (var t = 0u; t < TILE_M; t++) {
                partial[t * WORKGROUP + local] += partial[t * WORKGROUP + local + stride];
            }
        }
        workgroupBarrier();
    }
    if local < tokens {
        store_y((t0 + local) * params.rows + row, partial[local * WORKGROUP]);
    }
}

struct Tile {
    valid: bool,
    row: u32,
    t0: u32,
    tokens: u32,
}

fn tile_of(workgroup_id: vec3<u32>, num_workgroups: vec3<u32>) -> Tile {
    let id = linear_workgroup(workgroup_id, num_workgroups);
    if params.rows == 0u || id >= params.rows * params.m_tiles {
        return Tile(false, 0u, 0u, 0u);
    }
    let row = id % params.rows;
    let t0 = (id / params.rows) * TILE_M;
    return Tile(true, row, t0, min(TILE_M, params.m - t0));
}

fn codebook_matmul(nibbles: bool, workgroup_id: vec3<u32>, num_workgroups: vec3<u32>, local: u32) {
    let tile = tile_of(workgroup_id, num_workgroups);
    if !tile.valid {
        return;
    }
    load_table(local);
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let units = (params.cols + UNIT - 1u) / UNIT;
    for (var u = local; u < units; u += WORKGROUP) {
        unit_dot(nibbles, tile.row, u * UNIT, tile.t0, tile.tokens, &acc);
    }
    reduce_and_store(local, tile.row, tile.t0, tile.tokens, acc);
}

@compute @workgroup_size(64)
fn codebook_matmul_u4(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    codebook_matmul(true, workgroup_id, num_workgroups, local);
}

@compute @workgroup_size(64)
fn codebook_matmul_u8(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    codebook_matmul(false, workgroup_id, num_workgroups, local);
}
