// tensor/rms_norm.wgsl: RMSNorm over the last dimension of a [rows, cols] tensor,
// `dst = x / sqrt(mean(x^2) + eps) * weight`, weight [cols].
//
// Entry point: rms_norm_rows. One workgroup of 256 invocations per row: a strided pass
// for sum(x^2), a shared-memory tree reduction (no subgroup size assumed), then the
// scaled row is written.
// Bindings: 0 src (read), 1 weight (read), 2 dst (read_write, atomic words, must be
//   zero-filled: 16-bit results are OR-ed into their half word), 3 params.
// Override DTYPE (common/elements.wgsl): 0 f32, 1 f16, 2 bf16 (src, weight and dst).
// Math in f32.
// Grid: `rows` workgroups, split over x and y by the host; extra workgroups exit.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> src: array<u32>;
@group(0) @binding(1) var<storage, read> weight: array<u32>;
@group(0) @binding(2) var<storage, read_write> dst: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> params: Params;

const WORKGROUP: u32 = 256u;

var<workgroup> partial: array<f32, 256>;

fn load_src(i: u32) -> f32 {
    return decode(src[word_of(i)], i);
}

fn load_weight(i: u32) -> f32 {
    return decode(weight[word_of(i)], i);
}

fn store_dst(i: u32, v: f32) {
    if DTYPE == DTYPE_F32 {
        atomicStore(&dst[i], bitcast<u32>(v));
    } else {
        atomicOr(&dst[word_of(i)], encode_bits(v) << lane_shift(i));
    }
}

@compute @workgroup_size(256)
fn rms_norm_rows(
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

    var sum_sq = 0.0;
    for (var c = local; c < cols; c += WORKGROUP) {
        let v = load_src(base + c);
        sum_sq = fma(v, v, sum_sq);
    }
    partial[local] = sum_sq;
    workgroupBarrier();
    for (var stride = WORKGROUP / 2u; stride > 0u; stride = stride / 2u) {
        if local < stride {
            partial[local] = partial[local] + partial[local + stride];
        }
        workgroupBarrier();
    }
    let inv_rms = inverseSqrt(partial[0] / f32(cols) + params.eps);

    for (var c = local; c < cols; c += WORKGROUP) {
        store_dst(base + c, load_src(base + c) * inv_rms * load_weight(c));
    }
}
