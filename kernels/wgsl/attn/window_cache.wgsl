// attn/window_cache.wgsl: the window KV cache after a prefill of the window hybrid.
//
// Entry point: window_cache (workgroup 64), one invocation per cache element. The cache
// is a ring buffer [N, H, W, X] f32 (X = D for keys, V for values): token m of
// sequence n lives in slot m % W; after a prefill of len tokens it holds positions
// max(0, len - W) .. len - 1, and zeros in slots no token reached. Called once for the
// keys and once for the values.
//
// Layout: src [rows, H, X] in DTYPE; bounds u32 [N + 1] (flat token rows); dst
// [N, H, W, X] f32 (every element written). Bindings: 0 src (read u32 words), 1 bounds
// (read), 2 dst (read_write f32), 3 params (uniform). Grid: ceil(N H W X / 64)
// workgroups split over x and y. Every global access is bounds-checked.
//
// Versions: v1 (this).

//#import common/elements.wgsl

const WG: u32 = 64u;

struct Params {
    num_seqs: u32,
    heads: u32,
    window: u32,
    width: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> bounds: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn window_cache(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let x_dim = params.width;
    let w = params.window;
    if x_dim == 0u || w == 0u || e >= params.num_seqs * params.heads * w * x_dim || e >= arrayLength(&dst)
        || params.num_seqs + 1u > arrayLength(&bounds) {
        return;
    }
    let x = e % x_dim;
    let slot = (e / x_dim) % w;
    let h = (e / (x_dim * w)) % params.heads;
    let n = e / (x_dim * w * params.heads);
    let start = bounds[n];
    let len = max(bounds[n + 1u], start) - start;
    var first = 0u;
    if len > w { first = len - w; }
    let m = first + (slot + w - first % w) % w;
    var value = 0.0;
    if m < len {
        let i = ((start + m) * params.heads + h) * x_dim + x;
        if word_of(i) < arrayLength(&src) { value = decode(src[word_of(i)], i); }
    }
    dst[e] = value;
}
