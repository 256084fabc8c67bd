// adapters/lora_fused.wgsl: stage 2 of the fused unmerged LoRA forward,
//   y = x W^T + bias + xa B^T, with xa = s * x A^T from stage 1 (lora_xa.wgsl).
// The base product, the LoRA product and the bias are added in registers and y is
// written once, rounded once to DTYPE.
//
// Entry points (same bindings and params):
//   lora_fused_matvec (v1, decode and few rows): a workgroup of 128 invocations computes
//     4 rows x 4 outputs. Invocations stride over n_in (coalesced reads of x and W), keep
//     16 partial sums, reduce them in shared memory (16 x 128 floats); invocations 0..15
//     then add sum_j xa[row, j] B[o, j] and the bias and store one element each. Grid:
//     ceil(rows / 4) * ceil(n_out / 4) workgroups (row block = g / col_blocks).
//   lora_fused_tiled (v2, prefill): the tiled matmul scheme of tensor/matmul.wgsl with a
//     LoRA tail. 16 x 16 invocations compute a 64 x 64 tile of y, 4 x 4 per invocation
//     (rows ty + 16 i, columns tx + 16 j). K steps of 16 stage x and W tiles in workgroup
//     memory (zero past the edges); then the same loop runs over the rank with xa
//     [rows, rank] as the left tile and B [n_out, rank] as the right tile, accumulating
//     into the same registers. Grid: ceil(rows / 64) * ceil(n_out / 64) workgroups.
// Layout: x [rows, n_in], W [n_out, n_in], bias [n_out], y [rows, n_out] in DTYPE
//   (packed u32 words, common/elements.wgsl); B [n_out, rank] and xa [rows, rank] f32.
// Bindings: 0 x, 1 w, 2 bias (read; a 1-word dummy when params.has_bias == 0), 3 b
//   (read, f32 bits), 4 xa (read_write, f32 bits; read only here, declared read_write to
//   share stage 1's buffer usage), 5 y (read_write, atomic words, zero-filled: 16-bit
//   results are OR-ed into their half word), 6 params (uniform).
// Override DTYPE: 0 f32, 1 f16, 2 bf16. Accumulation in f32. Workgroups past
//   params.total exit; every load and store is bounds-checked.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    n_in: u32,
    n_out: u32,
    rank: u32,
    col_blocks: u32,
    total: u32,
    has_bias: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<u32>;
@group(0) @binding(3) var<storage, read> b: array<u32>;
@group(0) @binding(4) var<storage, read_write> xa: array<u32>;
@group(0) @binding(5) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(6) var<uniform> params: Params;

fn load_x(i: u32) -> f32 {
    return decode(x[word_of(i)], i);
}

fn load_w(i: u32) -> f32 {
    return decode(w[word_of(i)], i);
}

fn bias_of(o: u32) -> f32 {
    if params.has_bias == 0u {
        return 0.0;
    }
    return decode(bias[word_of(o)], o);
}

fn store_y(i: u32, v: f32) {
    if DTYPE == DTYPE_F32 {
        atomicStore(&y[i], bitcast<u32>(v));
    } else {
        atomicOr(&y[word_of(i)], encode_bits(v) << lane_shift(i));
    }
}

// ---- v1: matvec ----

const MV_THREADS: u32 = 128u;
const MV_ROWS: u32 = 4u;
const MV_COLS: u32 = 4u;

var<workgroup> partial: array<f32, 2048>; // [16][MV_THREADS]

@compute @workgroup_size(128)
fn lora_fused_matvec(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let block = linear_workgroup(workgroup_id, num_workgroups);
    if block >= params.total {
        return;
    }
    let row0 = (block / params.col_blocks) * MV_ROWS;
    let o0 = (block % params.col_blocks) * MV_COLS;
    let n_in = params.n_in;

    var acc: array<f32, 16>;
    for (var e = 0u; e < 16u; e++) {
        acc[e] = 0.0;
    }
    for (var i = local; i < n_in; i += MV_THREADS) {
        var xv: array<f32, 4>;
        var wv: array<f32, 4>;
        for (var r = 0u; r < MV_ROWS; r++) {
            xv[r] = 0.0;
            if row0 + r < params.rows {
                xv[r] = load_x((row0 + r) * n_in + i);
            }
        }
        for (var c = 0u; c < MV_COLS; c++) {
            wv[c] = 0.0;
            if o0 + c < params.n_out {
                wv[c] = load_w((o0 + c) * n_in + i);
            }
        }
        for (var r = 0u; r < MV_ROWS; r++) {
            for (var c = 0u; c < MV_COLS; c++) {
                acc[r * MV_COLS + c] = fma(xv[r], wv[c], acc[r * MV_COLS + c]);
            }
        }
    }
    for (var e = 0u; e < 16u; e++) {
        partial[e * MV_THREADS + local] = acc[e];
    }
    for (var stride = MV_THREADS / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if local < stride {
            for (var e = 0u; e < 16u; e++) {
                partial[e * MV_THREADS + local] += partial[e * MV_THREADS + local + stride];
            }
        }
    }
    workgroupBarrier();
    if local < 16u {
        let row = row0 + local / MV_COLS;
        let o = o0 + local % MV_COLS;
        if row < params.rows && o < params.n_out {
            var v = partial[local * MV_THREADS];
            for (var j = 0u; j < params.rank; j++) {
                v = fma(bitcast<f32>(xa[row * params.rank + j]), bitcast<f32>(b[o * params.rank + j]), v);
            }
            store_y(row * params.n_out + o, v + bias_of(o));
        }
    }
}

// ---- v2: tiled ----

const TILE: u32 = 64u;
const TILE_K: u32 = 16u;
const TILE_THREADS: u32 = 256u;
const PER_THREAD: u32 = 4u;

var<workgroup> lhs_tile: array<f32, 1024>; // [TILE_K][TILE] rows of x / xa
var<workgroup> rhs_tile: array<f32, 1024>; // [TILE_K][TILE] outputs of W / B

@compute @workgroup_size(16, 16)
fn lora_fused_tiled(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_id) local_id: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let tile = linear_workgroup(workgroup_id, num_workgroups);
    if tile >= params.total {
        return;
    }
    let row0 = (tile / params.col_blocks) * TILE;
    let col0 = (tile % params.col_blocks) * TILE;
    let rows = params.rows;
    let n_in = params.n_in;
    let n_out = params.n_out;
    let rank = params.rank;
    let tx = local_id.x;
    let ty = local_id.y;

    var acc: array<f32, 16>;
    for (var e = 0u; e < 16u; e++) {
        acc[e] = 0.0;
    }
    // Steps 0 .. base_steps - 1 run over n_in (x, W); the rest over the rank (xa, B).
    let base_steps = (n_in + TILE_K - 1u) / TILE_K;
    let lora_steps = (rank + TILE_K - 1u) / TILE_K;
    for (var step = 0u; step < base_steps + lora_steps; step++) {
        let lora = step >= base_steps;
        for (var p = 0u; p < PER_THREAD; p++) {
            // Both tiles are 64 (rows or outputs) x 16 (k), read along k.
            let e = local + p * TILE_THREADS;
            let m = e / TILE_K;
            let kk = e % TILE_K;
            var lv = 0.0;
            var rv = 0.0;
            if lora {
                let k = (step - base_steps) * TILE_K + kk;
                if k < rank {
                    if row0 + m < rows {
                        lv = bitcast<f32>(xa[(row0 + m) * rank + k]);
                    }
                    if col0 + m < n_out {
                        rv = bitcast<f32>(b[(col0 + m) * rank + k]);
                    }
                }
            } else {
                let k = step * TILE_K + kk;
                if k < n_in {
                    if row0 + m < rows {
                        lv = load_x((row0 + m) * n_in + k);
                    }
                    if col0 + m < n_out {
                        rv = load_w((col0 + m) * n_in + k);
                    }
                }
            }
            lhs_tile[kk * TILE + m] = lv;
            rhs_tile[kk * TILE + m] = rv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TILE_K; kk++) {
            var a_reg: array<f32, 4>;
            var b_reg: array<f32, 4>;
            for (var i = 0u; i < PER_THREAD; i++) {
                a_reg[i] = lhs_tile[kk * TILE + ty + 16u * i];
                b_reg[i] = rhs_tile[kk * TILE + tx + 16u * i];
            }
            for (var i = 0u; i < PER_THREAD; i++) {
                for (var j = 0u; j < PER_THREAD; j++) {
                    acc[i * PER_THREAD + j] = fma(a_reg[i], b_reg[j], acc[i * PER_THREAD + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var j = 0u; j < PER_THREAD; j++) {
        let col = col0 + tx + 16u * j;
        if col < n_out {
            let bias_v = bias_of(col);
            for (var i = 0u; i < PER_THREAD; i++) {
                let row = row0 + ty + 16u * i;
                if row < rows {
                    store_y(row * n_out + col, acc[i * PER_THREAD + j] + bias_v);
                }
            }
        }
    }
}
