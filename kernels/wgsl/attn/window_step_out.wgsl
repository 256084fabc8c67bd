// attn/window_step_out.wgsl: the output of the window hybrid's decode step, after the
// state and cache updates of this step (window_step_state, window_step_cache):
//   c   = max_j s q . k_j over the count = min(m + 1, W) cached tokens (exact, first)
//   num = phi_q^T S + sum_j a exp(s q . k_j - c) v_j
//   den = phi_q . z + sum_j a exp(s q . k_j - c)        y = num / den   (in DTYPE)
// with m = tokens seen before this step; the cached tokens are slots 0 .. count - 1
// (their order does not matter for the sums).
//
// Entry point: window_step_out (workgroup 64). One workgroup per (n, h), N * H
// workgroups split over x and y; scores recomputed in the second pass (any W works),
// value columns t, t + 64, .. per invocation (V <= 256), sums by shared-memory trees.
// Layout: q [N, H, D] in DTYPE; phi_q [N, H, K'] f32; ext [N, H, K', V + 1] f32 (S with
// z as the last column); keys [N, H, W, D], values [N, H, W, V] f32; seen u32 [N];
// factor [H] f32 (sigmoid applied); o [N, H, V] (atomic u32 words over a zero-filled
// buffer). Bindings: 0 q, 1 phi_q, 2 ext, 3 keys, 4 values, 5 seen, 6 factor, 7 o,
// 8 params (uniform). Every global access is bounds-checked.
//
// Versions: v1 (this).

//#import common/elements.wgsl

const WG: u32 = 64u;
const DMAX: u32 = 256u;

struct Params {
    num_seqs: u32,
    heads: u32,
    key_dim: u32,
    feature_dim: u32,
    value_dim: u32,
    window: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> phi_q: array<f32>;
@group(0) @binding(2) var<storage, read> ext: array<f32>;
@group(0) @binding(3) var<storage, read> keys: array<f32>;
@group(0) @binding(4) var<storage, read> values: array<f32>;
@group(0) @binding(5) var<storage, read> seen: array<u32>;
@group(0) @binding(6) var<storage, read> factor: array<f32>;
@group(0) @binding(7) var<storage, read_write> o: array<atomic<u32>>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> q_row: array<f32, 256>;
var<workgroup> weights: array<f32, 64>;
var<workgroup> red: array<f32, 64>;

fn score(nh: u32, slot: u32) -> f32 {
    let base = (nh * params.window + slot) * params.key_dim;
    var acc = 0.0;
    for (var e = 0u; e < params.key_dim; e++) {
        if base + e < arrayLength(&keys) { acc += q_row[e] * keys[base + e]; }
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

@compute @workgroup_size(64)
fn window_step_out(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let nh = linear_workgroup(workgroup_id, num_workgroups);
    let kd = params.key_dim;
    let kf = params.feature_dim;
    let vd = params.value_dim;
    let w = params.window;
    let n = nh / max(params.heads, 1u);
    if nh >= params.num_seqs * params.heads || kd == 0u || kd > DMAX || vd == 0u || vd > DMAX || w == 0u
        || n >= arrayLength(&seen) {
        return;
    }
    let h = nh % params.heads;
    var a = 0.0;
    if h < arrayLength(&factor) { a = factor[h]; }
    for (var e = t; e < kd; e += WG) {
        let i = nh * kd + e;
        var value = 0.0;
        if word_of(i) < arrayLength(&q) { value = decode(q[word_of(i)], i); }
        q_row[e] = value;
    }
    workgroupBarrier();
    let count = min(seen[n], w - 1u) + 1u;

    var local_max = -3.4e38;
    for (var j = t; j < count; j += WG) {
        local_max = max(local_max, score(nh, j));
    }
    red[t] = local_max;
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride { red[t] = max(red[t], red[t + stride]); }
    }
    workgroupBarrier();
    let c = red[0];
    workgroupBarrier();

    var acc: array<f32, 4>;
    for (var m = 0u; m < 4u; m++) { acc[m] = 0.0; }
    // Linear part phi_q^T S, and phi_q . z (counted once, by invocation 0).
    let vx = vd + 1u;
    var den = 0.0;
    for (var r = 0u; r < kf; r++) {
        var p = 0.0;
        if nh * kf + r < arrayLength(&phi_q) { p = phi_q[nh * kf + r]; }
        let row = (nh * kf + r) * vx;
        for (var m = 0u; m < 4u; m++) {
            let col = t + m * WG;
            if col < vd && row + col < arrayLength(&ext) { acc[m] += p * ext[row + col]; }
        }
        if t == 0u && row + vd < arrayLength(&ext) { den += p * ext[row + vd]; }
    }
    for (var j0 = 0u; j0 < count; j0 += WG) {
        var wj = 0.0;
        if j0 + t < count {
            wj = a * exp(score(nh, j0 + t) - c);
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
                    let vi = (nh * w + j0 + jj) * vd + col;
                    if vi < arrayLength(&values) { sum += weights[jj] * values[vi]; }
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
    let total_den = red[0];
    for (var m = 0u; m < 4u; m++) {
        let col = t + m * WG;
        if col < vd {
            store_out(nh * vd + col, acc[m] / total_den);
        }
    }
}
