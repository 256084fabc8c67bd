// quant/ggml_matmul.wgsl: fused dequantize + matmul `y [m, rows] = x [m, cols] W^T` for a
// ggml block-quantized weight `W [rows, cols]` (Q8_0, Q4_0, Q4_K or Q6_K), without
// materializing W.
//
// Entry points: ggml_matmul_q8_0, ggml_matmul_q4_0, ggml_matmul_q4_k, ggml_matmul_q6_k
// (the same scheme, different block decoders). One workgroup of 64 invocations per
// (weight row, tile of TILE_M = 4 rows of x). Invocation `l` walks the row's work units
// l, l + 64, ... (a Q8_0 / Q4_0 block of 32, a quarter of a Q4_K super-block: 64
// elements, or an eighth of a Q6_K super-block: 32 elements), decodes
// each unit once and dots it with the (up to) 4 x rows; the 4 x 64 partial sums are then
// reduced by a shared-memory tree (no subgroup size is assumed). m = 1 is the decode
// matvec.
// Grid: rows * ceil(m / TILE_M) workgroups (linear index = tile * rows + row), split over
// x and y by the host; extra workgroups exit (workgroup-uniform, before any barrier).
//
// Bindings: 0 weight (read, the raw ggml bytes as little-endian u32 words), 1 x (read,
//   DTYPE elements in u32 words), 2 y (read_write, atomic words over a zero-filled
//   buffer: 16-bit results are OR-ed into their half word), 3 params.
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16 for x and y.
//
// Byte layout (docs/formats.md): row r starts at byte r * row_bytes, row_bytes =
// (cols / 32) * block_bytes.
//   Q8_0, 34 bytes: f16 d (bytes 0..2, little-endian), 32 x i8 qs; element j = d * qs[j].
//   Q4_0, 18 bytes: f16 d, 16 bytes qs; byte j holds element j (low nibble) and element
//     j + 16 (high nibble), value (nibble - 8) * d.
//   Q4_K, 144 bytes (super-block of 256, word aligned): f16 d (0..2), f16 dmin (2..4),
//     12 bytes of 6-bit scales / mins for 8 sub-blocks of 32 (4..16), 128 bytes qs
//     (16..144). Sub-block j: for j < 4 sc = s[j] & 63, mn = s[j + 4] & 63; else
//     sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, mn = (s[j + 4] >> 4) | (s[j] >> 6) << 4.
//     Byte l of the p-th 32-byte group of qs holds element 64p + l (sub-block 2p, low
//     nibble) and 64p + 32 + l (sub-block 2p + 1, high nibble); value d*sc*q - dmin*mn.
//     Per unit p: d1 * sum(q x) - dmin*mn1 * sum(x) (+ the same for the high nibbles),
//     as the CPU `q4_k::dot_block` forms it.
//   Q6_K, 210 bytes (super-block of 256, starts at an even byte): ql (0..128), qh
//     (128..192), 16 x i8 scales (192..208), f16 d (208..210). For half h (0..2), quad k
//     (0..4) and l (0..32), element 128h + 32k + l has the 6-bit value
//     ((ql[64h + l + 32 (k & 1)] >> 4 (k >> 1)) & 15) | ((qh[32h + l] >> 2k) & 3) << 4,
//     minus 32, times d * sc[8h + 2k + l / 16]. A unit is one (h, k): 32 elements in two
//     sub-blocks of 16, each dotted in f32 and scaled by d * sc once.
// Q8_0 / Q4_0 / Q6_K blocks are not 4-byte aligned: a block starts at an even byte offset `off`, so d is the
// half word at `off` (never straddling a word) and qs starts at off + 2, which is either
// word aligned or at the middle of a word; 4 consecutive qs bytes are assembled into one
// u32 from one or two words with shifts, and i8 / nibbles are extracted with shifts and
// masks (i8 sign-extended by an arithmetic right shift of an i32).
// Every word read is bounds-checked against arrayLength (out of range reads as 0); the
// host also checks that the weight buffer holds rows * row_bytes bytes.
//
// Numerics: d is converted exactly (f16_to_f32); per block sum_j q_j * x_j in f32 (fma),
// times d, accumulated in f32 per invocation, then the tree sum in f32. The output is
// rounded once to DTYPE.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    cols: u32,
    m: u32,
    // Blocks per weight row (cols / 32).
    blocks: u32,
    // Bytes per weight row.
    row_bytes: u32,
    // ceil(m / TILE_M).
    m_tiles: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> weight: array<u32>;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 64u;
const TILE_M: u32 = 4u;
const BLOCK_ELEMS: u32 = 32u;

var<workgroup> partial: array<f32, 256>; // TILE_M * WORKGROUP

fn weight_word(i: u32) -> u32 {
    if i < arrayLength(&weight) {
        return weight[i];
    }
    return 0u;
}

// The f16 scale stored at the even byte offset `off`.
fn block_scale(off: u32) -> f32 {
    return f16_to_f32((weight_word(off >> 2u) >> ((off & 2u) * 8u)) & 0xffffu);
}

// Bytes off + 4g .. off + 4g + 3 as one little-endian u32; `off` is even.
fn bytes4(off: u32, g: u32) -> u32 {
    let start = off + 4u * g;
    let w = start >> 2u;
    if (start & 2u) == 0u {
        return weight_word(w);
    }
    return (weight_word(w) >> 16u) | (weight_word(w + 1u) << 16u);
}

// Byte `i` of the weight buffer.
fn weight_byte(i: u32) -> u32 {
    return (weight_word(i >> 2u) >> ((i & 3u) * 8u)) & 0xffu;
}

// Signed byte `k` (0..3) of a packed word.
fn i8_of(packed: u32, k: u32) -> f32 {
    return f32(bitcast<i32>(packed << (24u - 8u * k)) >> 24u);
}

// Signed byte at byte offset `i` of the weight buffer.
fn weight_i8(i: u32) -> f32 {
    return f32(bitcast<i32>(weight_byte(i) << 24u) >> 24u);
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

// Adds d * dot(block, x[t, col0 .. col0 + 32]) to acc[t] for the valid tokens of the tile.
fn q8_0_block(off: u32, col0: u32, t0: u32, tokens: u32, acc: ptr<function, array<f32, 4>>) {
    let d = block_scale(off);
    var sums = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var g = 0u; g < 8u; g++) {
        let packed = bytes4(off + 2u, g);
        for (var k = 0u; k < 4u; k++) {
            let q = i8_of(packed, k);
            let col = col0 + 4u * g + k;
            for (var t = 0u; t < tokens; t++) {
                sums[t] = fma(q, load_x((t0 + t) * params.cols + col), sums[t]);
            }
        }
    }
    for (var t = 0u; t < tokens; t++) {
        (*acc)[t] = fma(d, sums[t], (*acc)[t]);
    }
}

fn q4_0_block(off: u32, col0: u32, t0: u32, tokens: u32, acc: ptr<function, array<f32, 4>>) {
    let d = block_scale(off);
    var sums = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var g = 0u; g < 4u; g++) {
        let packed = bytes4(off + 2u, g);
        for (var k = 0u; k < 4u; k++) {
            let byte = (packed >> (8u * k)) & 0xffu;
            let lo = f32(i32(byte & 0xfu) - 8);
            let hi = f32(i32(byte >> 4u) - 8);
            let col = col0 + 4u * g + k;
            for (var t = 0u; t < tokens; t++) {
                let base = (t0 + t) * params.cols;
                sums[t] = fma(lo, load_x(base + col), sums[t]);
                sums[t] = fma(hi, load_x(base + col + 16u), sums[t]);
            }
        }
    }
    for (var t = 0u; t < tokens; t++) {
        (*acc)[t] = fma(d, sums[t], (*acc)[t]);
    }
}

// 6-bit (scale, min) of Q4_K sub-block j (0..8); the 12 packed bytes start at off + 4.
fn q4_k_scale_min(off: u32, j: u32) -> vec2<u32> {
    let s = off + 4u;
    if j < 4u {
        return vec2<u32>(weight_byte(s + j) & 63u, weight_byte(s + j + 4u) & 63u);
    }
    let sc = (weight_byte(s + j + 4u) & 15u) | ((weight_byte(s + j - 4u) >> 6u) << 4u);
    let mn = (weight_byte(s + j + 4u) >> 4u) | ((weight_byte(s + j) >> 6u) << 4u);
    return vec2<u32>(sc, mn);
}

// Quarter p (0..4) of the Q4_K super-block at `off` (word aligned): elements
// col0 + 64p .. col0 + 64p + 64.
fn q4_k_unit(off: u32, p: u32, col0: u32, t0: u32, tokens: u32, acc: ptr<function, array<f32, 4>>) {
    let head = weight_word(off >> 2u);
    let d = f16_to_f32(head & 0xffffu);
    let dmin = f16_to_f32(head >> 16u);
    let sm1 = q4_k_scale_min(off, 2u * p);
    let sm2 = q4_k_scale_min(off, 2u * p + 1u);
    let d1 = d * f32(sm1.x);
    let m1 = dmin * f32(sm1.y);
    let d2 = d * f32(sm2.x);
    let m2 = dmin * f32(sm2.y);
    var s1 = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var s2 = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var x1 = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var x2 = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let qs_word = (off + 16u + 32u * p) >> 2u;
    for (var g = 0u; g < 8u; g++) {
        let packed = weight_word(qs_word + g);
        for (var k = 0u; k < 4u; k++) {
            let byte = (packed >> (8u * k)) & 0xffu;
            let lo = f32(byte & 0xfu);
            let hi = f32(byte >> 4u);
            let col = col0 + 64u * p + 4u * g + k;
            for (var t = 0u; t < tokens; t++) {
                let base = (t0 + t) * params.cols;
                let xa = load_x(base + col);
                let xb = load_x(base + col + 32u);
                s1[t] = fma(lo, xa, s1[t]);
                s2[t] = fma(hi, xb, s2[t]);
                x1[t] += xa;
                x2[t] += xb;
            }
        }
    }
    for (var t = 0u; t < tokens; t++) {
        (*acc)[t] += d1 * s1[t] - m1 * x1[t] + d2 * s2[t] - m2 * x2[t];
    }
}

// Unit u (0..8) of the Q6_K super-block at `off` (even): half h = u >> 2, quad k = u & 3,
// elements col0 + 128h + 32k .. + 32.
fn q6_k_unit(off: u32, u: u32, col0: u32, t0: u32, tokens: u32, acc: ptr<function, array<f32, 4>>) {
    let h = u >> 2u;
    let k = u & 3u;
    let d = block_scale(off + 208u);
    let sc0 = d * weight_i8(off + 192u + 8u * h + 2u * k);
    let sc1 = d * weight_i8(off + 193u + 8u * h + 2u * k);
    let ql_off = off + 64u * h + 32u * (k & 1u);
    let qh_off = off + 128u + 32u * h;
    let lo_shift = 4u * (k >> 1u);
    let hi_shift = 2u * k;
    let col_base = col0 + 128u * h + 32u * k;
    var s0 = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    var s1 = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    for (var g = 0u; g < 8u; g++) {
        let ql = bytes4(ql_off, g);
        let qh = bytes4(qh_off, g);
        for (var kk = 0u; kk < 4u; kk++) {
            let lo = (ql >> (8u * kk + lo_shift)) & 15u;
            let hi = (qh >> (8u * kk + hi_shift)) & 3u;
            let q = f32(i32(lo | (hi << 4u)) - 32);
            let col = col_base + 4u * g + kk;
            for (var t = 0u; t < tokens; t++) {
                let xv = load_x((t0 + t) * params.cols + col);
                if g < 4u {
                    s0[t] = fma(q, xv, s0[t]);
                } else {
                    s1[t] = fma(q, xv, s1[t]);
                }
            }
        }
    }
    for (var t = 0u; t < tokens; t++) {
        (*acc)[t] += sc0 * s0[t] + sc1 * s1[t];
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

@compute @workgroup_size(64)
fn ggml_matmul_q8_0(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = tile_of(workgroup_id, num_workgroups);
    if !tile.valid {
        return;
    }
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let row_off = tile.row * params.row_bytes;
    for (var b = local; b < params.blocks; b += WORKGROUP) {
        q8_0_block(row_off + b * 34u, b * BLOCK_ELEMS, tile.t0, tile.tokens, &acc);
    }
    reduce_and_store(local, tile.row, tile.t0, tile.tokens, acc);
}

@compute @workgroup_size(64)
fn ggml_matmul_q4_0(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = tile_of(workgroup_id, num_workgroups);
    if !tile.valid {
        return;
    }
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let row_off = tile.row * params.row_bytes;
    for (var b = local; b < params.blocks; b += WORKGROUP) {
        q4_0_block(row_off + b * 18u, b * BLOCK_ELEMS, tile.t0, tile.tokens, &acc);
    }
    reduce_and_store(local, tile.row, tile.t0, tile.tokens, acc);
}

@compute @workgroup_size(64)
fn ggml_matmul_q4_k(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = tile_of(workgroup_id, num_workgroups);
    if !tile.valid {
        return;
    }
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let row_off = tile.row * params.row_bytes;
    // params.blocks counts super-blocks of 256; 4 units of 64 elements each.
    for (var u = local; u < 4u * params.blocks; u += WORKGROUP) {
        let b = u >> 2u;
        q4_k_unit(row_off + b * 144u, u & 3u, b * 256u, tile.t0, tile.tokens, &acc);
    }
    reduce_and_store(local, tile.row, tile.t0, tile.tokens, acc);
}

@compute @workgroup_size(64)
fn ggml_matmul_q6_k(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = tile_of(workgroup_id, num_workgroups);
    if !tile.valid {
        return;
    }
    var acc = array<f32, 4>(0.0, 0.0, 0.0, 0.0);
    let row_off = tile.row * params.row_bytes;
    // params.blocks counts super-blocks of 256; 8 units of 32 elements each.
    for (var u = local; u < 8u * params.blocks; u += WORKGROUP) {
        let b = u >> 3u;
        q6_k_unit(row_off + b * 210u, u & 7u, b * 256u, tile.t0, tile.tokens, &acc);
    }
    reduce_and_store(local, tile.row, tile.t0, tile.tokens, acc);
}
