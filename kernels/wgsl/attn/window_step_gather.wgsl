// attn/window_step_gather.wgsl: first kernel of the window hybrid's decode step.
//
// Entry point: window_step_gather (workgroup 64), one invocation per (n, h, d). Writes
// q32 = q as f32 (the input of the query feature map, or phi_q itself without a map)
// and old_k = the cached key in ring slot m % W that leaves the window this step
// (m = tokens seen of sequence n), or zeros when m < W (nothing is evicted; the state
// kernel ignores old_k then).
//
// Layout: q [N, H, D] in DTYPE; keys [N, H, W, D] f32; seen u32 [N]; q32, old_k
// [N, H, D] f32. Bindings: 0 q, 1 keys, 2 seen (read), 3 q32, 4 old_k (read_write),
// 5 params (uniform). Grid: ceil(N H D / 64) workgroups split over x and y. Every
// global access is bounds-checked.
//
// Versions: v1 (this).

//#import common/elements.wgsl

const WG: u32 = 64u;

struct Params {
    num_seqs: u32,
    heads: u32,
    dim: u32,
    window: u32,
}

@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> keys: array<f32>;
@group(0) @binding(2) var<storage, read> seen: array<u32>;
@group(0) @binding(3) var<storage, read_write> q32: array<f32>;
@group(0) @binding(4) var<storage, read_write> old_k: array<f32>;
@group(0) @binding(5) var<uniform> params: Params;

@compute @workgroup_size(64)
fn window_step_gather(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let d = params.dim;
    let w = params.window;
    if d == 0u || w == 0u || e >= params.num_seqs * params.heads * d || e >= arrayLength(&q32)
        || e >= arrayLength(&old_k) {
        return;
    }
    let nh = e / d;
    let n = nh / params.heads;
    var qv = 0.0;
    if word_of(e) < arrayLength(&q) { qv = decode(q[word_of(e)], e); }
    q32[e] = qv;
    var kv = 0.0;
    if n < arrayLength(&seen) && seen[n] >= w {
        let ki = (nh * w + seen[n] % w) * d + e % d;
        if ki < arrayLength(&keys) { kv = keys[ki]; }
    }
    old_k[e] = kv;
}
