// adapters/lora_xa.wgsl: stage 1 of the fused unmerged LoRA forward, xa = s * x A^T.
//
// Entry point: lora_xa.
//   A workgroup of 128 invocations computes a block of 4 rows x 4 ranks of xa. Each
//   invocation strides over the input features (i = local, local + 128, ...), so
//   neighbouring invocations read neighbouring elements of x and A, and keeps 16 partial
//   sums in registers; a shared-memory tree reduction (16 x 128 floats, 8 KiB) adds them.
//   Invocations 0..15 scale by s and write one value each.
// Layout: x [rows, n_in] in DTYPE (packed u32 words, common/elements.wgsl);
//   A [rank, n_in] f32 (LoRA weights are kept in f32); xa [rows, rank] f32.
// Bindings: 0 x (read), 1 a (read), 2 xa (read_write, f32 bits), 3 params (uniform).
// Override DTYPE: 0 f32, 1 f16, 2 bf16 (the dtype of x only). Accumulation in f32.
// Grid: ceil(rows / 4) * ceil(rank / 4) workgroups, linear, split over x and y by the
//   host; workgroup g handles row block g / rank_blocks and rank block g % rank_blocks;
//   workgroups past params.total exit. Every index is bounds-checked against rows,
//   n_in and rank.

//#import common/elements.wgsl

struct Params {
    rows: u32,
    n_in: u32,
    rank: u32,
    rank_blocks: u32,
    total: u32,
    scaling: f32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> a: array<u32>;
@group(0) @binding(2) var<storage, read_write> xa: array<u32>;
@group(0) @binding(3) var<uniform> params: Params;

const THREADS: u32 = 128u;
const BLOCK_ROWS: u32 = 4u;
const BLOCK_RANKS: u32 = 4u;

var<workgroup> partial: array<f32, 2048>; // [16][THREADS]

@compute @workgroup_size(128)
fn lora_xa(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) local: u32,
) {
    let block = linear_workgroup(workgroup_id, num_workgroups);
    if block >= params.total {
        return;
    }
    let row0 = (block / params.rank_blocks) * BLOCK_ROWS;
    let j0 = (block % params.rank_blocks) * BLOCK_RANKS;
    let n_in = params.n_in;

    var acc: array<f32, 16>;
    for (var e = 0u; e < 16u; e++) {
        acc[e] = 0.0;
    }
    for (var i = local; i < n_in; i += THREADS) {
        var xv: array<f32, 4>;
        var av: array<f32, 4>;
        for (var r = 0u; r < BLOCK_ROWS; r++) {
            xv[r] = 0.0;
            if row0 + r < params.rows {
                let idx = (row0 + r) * n_in + i;
                xv[r] = decode(x[word_of(idx)], idx);
            }
        }
        for (var j = 0u; j < BLOCK_RANKS; j++) {
            av[j] = 0.0;
            if j0 + j < params.rank {
                av[j] = bitcast<f32>(a[(j0 + j) * n_in + i]);
            }
        }
        for (var r = 0u; r < BLOCK_ROWS; r++) {
            for (var j = 0u; j < BLOCK_RANKS; j++) {
                acc[r * BLOCK_RANKS + j] = fma(xv[r], av[j], acc[r * BLOCK_RANKS + j]);
            }
        }
    }
    for (var e = 0u; e < 16u; e++) {
        partial[e * THREADS + local] = acc[e];
    }
    for (var stride = THREADS / 2u; stride > 0u; stride >>= 1u) {
        workgroupBarrier();
        if local < stride {
            for (var e = 0u; e < 16u; e++) {
                partial[e * THREADS + local] += partial[e * THREADS + local + stride];
            }
        }
    }
    workgroupBarrier();
    if local < 16u {
        let row = row0 + local / BLOCK_RANKS;
        let j = j0 + local % BLOCK_RANKS;
        if row < params.rows && j < params.rank {
            xa[row * params.rank + j] = bitcast<u32>(params.scaling * partial[local * THREADS]);
        }
    }
}
