// attn/normalize.wgsl: division of the raw output of normalized linear attention.
//
// Entry point: normalize_rows (workgroup 64). The chunk kernel ran with the ones column
// (value width V + 1) into a raw f32 buffer: column V of each (token, head) row holds
// q~ . z. This kernel writes o[r, c] = raw[r, c] / (raw[r, V] + eps) for c < V in DTYPE,
// one invocation per output word (both halves of a 16-bit word from one invocation, so
// no atomics are needed).
//
// Layout: raw [groups, V + 1] f32 (groups = tokens x heads); o [groups, V] in DTYPE.
// Bindings: 0 raw (read f32), 1 o (read_write u32 words), 2 params (uniform). Grid:
// ceil(words / 64) workgroups split over x and y. Every access is bounds-checked.
//
// Versions: v1 (this).

//#import common/elements.wgsl

const WG: u32 = 64u;

struct Params {
    groups: u32,
    value_dim: u32,
    eps: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> raw: array<f32>;
@group(0) @binding(1) var<storage, read_write> o: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

fn normalized(i: u32) -> f32 {
    let vd = params.value_dim;
    let g = i / vd;
    let c = i % vd;
    let at = g * (vd + 1u);
    if at + vd >= arrayLength(&raw) { return 0.0; }
    return raw[at + c] / (raw[at + vd] + params.eps);
}

@compute @workgroup_size(64)
fn normalize_rows(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let word = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let total = params.groups * params.value_dim;
    if params.value_dim == 0u || word >= arrayLength(&o) {
        return;
    }
    if DTYPE == DTYPE_F32 {
        if word < total { o[word] = bitcast<u32>(normalized(word)); }
        return;
    }
    let i = word * 2u;
    if i >= total { return; }
    var hi = 0u;
    if i + 1u < total { hi = encode_bits(normalized(i + 1u)) << 16u; }
    o[word] = encode_bits(normalized(i)) | hi;
}
