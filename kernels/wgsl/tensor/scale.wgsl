// tensor/scale.wgsl: `dst = factor * src`, elementwise.
//
// Entry point: scale (workgroup 256, one invocation per output u32 word).
// Bindings: 0 src (read), 1 dst (read_write), 2 params (uniform: numel, factor).
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16. Math in f32.
// Grid: ceil(words / 256) workgroups, split over x and y by the host.

//#import common/elements.wgsl

struct Params {
    numel: u32,
    factor: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

@compute @workgroup_size(256)
fn scale(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let w = linear_workgroup(workgroup_id, num_workgroups) * WORKGROUP + local;
    if DTYPE == DTYPE_F32 {
        if w < params.numel {
            dst[w] = bitcast<u32>(params.factor * bitcast<f32>(src[w]));
        }
        return;
    }
    let first = 2u * w;
    if first >= params.numel {
        return;
    }
    let word = src[w];
    let lo = params.factor * decode(word, first);
    var hi = 0.0;
    if first + 1u < params.numel {
        hi = params.factor * decode(word, first + 1u);
    }
    dst[w] = encode_pair(lo, hi);
}
