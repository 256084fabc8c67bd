// attn/window_fwd.wgsl: window softmax terms of the LoLCATs window hybrid and the final
// combination with the linear part (prefill).
//
// Entry point: window_fwd (workgroup 64). One workgroup per (token row, head), rows * H
// workgroups split over x and y. For the query at sequence position n (keys
// lo = max(seq_start, row - W + 1) ..= row):
//   pass 1: c = max_j s q . k_j over the whole window (scores recomputed, never stored,
//           so any W works); the exact maximum, never a running one (docs/kernels.md);
//   pass 2: tiles of 64 keys: w_j = a exp(s q . k_j - c) (exponent <= 0) in workgroup
//           memory, then num_col += sum_j w_j v_j,col per value column, den += sum_j w_j;
//   y = (num + lin[.., :V]) / (den + lin[.., V]), written in DTYPE.
// lin is the raw f32 output of the chunk kernel run with key_shift = W, scale 1, the
// ones column and the feature maps: phi_q(q)^T S and phi_q(q) . z over keys older than
// the window. a = sigmoid(window factor) per head (computed on the host).
//
// Layout: q, k [rows, H, D], v [rows, H, V] (DTYPE); lin [rows, H, V + 1] f32; factor
// [H] f32; bounds u32 [N + 1] (flat token rows of the sequences); o [rows, H, V]
// (atomic u32 words over a zero-filled buffer). Bindings: 0 q, 1 k, 2 v, 3 lin, 4 factor,
// 5 bounds, 6 o, 7 params (uniform). Limits: D, V <= 256 (the kernel returns early
// otherwise). Every global access is bounds-checked.
//
// Versions: v1 (this) one workgroup per query and head, scores computed twice.

//#import common/elements.wgsl

const WG: u32 = 64u;
const DMAX: u32 = 256u;

struct Params {
    rows: u32,
    heads: u32,
    key_dim: u32,
    value_dim: u32,
    num_seqs: u32,
    window: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> k: array<u32>;
@group(0) @binding(2) var<storage, read> v: array<u32>;
@group(0) @binding(3) var<storage, read> lin: array<f32>;
@group(0) @binding(4) var<storage, read> factor: array<f32>;
@group(0) @binding(5) var<storage, read> bounds: array<u32>;
@group(0) @binding(6) var<storage, read_write> o: array<atomic<u32>>;
@group(0) @binding(7) var<uniform> params: Params;

var<workgroup> q_row: array<f32, 256>;
var<workgroup> weights: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

fn load(which: u32, i: u32) -> f32 {
    let w = word_of(i);
    if which == 0u {
        if w >= arrayLength(&q) { return 0.0; }
        return decode(q[w], i);
    } else if which == 1u {
        if w >= arrayLength(&k) { return 0.0; }
        return decode(k[w], i);
    }
    if w >= arrayLength(&v) { return 0.0; }
    return decode(v[w], i);
}

// s * q . k_row for head h.
fn score(key_row: u32, h: u32) -> f32 {
    let base = (key_row * params.heads + h) * params.key_dim;
    var acc = 0.0;
    for (var e = 0u; e < params.key_dim; e++) {
        acc += q_row[e] * load(1u, base + e);
    }
    return params.scale * acc;
}

fn store_out(i: u32, value: f32) {
    let w = word_of(i);
    if w >= arrayLength(&o) { return; }
    if DTYPE == DTYPE_F32 {
        atomicStore(&o[w], bitcast<u32>(value));
    } else {
        atomicOr(&o[w], encode_bits(value) << lane_shift(i));
    }
}

// First flat row of the sequence holding `row` (binary search over bounds).
fn sequence_start(row: u32) -> u32 {
    var lo = 0u;
    var hi = params.num_seqs;
    while lo < hi {
        let mid = (lo + hi + 1u) / 2u;
        if bounds[mid] <= row { lo = mid; } else { hi = mid - 1u; }
    }
    return bounds[lo];
}

@compute @workgroup_size(64)
fn window_fwd(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let wg = linear_workgroup(workgroup_id, num_workgroups);
    let kd = params.key_dim;
    let vd = params.value_dim;
    if wg >= params.rows * params.heads || kd == 0u || kd > DMAX || vd == 0u || vd > DMAX
        || params.window == 0u || params.num_seqs + 1u > arrayLength(&bounds) {
        return;
    }
    let row = wg / params.heads;
    let h = wg % params.heads;
    var a = 0.0;
    if h < arrayLength(&factor) { a = factor[h]; }
    for (var e = t; e < kd; e += WG) {
        q_row[e] = load(0u, wg * kd + e);
    }
    workgroupBarrier();
    let seq_start = min(sequence_start(row), row);
    var lo = seq_start;
    if row + 1u >= params.window && row + 1u - params.window > seq_start { lo = row + 1u - params.window; }
    let count = row + 1u - lo;

    // Pass 1: the exact maximum score of the window.
    var local_max = -3.4e38;
    for (var j = t; j < count; j += WG) {
        local_max = max(local_max, score(lo + j, h));
    }
    red[t] = local_max;
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride { red[t] = max(red[t], red[t + stride]); }
    }
    workgroupBarrier();
    let c = red[0];
    workgroupBarrier();

    // Pass 2: weighted sums, 64 keys at a time.
    var acc: array<f32, 4>;
    for (var m = 0u; m < 4u; m++) { acc[m] = 0.0; }
    var den = 0.0;
    for (var j0 = 0u; j0 < count; j0 += WG) {
        var wj = 0.0;
        if j0 + t < count {
            wj = a * exp(score(lo + j0 + t, h) - c);
        }
        den += wj;
        weights[t] = wj;
        workgroupBarrier();
        let tile = min(WG, count - j0);
        for (var m = 0u; m < 4u; m++) {
            let col = t + m * WG;
            if col < vd {
                var sum = 0.0;
                for (var jj = 0u; jj < tile; jj++) {
                    sum += weights[jj] * load(2u, ((lo + j0 + jj) * params.heads + h) * vd + col);
                }
                acc[m] += sum;
            }
        }
        workgroupBarrier();
    }
    red[t] = den;
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride { red[t] += red[t + stride]; }
    }
    workgroupBarrier();
    let lin_base = wg * (vd + 1u);
    var total_den = red[0];
    if lin_base + vd < arrayLength(&lin) { total_den += lin[lin_base + vd]; }
    for (var m = 0u; m < 4u; m++) {
        let col = t + m * WG;
        if col < vd {
            var num = acc[m];
            if lin_base + col < arrayLength(&lin) { num += lin[lin_base + col]; }
            store_out(wg * vd + col, num / total_den);
        }
    }
}
