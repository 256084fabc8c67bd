// attn/hedgehog.wgsl: Hedgehog feature map (LoLCATs form), phi(x) = [softmax(x W_h),
// softmax(-x W_h)], two separate softmaxes over F, output 2F.
//
// Entry point: hedgehog (workgroup 128). One workgroup per (token row, head), rows * H
// workgroups split over x and y by the host (`linear_workgroup`). Invocation f < F
// computes u_f = sum_d x_d W[h, d, f] (x in workgroup memory, d in order, f32), then
// max u and min u by a shared-memory tree reduction (no subgroup operations), then
// e+ = exp(u - max u), e- = exp(min u - u) (every exponent <= 0), their sums by the
// same tree, and writes e+ / sum+ and e- / sum- . Invocations f >= F only feed neutral
// values into the reductions.
//
// Layout: x [rows, H, D] in DTYPE; w [H, D, F] f32 (validated and converted on the
// host); o [rows, H, 2F] in DTYPE, or f32 when OUT_F32 = 1 (the fused path of the linear
// ops maps q and k into f32 temporaries). Bindings: 0 x (read u32 words), 1 w (read
// f32), 2 o (atomic u32 words over a zero-filled buffer: 16-bit outputs of neighbouring
// invocations share words), 3 params (uniform). Limits: D <= 256, F <= 128 (checked by
// the host; the kernel returns early otherwise). Every global access is bounds-checked.
//
// Versions: v1 (this) one workgroup per row and head.

//#import common/elements.wgsl

// 1: the output is f32 (one word per element) instead of DTYPE.
override OUT_F32: u32 = 0u;

const WG: u32 = 128u;
const DMAX: u32 = 256u;

struct Params {
    rows: u32,
    heads: u32,
    in_dim: u32,
    features: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> o: array<atomic<u32>>;
@group(0) @binding(3) var<uniform> params: Params;

var<workgroup> x_row: array<f32, 256>;
var<workgroup> red_a: array<f32, 128>;
var<workgroup> red_b: array<f32, 128>;

fn store_out(i: u32, value: f32) {
    if OUT_F32 == 1u {
        if i < arrayLength(&o) { atomicStore(&o[i], bitcast<u32>(value)); }
        return;
    }
    let word = word_of(i);
    if word >= arrayLength(&o) { return; }
    if DTYPE == DTYPE_F32 {
        atomicStore(&o[word], bitcast<u32>(value));
    } else {
        atomicOr(&o[word], encode_bits(value) << lane_shift(i));
    }
}

// Tree reduction of red_a (max when `is_max`, else sum) and red_b (min when `is_max`,
// else sum) over the workgroup; results in red_a[0], red_b[0].
fn reduce(t: u32, is_max: bool) {
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if t < stride {
            if is_max {
                red_a[t] = max(red_a[t], red_a[t + stride]);
                red_b[t] = min(red_b[t], red_b[t + stride]);
            } else {
                red_a[t] += red_a[t + stride];
                red_b[t] += red_b[t + stride];
            }
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(128)
fn hedgehog(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let wg = linear_workgroup(workgroup_id, num_workgroups);
    let d = params.in_dim;
    let f = params.features;
    if wg >= params.rows * params.heads || d == 0u || d > DMAX || f == 0u || f > WG {
        return;
    }
    let h = wg % params.heads;
    for (var e = t; e < d; e += WG) {
        let i = wg * d + e;
        var value = 0.0;
        if word_of(i) < arrayLength(&x) { value = decode(x[word_of(i)], i); }
        x_row[e] = value;
    }
    workgroupBarrier();
    var u = 0.0;
    if t < f {
        for (var e = 0u; e < d; e++) {
            let wi = (h * d + e) * f + t;
            if wi < arrayLength(&w) { u += x_row[e] * w[wi]; }
        }
    }
    // -3.4e38 / 3.4e38 are neutral for max / min and never reach exp.
    red_a[t] = select(-3.4e38, u, t < f);
    red_b[t] = select(3.4e38, u, t < f);
    reduce(t, true);
    let hi = red_a[0];
    let lo = red_b[0];
    workgroupBarrier();
    var e_pos = 0.0;
    var e_neg = 0.0;
    if t < f {
        e_pos = exp(u - hi);
        e_neg = exp(lo - u);
    }
    red_a[t] = e_pos;
    red_b[t] = e_neg;
    reduce(t, false);
    let sum_pos = red_a[0];
    let sum_neg = red_b[0];
    if t < f {
        let base = wg * 2u * f;
        store_out(base + t, e_pos * (1.0 / sum_pos));
        store_out(base + f + t, e_neg * (1.0 / sum_neg));
    }
}
