// tensor/softmax.wgsl: softmax over the last dimension of a [rows, cols] tensor.
//
// Entry point: softmax_rows. One workgroup of 256 invocations per row: a strided pass
// for the row max, a shared-memory tree reduction (no subgroup size assumed), a strided
// pass for sum(exp(x - max)), another reduction, then exp(x - max) / sum is written.
// Bindings: 0 src (read), 1 dst (read_write, atomic words, must be zero-filled: 16-bit
//   results are OR-ed into their half word since rows may share a word), 2 params.
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16. Math in f32.
// Grid: `rows` workgroups, split over x and y by the host; extra workgroups exit.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

fn load_src(i: u32) -> f32 {
    return decode(src[word_of(i)], i);
}

fn store_dst(i: u32, v: f32) {
    if DTYPE == DTYPE_F32 {
        atomicStore(&dst[i], bitcast<u32>(v));
    } else {
        atomicOr(&dst[word_of(i)], encode_bits(v) << lane_shift(i));
    }
}

// Tree reduction of `partial` (max when `take_max`, else sum); every invocation
// returns the result.
fn reduce_partial(local: u32, take_max: bool) -> f32 {
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            let other = partial[local + stride];
            if take_max {
                partial[local] = max(partial[local], other);
            } else {
                partial[local] = partial[local] + other;
            }
        }
        workgroupBarrier();
    }
    let result = partial[0];
    workgroupBarrier();
    return result;
}

@compute @workgroup_size(256)
fn softmax_rows(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let row = linear_workgroup(workgroup_id, num_workgroups);
    if row >= params.rows {
        return;
    }
    let cols = params.cols;
    let base = row * cols;

    var row_max = bitcast<f32>(0xff800000u); // -inf
    for (var c = local; c < cols; c += WORKGROUP) {
        row_max = max(row_max, load_src(base + c));
    }
    partial[local] = row_max;
    workgroupBarrier();
    row_max = reduce_partial(local, true);

    var sum = 0.0;
    for (var c = local; c < cols; c += WORKGROUP) {
        sum += exp(load_src(base + c) - row_max);
    }
    partial[local] = sum;
    workgroupBarrier();
    sum = reduce_partial(local, false);

    let inv_sum = 1.0 / sum;
    for (var c = local; c < cols; c += WORKGROUP) {
        store_dst(base + c, exp(load_src(base + c) - row_max) * inv_sum);
    }
}
