// adapters/lora_apply.wgsl: stage 2 of the per-row LoRA / DoRA update: adds a row's
// adapter to a base output computed beforehand (dense matmul or a quantized base).
//   k = row_adapter[row]; l = sum_{j < r_k} xa[row, j] B_k^T[j, o]   (xa carries s_k)
//   LoRA  (has_c = 0): y = yb + l (+ bias when the bias is not already in yb)
//   DoRA  (has_c = 1): y = c_k[o] * (yb - bias_in_yb + l) + bias,  c_k = m_k / ||W + s_k B_k A_k||
//   base only (k = -1, or an invalid / rank-0 slot): y = yb (+ bias when not in yb)
// which is the CPU path's rule: DoRA rescales x W^T and the update, never the bias.
//
// Entry point: lora_apply. One invocation per output element, 256 per workgroup; grid
//   ceil(rows * n_out / 256) workgroups, linear. Reads of B_k^T are coalesced across o.
// Layout: yb, y [rows, n_out] in DTYPE (packed words); bias [n_out] f32 (1-word dummy
//   when has_bias = 0); b_t: the B_k^T [r_k, n_out] of every slot concatenated, f32;
//   c: DoRA factors [n_out] per DoRA slot concatenated, f32 (1-word dummy if none);
//   slots: 8 u32 per slot (a_off, bt_off, rank, scaling bits, c_off, has_c, 0, 0);
//   row_adapter i32 per row; xa [rows, max_rank] f32 (stage 1, lora_mixed_xa.wgsl).
// Bindings: 0 yb, 1 bias, 2 b_t, 3 c, 4 slots, 5 row_adapter (read), 6 xa (read_write,
//   read only here: shares stage 1's usage), 7 y (read_write, atomic words, zero-filled:
//   16-bit results are OR-ed into their half word), 8 params (uniform).
// Override DTYPE: 0 f32, 1 f16, 2 bf16. f32 arithmetic; y rounded once. Every load is
//   bounds-checked against params and arrayLength.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    n_out: u32,
    max_rank: u32,
    n_slots: u32,
    has_bias: u32,
    bias_in_base: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> yb: array<u32>;
@group(0) @binding(1) var<storage, read> bias: array<u32>;
@group(0) @binding(2) var<storage, read> b_t: array<u32>;
@group(0) @binding(3) var<storage, read> c: array<u32>;
@group(0) @binding(4) var<storage, read> slots: array<u32>;
@group(0) @binding(5) var<storage, read> row_adapter: array<u32>;
@group(0) @binding(6) var<storage, read_write> xa: array<u32>;
@group(0) @binding(7) var<storage, read_write> y: array<atomic<u32>>;
@group(0) @binding(8) var<uniform> params: Params;

fn store_y(i: u32, v: f32) {
    if DTYPE == DTYPE_F32 {
        atomicStore(&y[i], bitcast<u32>(v));
    } else {
        atomicOr(&y[word_of(i)], encode_bits(v) << lane_shift(i));
    }
}

@compute @workgroup_size(256)
fn lora_apply(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let e = linear_workgroup(workgroup_id, num_workgroups) * 256u + local;
    let n_out = params.n_out;
    if params.rows == 0u || n_out == 0u || e / n_out >= params.rows {
        return;
    }
    let row = e / n_out;
    let o = e % n_out;
    var v = decode(yb[word_of(e)], e);
    var bias_v = 0.0;
    if params.has_bias != 0u && o < arrayLength(&bias) {
        bias_v = bitcast<f32>(bias[o]);
    }
    let bias_add = select(bias_v, 0.0, params.bias_in_base != 0u);
    let k = bitcast<i32>(row_adapter[row]);
    var rank = 0u;
    var m = 0u;
    if k >= 0 && u32(k) < params.n_slots {
        m = u32(k) * 8u;
        rank = min(slots[m + 2u], params.max_rank);
    }
    if rank == 0u {
        store_y(e, v + bias_add);
        return;
    }
    let bt_off = slots[m + 1u];
    let bt_len = arrayLength(&b_t);
    var l = 0.0;
    for (var j = 0u; j < rank; j++) {
        let bi = bt_off + j * n_out + o;
        if bi < bt_len {
            l = fma(bitcast<f32>(xa[row * params.max_rank + j]), bitcast<f32>(b_t[bi]), l);
        }
    }
    if slots[m + 5u] != 0u {
        let ci = slots[m + 4u] + o;
        var scale = 1.0;
        if ci < arrayLength(&c) {
            scale = bitcast<f32>(c[ci]);
        }
        let base = select(v, v - bias_v, params.bias_in_base != 0u);
        v = scale * (base + l) + bias_v;
    } else {
        v = v + l + bias_add;
    }
    store_y(e, v);
}
