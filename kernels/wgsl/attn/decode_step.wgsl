// attn/decode_step.wgsl: one decode step of gated linear attention (linear attention,
// simple GLA / RetNet, GLA): one new token per sequence, advanced from a state.
//
// Entry point: decode_step (workgroup 64). One invocation per (sequence n, head h,
// value column j); it walks the K rows of its state column:
//   S'_rj = exp(g_r) S_rj + k_r v_j        o_j = s * sum_r q_r S'_rj
// with g_r the log-decay (0 without gates; one scalar per head or per (n, h), or one
// per key dim), f32 accumulation.
//
// Layout: q, k [N, H, K]; v, o [N, H, V] (DTYPE); gates [H] (GATE_MODE 1), [N, H]
// (2) or [N, H, K] (3) in GATE_DTYPE; state_in, state_out [N, H, K, V] f32 (may not
// alias). Bindings: 0 q, 1 k, 2 v, 3 gates, 4 state_in (read), 5 o (atomic u32 words
// over a zero-filled buffer), 6 state_out (read_write), 7 params (uniform).
// Grid: ceil(N * H * V / 64) workgroups, split over x and y by the host. Every global
// access is bounds-checked against arrayLength.
//
// Versions: v1 (this) one invocation per state column.

//#import common/elements.wgsl

override GATE_MODE: u32 = 0u;
override GATE_DTYPE: u32 = 0u;

const WG: u32 = 64u;

struct Params {
    rows: u32,
    heads: u32,
    key_dim: u32,
    value_dim: u32,
    scale: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> k: array<u32>;
@group(0) @binding(2) var<storage, read> v: array<u32>;
@group(0) @binding(3) var<storage, read> gates: array<u32>;
@group(0) @binding(4) var<storage, read> state_in: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<atomic<u32>>;
@group(0) @binding(6) var<storage, read_write> state_out: array<f32>;
@group(0) @binding(7) var<uniform> params: Params;

fn load_elem(which: u32, i: u32) -> f32 {
    let w = word_of(i);
    var word = 0u;
    if which == 0u {
        if w >= arrayLength(&q) { return 0.0; }
        word = q[w];
    } else if which == 1u {
        if w >= arrayLength(&k) { return 0.0; }
        word = k[w];
    } else {
        if w >= arrayLength(&v) { return 0.0; }
        word = v[w];
    }
    return decode(word, i);
}

fn load_gate(i: u32) -> f32 {
    if GATE_DTYPE == 0u {
        if i >= arrayLength(&gates) { return 0.0; }
        return bitcast<f32>(gates[i]);
    }
    let w = i >> 1u;
    if w >= arrayLength(&gates) { return 0.0; }
    let bits = (gates[w] >> ((i & 1u) * 16u)) & 0xffffu;
    if GATE_DTYPE == 1u {
        return f16_to_f32(bits);
    }
    return bitcast<f32>(bits << 16u);
}

@compute @workgroup_size(64)
fn decode_step(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let id = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let columns = params.rows * params.heads * params.value_dim;
    if id >= columns {
        return;
    }
    let j = id % params.value_dim;
    let nh = id / params.value_dim;  // n * H + h
    let h = nh % params.heads;
    let vj = load_elem(2u, id);
    var decay = 1.0;
    if GATE_MODE == 1u { decay = exp(load_gate(h)); }
    if GATE_MODE == 2u { decay = exp(load_gate(nh)); }
    var acc = 0.0;
    for (var r = 0u; r < params.key_dim; r++) {
        let qk = nh * params.key_dim + r;
        let si = (nh * params.key_dim + r) * params.value_dim + j;
        if si >= arrayLength(&state_in) || si >= arrayLength(&state_out) {
            break;
        }
        var d = decay;
        if GATE_MODE == 3u { d = exp(load_gate(qk)); }
        let s = d * state_in[si] + load_elem(1u, qk) * vj;
        state_out[si] = s;
        acc += load_elem(0u, qk) * s;
    }
    let value = acc * params.scale;
    let w = word_of(id);
    if w < arrayLength(&o) {
        if DTYPE == DTYPE_F32 {
            atomicStore(&o[w], bitcast<u32>(value));
        } else {
            atomicOr(&o[w], encode_bits(value) << lane_shift(id));
        }
    }
}
