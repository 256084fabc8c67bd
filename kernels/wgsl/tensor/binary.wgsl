// tensor/binary.wgsl: elementwise add and mul of two equal-shape tensors.
//
// Entry points: add, mul (workgroup 256, one invocation per output u32 word).
// Bindings: 0 lhs (read), 1 rhs (read), 2 dst (read_write), 3 params (uniform).
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16. Math in f32; each
// invocation writes one whole word (two elements for 16-bit types, the element past
// the end of an odd-length tensor written as zero).
// Grid: ceil(words / 256) workgroups, split over x and y by the host.

//#import common/elements.wgsl

struct Params {
    numel: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<storage, read> lhs: array<u32>;
@group(0) @binding(1) var<storage, read> rhs: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;
const OP_ADD: u32 = 0u;
const OP_MUL: u32 = 1u;

fn apply(op: u32, a: f32, b: f32) -> f32 {
    if op == OP_MUL {
        return a * b;
    }
    return a + b;
}

fn binary_word(op: u32, w: u32) {
    if DTYPE == DTYPE_F32 {
        if w < params.numel {
            dst[w] = bitcast<u32>(apply(op, bitcast<f32>(lhs[w]), bitcast<f32>(rhs[w])));
        }
        return;
    }
    let first = 2u * w;
    if first >= params.numel {
        return;
    }
    let a = lhs[w];
    let b = rhs[w];
    let lo = apply(op, decode(a, first), decode(b, first));
    var hi = 0.0;
    if first + 1u < params.numel {
        hi = apply(op, decode(a, first + 1u), decode(b, first + 1u));
    }
    dst[w] = encode_pair(lo, hi);
}

@compute @workgroup_size(256)
fn add(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    binary_word(OP_ADD, linear_workgroup(workgroup_id, num_workgroups) * WORKGROUP + local);
}

@compute @workgroup_size(256)
fn mul(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    binary_word(OP_MUL, linear_workgroup(workgroup_id, num_workgroups) * WORKGROUP + local);
}
