// attn/window_step_cache.wgsl: the ring-buffer update of the window hybrid's decode
// step: cache_out = cache_in with slot m % W (m = tokens seen) replaced by the new
// token's row (keys or values; called once for each).
//
// Entry point: window_step_cache (workgroup 64), one invocation per cache element.
// Layout: src [N, H, X] in DTYPE; cache_in, cache_out [N, H, W, X] f32; seen u32 [N].
// Bindings: 0 src, 1 cache_in, 2 seen (read), 3 cache_out (read_write), 4 params
// (uniform). Grid: ceil(N H W X / 64) workgroups split over x and y. Every global
// access is bounds-checked.
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
@group(0) @binding(1) var<storage, read> cache_in: array<f32>;
@group(0) @binding(2) var<storage, read> seen: array<u32>;
@group(0) @binding(3) var<storage, read_write> cache_out: array<f32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(64)
fn window_step_cache(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let x_dim = params.width;
    let w = params.window;
    if x_dim == 0u || w == 0u || e >= params.num_seqs * params.heads * w * x_dim || e >= arrayLength(&cache_out)
        || e >= arrayLength(&cache_in) {
        return;
    }
    let x = e % x_dim;
    let slot = (e / x_dim) % w;
    let nh = e / (x_dim * w);
    let n = nh / params.heads;
    var value = cache_in[e];
    if n < arrayLength(&seen) && slot == seen[n] % w {
        let i = nh * x_dim + x;
        value = 0.0;
        if word_of(i) < arrayLength(&src) { value = decode(src[word_of(i)], i); }
    }
    cache_out[e] = value;
}
