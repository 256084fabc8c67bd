// adapters/lora_mixed_xa.wgsl: stage 1 of the per-row ("mixed") LoRA / DoRA update,
//   xa[row, j] = s_k * x[row] . A_k[j]   with k = row_adapter[row], j < r_k.
// Used for batches where every row picks its adapter (AdapterSet::forward_mixed), for
// DoRA, and for bases without a dense weight (QLoRA); stage 2 is lora_apply.wgsl.
//
// Entry point: lora_mixed_xa. A workgroup of 128 invocations computes one row x 4 ranks
//   (j0 .. j0 + 3): invocations stride over n_in (coalesced reads of x and A_k), keep 4
//   partial sums, reduce them in shared memory (4 x 128 floats); invocations 0..3 scale
//   by s_k and store. Grid: rows * ceil(max_rank / 4) workgroups, linear (row =
//   g / rank_blocks); workgroups past params.total exit.
// Layout: x [rows, n_in] in DTYPE (packed words, common/elements.wgsl). a: the A_k
//   [r_k, n_in] of every slot concatenated, f32. slots: 8 u32 per slot k: a_off (element
//   offset of A_k in a), bt_off, rank r_k, scaling bits, c_off, has_c, 0, 0 (stage 2 reads
//   the rest). row_adapter: i32 per row, -1 (or a slot with rank 0) = base only.
//   xa [rows, max_rank] f32, zero-filled by the host; entries j >= r_k stay 0.
// Bindings: 0 x, 1 a, 2 slots, 3 row_adapter (read), 4 xa (read_write, f32 bits),
//   5 params (uniform).
// Override DTYPE: 0 f32, 1 f16, 2 bf16 (x only). Accumulation in f32. Every load is
//   bounds-checked (slot < n_slots, j < min(r_k, max_rank), A index < arrayLength(a)).

//#import common/elements.wgsl

struct Params {
    rows: u32,
    n_in: u32,
    max_rank: u32,
    rank_blocks: u32,
    total: u32,
    n_slots: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read> slots: array<u32>;
@group(0) @binding(3) var<storage, read> row_adapter: array<u32>;
@group(0) @binding(4) var<storage, read_write> xa: array<u32>;
@group(0) @binding(5) var<uniform> params: Params;

const THREADS: u32 = 128u;
const BLOCK_RANKS: u32 = 4u;

var<workgroup> partial: array<f32, 512>; // [BLOCK_RANKS][THREADS]

@compute @workgroup_size(128)
fn lora_mixed_xa(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let block = linear_workgroup(workgroup_id, num_workgroups);
    if block >= params.total {
        return;
    }
    let row = block / params.rank_blocks;
    let j0 = (block % params.rank_blocks) * BLOCK_RANKS;
    let n_in = params.n_in;

    // Resolve the row's slot; an invalid one contributes nothing (rank 0). No early
    // return: every invocation must reach the barriers below.
    var rank = 0u;
    var a_off = 0u;
    var scaling = 0.0;
    if row < params.rows {
        let k = bitcast<i32>(row_adapter[row]);
        if k >= 0 && u32(k) < params.n_slots {
            let m = u32(k) * 8u;
            a_off = slots[m];
            rank = min(slots[m + 2u], params.max_rank);
            scaling = bitcast<f32>(slots[m + 3u]);
        }
    }
    let a_len = arrayLength(&a);

    var acc: array<f32, 4>;
    for (var jj = 0u; jj < BLOCK_RANKS; jj++) {
        acc[jj] = 0.0;
    }
    if j0 < rank {
        for (var i = local; i < n_in; i += THREADS) {
            let idx = row * n_in + i;
            let xv = decode(x[word_of(idx)], idx);
            for (var jj = 0u; jj < BLOCK_RANKS; jj++) {
                let j = j0 + jj;
                let ai = a_off + j * n_in + i;
                if j < rank && ai < a_len {
                    acc[jj] = fma(xv, bitcast<f32>(a[ai]), acc[jj]);
                }
            }
        }
    }
    for (var jj = 0u; jj < BLOCK_RANKS; jj++) {
        partial[jj * THREADS + local] = acc[jj];
    }
    for (var stride = THREADS / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if local < stride {
            for (var jj = 0u; jj < BLOCK_RANKS; jj++) {
                partial[jj * THREADS + local] += partial[jj * THREADS + local + stride];
            }
        }
    }
    workgroupBarrier();
    if local < BLOCK_RANKS {
        let j = j0 + local;
        if j < rank && row < params.rows {
            xa[row * params.max_rank + j] = bitcast<u32>(scaling * partial[local * THREADS]);
        }
    }
}
