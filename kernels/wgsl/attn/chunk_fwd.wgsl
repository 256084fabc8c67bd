// attn/chunk_fwd.wgsl: chunked forward of gated linear attention (linear attention,
// simple GLA / RetNet with a scalar log-decay, GLA with a per-key-dim log-decay).
//
// Entry point: chunk_fwd (workgroup 256). One workgroup per (sequence n, head h, value
// tile of BV = 16 columns); it walks the chunks of its sequence in order and carries
// its [K, BV] slice of the f32 state in the `state` output buffer (which it owns
// exclusively), so the state survives between chunks without workgroup memory.
//
// Layout: q, k [B, T, H, K] (Q_DTYPE, K_DTYPE: the input dtype, or f32 when they are the
// outputs of the Hedgehog kernel); v [B, T, H, V] (DTYPE); o [B, T, H, VX] in DTYPE, or
// f32 when OUT_F32 = 1; gates [H] (per head), [B, T, H] (per token) or [B, T, H, K]
// (per key), in GATE_DTYPE; init and state [N, H, K, VX] f32; bounds u32 [N + 1]:
// sequence n spans the flat token rows bounds[n] .. bounds[n + 1] (B * T rows; `n * T`
// for a plain batch, cu_seqlens for varlen). Bindings: 0 q, 1 k, 2 v, 3 gates, 4 init,
// 5 bounds (read), 6 o (atomic u32 words over a zero-filled buffer), 7 state
// (read_write f32), 8 params (uniform).
//
// Normalizer and window shift: VX = value_width is V, or V + 1 with a virtual column of
// ones at index V (normalize): that column of the state accumulates z with the same
// decays and the output's column V is q . z (the host divides afterwards, from the raw
// f32 output). With key_shift = W > 0 (window hybrid) row m of a sequence reads the key,
// value (and ones) of row m - W, and zeros for m < W; q and the gates are not shifted.
//
// Math per chunk of L <= C rows (b = chunk-local inclusive cumsum of g, f32):
//   A_ij = s * sum_r q_ir k_jr exp(b_ir - b_jr)   for j <= i (masked before exp)
//   o_i  = s * sum_r q_ir exp(b_ir) S_r + sum_{j<=i} A_ij v_j
//   S_r <- exp(b_Lr) S_r + sum_j k_jr exp(b_Lr - b_jr) v_j
// Every exponent is <= 0 for log-decays <= 0 (b non-increasing): no overflow, and the
// upper triangle is never exponentiated. For per-key gates the intra-chunk matrix is
// evaluated element-wise in f32 (v1; exact, no factoring of exp(b_i)/exp(b_j)).
// Scalar gates use the same formulas with b broadcast over r; GATE_MODE 0 skips them.
//
// Workgroup memory (f32): A [C, C] + q, k, b tiles [C, BK] + v tile [C, BV] + state
// tile [BK, BV] + b [C] = 6848 words (27.4 KiB) for C = 64, BK = 8, BV = 16; the host
// checks max_compute_workgroup_storage_size.
// Every global access is bounds-checked against arrayLength.
//
// Versions: v1 (this) scalar f32 tiles, state carried in global memory.

//#import common/elements.wgsl

// 0 none, 1 per head [H], 2 per token [B, T, H], 3 per key [B, T, H, K].
override GATE_MODE: u32 = 0u;
// Encoding of the gates: 0 f32, 1 f16, 2 bf16.
override GATE_DTYPE: u32 = 0u;
// Encodings of q and of k: 0 f32, 1 f16, 2 bf16 (DTYPE for raw inputs, 0 for mapped ones).
override Q_DTYPE: u32 = 0u;
override K_DTYPE: u32 = 0u;
// 1: the output is raw f32 (one word per element) instead of DTYPE.
override OUT_F32: u32 = 0u;

const WG: u32 = 256u;
const CMAX: u32 = 64u;
const BK: u32 = 8u;
const BV: u32 = 16u;

struct Params {
    heads: u32,
    key_dim: u32,
    value_dim: u32,
    num_seqs: u32,
    v_tiles: u32,
    chunk: u32,
    total_rows: u32,
    has_init: u32,
    scale: f32,
    // VX: value_dim, or value_dim + 1 with the ones column.
    value_width: u32,
    key_shift: u32,
    _pad0: u32,
}

@group(0) @binding(0) var<storage, read> q: array<u32>;
@group(0) @binding(1) var<storage, read> k: array<u32>;
@group(0) @binding(2) var<storage, read> v: array<u32>;
@group(0) @binding(3) var<storage, read> gates: array<u32>;
@group(0) @binding(4) var<storage, read> init: array<f32>;
@group(0) @binding(5) var<storage, read> bounds: array<u32>;
@group(0) @binding(6) var<storage, read_write> o: array<atomic<u32>>;
@group(0) @binding(7) var<storage, read_write> state: array<f32>;
@group(0) @binding(8) var<uniform> params: Params;

var<workgroup> a_tile: array<f32, 4096>;  // [CMAX, CMAX]
var<workgroup> q_tile: array<f32, 512>;   // [CMAX, BK]
var<workgroup> k_tile: array<f32, 512>;   // [CMAX, BK]
var<workgroup> g_tile: array<f32, 512>;   // [CMAX, BK] per-key cumsum
var<workgroup> v_tile: array<f32, 1024>;  // [CMAX, BV]
var<workgroup> s_tile: array<f32, 128>;   // [BK, BV]
var<workgroup> b_row: array<f32, 64>;     // [CMAX] scalar cumsum

// Element `i` of a tensor bound as words in encoding `dt`.
fn decode_as(word: u32, i: u32, dt: u32) -> f32 {
    if dt == 0u { return bitcast<f32>(word); }
    let bits = (word >> ((i & 1u) * 16u)) & 0xffffu;
    if dt == 1u { return f16_to_f32(bits); }
    return bitcast<f32>(bits << 16u);
}

fn word_as(i: u32, dt: u32) -> u32 {
    if dt == 0u { return i; }
    return i >> 1u;
}

// Element `i` of q (Q_DTYPE), k (K_DTYPE) or v (DTYPE), 0 past the end.
fn load_elem(which: u32, i: u32) -> f32 {
    if which == 0u {
        let w = word_as(i, Q_DTYPE);
        if w >= arrayLength(&q) { return 0.0; }
        return decode_as(q[w], i, Q_DTYPE);
    } else if which == 1u {
        let w = word_as(i, K_DTYPE);
        if w >= arrayLength(&k) { return 0.0; }
        return decode_as(k[w], i, K_DTYPE);
    }
    let w = word_of(i);
    if w >= arrayLength(&v) { return 0.0; }
    return decode(v[w], i);
}

// Gate element `i` in GATE_DTYPE, 0 past the end.
fn load_gate(i: u32) -> f32 {
    if GATE_DTYPE == 0u {
        if i >= arrayLength(&gates) { return 0.0; }
        return bitcast<f32>(gates[i]);
    }
    let w = i >> 1u;
    if w >= arrayLength(&gates) { return 0.0; }
    let bits = (gates[w] >> ((i & 1u) * 16u)) & 0xffffu;
    if GATE_DTYPE == 1u {
        return f16_to_f32(bits);
    }
    return bitcast<f32>(bits << 16u);
}

fn state_index(n: u32, h: u32, r: u32, col: u32) -> u32 {
    return ((n * params.heads + h) * params.key_dim + r) * params.value_width + col;
}

// Writes output element `i` (buffer zero-filled by the host).
fn store_out(i: u32, value: f32) {
    if OUT_F32 == 1u {
        if i < arrayLength(&o) { atomicStore(&o[i], bitcast<u32>(value)); }
        return;
    }
    let w = word_of(i);
    if w >= arrayLength(&o) { return; }
    if DTYPE == DTYPE_F32 {
        atomicStore(&o[w], bitcast<u32>(value));
    } else {
        atomicOr(&o[w], encode_bits(value) << lane_shift(i));
    }
}

// Flat row of the key / value that row `row` (of the sequence starting at seq_start)
// reads, or 0xffffffff before the shift (key_shift rows of zeros).
fn shifted_row(row: u32, seq_start: u32) -> u32 {
    if row < seq_start + params.key_shift { return 0xffffffffu; }
    return row - params.key_shift;
}

// Loads the q, k (and per-key cumsum gate) tiles of rows row0 .. row0 + len, key
// columns r0 .. r0 + BK. Rows >= len and columns >= K are zero.
fn load_qk_tiles(t: u32, row0: u32, len: u32, h: u32, r0: u32, with_q: bool, seq_start: u32) {
    let hk = params.heads * params.key_dim;
    for (var e = t; e < CMAX * BK; e += WG) {
        let i = e / BK;
        let r = r0 + e % BK;
        var qv = 0.0;
        var kv = 0.0;
        var gv = 0.0;
        if i < len && r < params.key_dim {
            let idx = (row0 + i) * hk + h * params.key_dim + r;
            if with_q { qv = load_elem(0u, idx); }
            let src = shifted_row(row0 + i, seq_start);
            if src != 0xffffffffu {
                kv = load_elem(1u, src * hk + h * params.key_dim + r);
            }
            if GATE_MODE == 3u { gv = load_gate(idx); }
        }
        q_tile[e] = qv;
        k_tile[e] = kv;
        g_tile[e] = gv;
    }
    workgroupBarrier();
    if GATE_MODE == 3u && t < BK {
        // Inclusive cumsum down each key column of the chunk.
        var acc = 0.0;
        for (var i = 0u; i < len; i++) {
            acc += g_tile[i * BK + t];
            g_tile[i * BK + t] = acc;
        }
    }
    workgroupBarrier();
}

@compute @workgroup_size(256)
fn chunk_fwd(
    @builtin(workgroup_id) workgroup_id: vec3<u32>,
    @builtin(num_workgroups) num_workgroups: vec3<u32>,
    @builtin(local_invocation_index) t: u32,
) {
    let wg = linear_workgroup(workgroup_id, num_workgroups);
    let per_seq = params.heads * params.v_tiles;
    let bad_width = params.value_width < params.value_dim || params.value_width > params.value_dim + 1u;
    if params.v_tiles == 0u || bad_width || wg >= params.num_seqs * per_seq || params.num_seqs + 1u > arrayLength(&bounds) {
        return;
    }
    let n = wg / per_seq;
    let h = (wg / params.v_tiles) % params.heads;
    let v0 = (wg % params.v_tiles) * BV;
    let c = clamp(params.chunk, 1u, CMAX);
    let seq_end = min(bounds[n + 1u], params.total_rows);
    let seq_start = min(bounds[n], seq_end);
    let hv = params.heads * params.value_dim;
    let hvx = params.heads * params.value_width;

    // The state slice starts as the initial state (the buffer is zero-filled).
    if params.has_init != 0u {
        for (var e = t; e < params.key_dim * BV; e += WG) {
            let r = e / BV;
            let col = v0 + e % BV;
            let si = state_index(n, h, r, col);
            if col < params.value_width && si < arrayLength(&state) && si < arrayLength(&init) {
                state[si] = init[si];
            }
        }
    }
    storageBarrier();

    for (var row0 = seq_start; row0 < seq_end; row0 += c) {
        let len = min(c, seq_end - row0);
        // Scalar log-decays: chunk-local inclusive cumsum in b_row.
        if t == 0u {
            var acc = 0.0;
            for (var i = 0u; i < CMAX; i++) {
                if i < len {
                    if GATE_MODE == 1u { acc += load_gate(h); }
                    if GATE_MODE == 2u { acc += load_gate((row0 + i) * params.heads + h); }
                }
                b_row[i] = acc;
            }
        }
        workgroupBarrier();

        // Pass 1 over key tiles: A = q k^T (decayed) and the inter-chunk q S.
        var acc_a: array<f32, 16>;
        var acc_o: array<f32, 4>;
        for (var m = 0u; m < 16u; m++) { acc_a[m] = 0.0; }
        for (var m = 0u; m < 4u; m++) { acc_o[m] = 0.0; }
        for (var r0 = 0u; r0 < params.key_dim; r0 += BK) {
            load_qk_tiles(t, row0, len, h, r0, true, seq_start);
            if t < BK * BV {
                let r = r0 + t / BV;
                let col = v0 + t % BV;
                var s = 0.0;
                let si = state_index(n, h, r, col);
                if r < params.key_dim && col < params.value_width && si < arrayLength(&state) {
                    s = state[si];
                }
                s_tile[t] = s;
            }
            workgroupBarrier();
            for (var m = 0u; m < 16u; m++) {
                let e = t + m * WG;
                let i = e / c;
                let j = e % c;
                if e < c * c && i < len && j <= i {
                    var sum = 0.0;
                    for (var rr = 0u; rr < BK; rr++) {
                        var term = q_tile[i * BK + rr] * k_tile[j * BK + rr];
                        if GATE_MODE == 3u {
                            term *= exp(g_tile[i * BK + rr] - g_tile[j * BK + rr]);
                        }
                        sum += term;
                    }
                    acc_a[m] += sum;
                }
            }
            for (var m = 0u; m < 4u; m++) {
                let e = t + m * WG;
                let i = e / BV;
                let j = e % BV;
                if i < len {
                    var sum = 0.0;
                    for (var rr = 0u; rr < BK; rr++) {
                        var qv = q_tile[i * BK + rr];
                        if GATE_MODE == 3u {
                            qv *= exp(g_tile[i * BK + rr]);
                        }
                        sum += qv * s_tile[rr * BV + j];
                    }
                    acc_o[m] += sum;
                }
            }
            workgroupBarrier();
        }

        // A into workgroup memory (masked, decayed, scaled); v tile.
        for (var m = 0u; m < 16u; m++) {
            let e = t + m * WG;
            if e < c * c {
                let i = e / c;
                let j = e % c;
                var value = 0.0;
                if i < len && j <= i {
                    value = acc_a[m] * params.scale;
                    if GATE_MODE == 1u || GATE_MODE == 2u {
                        value *= exp(b_row[i] - b_row[j]);
                    }
                }
                a_tile[i * CMAX + j] = value;
            }
        }
        for (var e = t; e < CMAX * BV; e += WG) {
            let i = e / BV;
            let col = v0 + e % BV;
            var value = 0.0;
            let src = shifted_row(row0 + i, seq_start);
            if i < len && src != 0xffffffffu {
                if col < params.value_dim {
                    value = load_elem(2u, src * hv + h * params.value_dim + col);
                } else if col < params.value_width {
                    value = 1.0;
                }
            }
            v_tile[e] = value;
        }
        workgroupBarrier();

        // Outputs.
        for (var m = 0u; m < 4u; m++) {
            let e = t + m * WG;
            let i = e / BV;
            let j = e % BV;
            let col = v0 + j;
            if i < len && col < params.value_width {
                var value = acc_o[m] * params.scale;
                if GATE_MODE == 1u || GATE_MODE == 2u {
                    value *= exp(b_row[i]);
                }
                for (var jj = 0u; jj <= i; jj++) {
                    value += a_tile[i * CMAX + jj] * v_tile[jj * BV + j];
                }
                store_out((row0 + i) * hvx + h * params.value_width + col, value);
            }
        }
        // Scalar decay: fold exp(b_L - b_j) into the value rows.
        if GATE_MODE == 1u || GATE_MODE == 2u {
            workgroupBarrier();
            for (var e = t; e < CMAX * BV; e += WG) {
                let i = e / BV;
                if i < len {
                    v_tile[e] *= exp(b_row[len - 1u] - b_row[i]);
                }
            }
        }
        storageBarrier();

        // Pass 2 over key tiles: the state update.
        for (var r0 = 0u; r0 < params.key_dim; r0 += BK) {
            load_qk_tiles(t, row0, len, h, r0, false, seq_start);
            if t < BK * BV {
                let rr = t / BV;
                let r = r0 + rr;
                let j = t % BV;
                let col = v0 + j;
                let si = state_index(n, h, r, col);
                if r < params.key_dim && col < params.value_width && si < arrayLength(&state) {
                    var s = state[si];
                    if GATE_MODE == 1u || GATE_MODE == 2u {
                        s *= exp(b_row[len - 1u]);
                    }
                    if GATE_MODE == 3u {
                        let last = g_tile[(len - 1u) * BK + rr];
                        s *= exp(last);
                        for (var i = 0u; i < len; i++) {
                            s += k_tile[i * BK + rr] * exp(last - g_tile[i * BK + rr]) * v_tile[i * BV + j];
                        }
                    } else {
                        for (var i = 0u; i < len; i++) {
                            s += k_tile[i * BK + rr] * v_tile[i * BV + j];
                        }
                    }
                    state[si] = s;
                }
            }
            workgroupBarrier();
        }
        storageBarrier();
    }
}
