// attn/state_ext.wgsl: conversion between the extended state [.., K', V + 1] of the
// chunk kernel's ones column and the public pair kv [.., K', V], z [.., K'] (all f32).
//
// Entry point: state_ext (workgroup 64), one invocation per extended element.
// direction 0 (pack): ext[r, c] = kv[r, c] for c < V, ext[r, V] = z[r] (0 when
// has_z = 0). direction 1 (split): kv[r, c] = ext[r, c], z[r] = ext[r, V].
// Layout: rows = N * H * K'. Bindings: 0 ext, 1 kv, 2 z (read_write f32; the side that
// is only read is never written), 3 params (uniform). Grid: ceil(rows * (V + 1) / 64)
// workgroups split over x and y. Every access is bounds-checked.
//
// Versions: v1 (this).

//#import common/elements.wgsl

const WG: u32 = 64u;

struct Params {
    rows: u32,
    value_dim: u32,
    direction: u32,
    has_z: u32,
}

@group(0) @binding(0) var<storage, read_write> ext: array<f32>;
@group(0) @binding(1) var<storage, read_write> kv: array<f32>;
@group(0) @binding(2) var<storage, read_write> z: array<f32>;
@group(0) @binding(3) var<uniform> params: Params;

@compute @workgroup_size(64)
fn state_ext(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * WG + local;
    let vx = params.value_dim + 1u;
    if e >= params.rows * vx || e >= arrayLength(&ext) {
        return;
    }
    let r = e / vx;
    let c = e % vx;
    let kvi = r * params.value_dim + c;
    if params.direction == 0u {
        var value = 0.0;
        if c < params.value_dim {
            if kvi < arrayLength(&kv) { value = kv[kvi]; }
        } else if params.has_z != 0u && r < arrayLength(&z) {
            value = z[r];
        }
        ext[e] = value;
    } else {
        if c < params.value_dim {
            if kvi < arrayLength(&kv) { kv[kvi] = ext[e]; }
        } else if r < arrayLength(&z) {
            z[r] = ext[e];
        }
    }
}
