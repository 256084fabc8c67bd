// attn/window_step_state.wgsl: the linear state update of the window hybrid's decode
// step: the token leaving the window (position m - W, ring slot m % W, m = tokens seen)
// moves into S and z when m >= W:
//   ext_out[r, c] = ext_in[r, c] + phi_k(k_old)[r] * v_old[c]   (c < V)
//   ext_out[r, V] = ext_in[r, V] + phi_k(k_old)[r]
// and ext_out = ext_in otherwise.
//
// Entry point: window_step_state (workgroup 64), one invocation per extended element.
// Layout: ext_in, ext_out [N, H, K', V + 1] f32 (kv with z as the last column);
// phi_old [N, H, K'] f32; values [N, H, W, V] f32 (the cache before this step); seen
// u32 [N]. Bindings: 0 ext_in, 1 phi_old, 2 values, 3 seen (read), 4 ext_out
// (read_write), 5 params (uniform). Grid: ceil(N H K' (V + 1) / 64) workgroups split
// over x and y. Every global access is bounds-checked.
//
// Versions: v1 (this).

//#import common/elements.wgsl

const WG: u32 = 64u;

struct Params {
    num_seqs: u32,
    heads: u32,
    feature_dim: u32,
    value_dim: u32,
    window: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> ext_in: array<f32>;
@group(0) @binding(1) var<storage, read> phi_old: array<f32>;
@group(0) @binding(2) var<storage, read> values: array<f32>;
@group(0) @binding(3) var<storage, read> seen: array<u32>;
@group(0) @binding(4) var<storage, read_write> ext_out: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn window_step_state(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let vx = params.value_dim + 1u;
    let w = params.window;
    let kf = params.feature_dim;
    if kf == 0u || w == 0u || e >= params.num_seqs * params.heads * kf * vx || e >= arrayLength(&ext_out)
        || e >= arrayLength(&ext_in) {
        return;
    }
    let c = e % vx;
    let nhr = e / vx;  // (n * H + h) * K' + r
    let nh = nhr / kf;
    let n = nh / params.heads;
    var s = ext_in[e];
    if n < arrayLength(&seen) && seen[n] >= w && nhr < arrayLength(&phi_old) {
        var old_v = 1.0;
        if c < params.value_dim {
            let vi = (nh * w + seen[n] % w) * params.value_dim + c;
            old_v = 0.0;
            if vi < arrayLength(&values) { old_v = values[vi]; }
        }
        s += phi_old[nhr] * old_v;
    }
    ext_out[e] = s;
}
