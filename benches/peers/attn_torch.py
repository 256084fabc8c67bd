"""Peer for `linattn bench attn`: times PyTorch on the CPU (or CUDA) for one attention op
and shape, and prints one JSON line per measurement:
{"name", "kind", "ms", "threads", "runs"} (median of repeated runs after a warm-up),
or {"name", "kind", "error"} when a peer cannot run that shape.

Kinds:
- fla_naive: flash-linear-attention's naive *chunk* implementation of the op
  (`naive_chunk_simple_gla`, `naive_chunk_linear_attn`; the Hedgehog op is
  `naive_chunk_linear_attn(normalize=True)` on Hedgehog features mapped in PyTorch).
- fla_naive_recurrent: fla's token-by-token naive version, used where fla has no chunk
  form (`naive_recurrent_gla`).
- sdpa: `torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)` at the
  same B, T, H and head dim (head-first layout built before timing).

Inputs use the benchmark's layout `[B, T, H, K]`, which is what fla's naive functions take;
any head-first copy is made before the clock starts. Everything runs under
`torch.no_grad()`.

Needs: torch; fla-core (flash-linear-attention) and einops for the fla kinds.
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}


def median_ms(fn, sync, warmup, min_runs, min_total_s, max_runs=200):
    """Median wall time of `fn` in ms: `warmup` untimed runs, then at least `min_runs`
    runs and `min_total_s` seconds (at most `max_runs`)."""
    for _ in range(warmup):
        fn()
    sync()
    samples = []
    start_all = time.perf_counter()
    while len(samples) < min_runs or (time.perf_counter() - start_all < min_total_s and len(samples) < max_runs):
        t0 = time.perf_counter()
        fn()
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    n = len(samples)
    mid = samples[n // 2] if n % 2 else 0.5 * (samples[n // 2 - 1] + samples[n // 2])
    return mid, n


def hedgehog_features(x, weight):
    """LoLCATs Hedgehog map: x [B,T,H,D], weight [H,D,F] -> [softmax(xW), softmax(-xW)] [B,T,H,2F]."""
    u = torch.einsum("bthd,hdf->bthf", x.float(), weight)
    return torch.cat([torch.softmax(u, dim=-1), torch.softmax(-u, dim=-1)], dim=-1)


def fla_naive(op, q, k, v, g_scalar, g_key, hedgehog_q, hedgehog_k, chunk):
    """(name, kind, callable) of fla's naive implementation of `op`."""
    if op == "simple_gla":
        from fla.ops.simple_gla.naive import naive_chunk_simple_gla

        return "fla.naive_chunk_simple_gla", "fla_naive", lambda: naive_chunk_simple_gla(q, k, v, g_scalar, chunk_size=chunk)
    if op == "linear_attn":
        from fla.ops.linear_attn.naive import naive_chunk_linear_attn

        return "fla.naive_chunk_linear_attn", "fla_naive", lambda: naive_chunk_linear_attn(q, k, v)
    if op == "gla":
        from fla.ops.gla.naive import naive_recurrent_gla

        return "fla.naive_recurrent_gla", "fla_naive_recurrent", lambda: naive_recurrent_gla(q, k, v, g_key)
    if op == "hedgehog":
        from fla.ops.linear_attn.naive import naive_chunk_linear_attn

        def run():
            return naive_chunk_linear_attn(hedgehog_features(q, hedgehog_q), hedgehog_features(k, hedgehog_k), v, normalize=True)

        return "torch.hedgehog_map+fla.naive_chunk_linear_attn(normalize)", "fla_naive", run
    raise ValueError(f"flash-linear-attention has no naive implementation of {op}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--op", required=True, choices=["simple_gla", "gla", "linear_attn", "window_linear", "hedgehog"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--key-dim", type=int, default=64)
    p.add_argument("--value-dim", type=int, default=64)
    p.add_argument("--chunk", type=int, default=64)
    p.add_argument("--dtype", default="f32", choices=list(DTYPES))
    p.add_argument("--device", default="cpu")
    p.add_argument("--peers", default="fla,sdpa", help="comma-separated: fla, sdpa")
    p.add_argument("--slow-runs", type=int, default=3, help="timed runs of a token-by-token (recurrent) peer")
    args = p.parse_args()

    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    dev = args.device
    B, T, H, K, V = args.batch, args.seq_len, args.heads, args.key_dim, args.value_dim
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    q = (torch.randn(B, T, H, K, device=dev) * 0.5).to(dtype)
    k = (torch.randn(B, T, H, K, device=dev) * 0.5).to(dtype)
    v = torch.randn(B, T, H, V, device=dev).to(dtype)
    g_scalar = F.logsigmoid(torch.randn(B, T, H, device=dev)) / 16
    g_key = F.logsigmoid(torch.randn(B, T, H, K, device=dev)) / 16
    features = max(1, K // 2)
    eye = torch.eye(K, features, device=dev).expand(H, K, features).contiguous()
    hedgehog_q, hedgehog_k = eye.clone(), eye.clone()
    wanted = [s.strip() for s in args.peers.split(",") if s.strip()]
    threads = torch.get_num_threads()

    with torch.no_grad():
        if "fla" in wanted:
            name, kind = f"fla.naive({args.op})", "fla_naive"
            try:
                name, kind, fn = fla_naive(args.op, q, k, v, g_scalar, g_key, hedgehog_q, hedgehog_k, args.chunk)
                slow = kind == "fla_naive_recurrent"
                if slow:  # seconds per run at T = 4096: no warm-up, a fixed small number of runs
                    ms, runs = median_ms(fn, sync, warmup=0, min_runs=args.slow_runs, min_total_s=0.0)
                else:
                    ms, runs = median_ms(fn, sync, warmup=1, min_runs=5, min_total_s=1.0)
                print(json.dumps({"name": name, "kind": kind, "ms": ms, "threads": threads, "runs": runs}), flush=True)
            except Exception as e:  # a missing package or an unsupported shape is reported, never timed
                print(json.dumps({"name": name, "kind": kind, "error": f"{type(e).__name__}: {e}"}), flush=True)
        if "sdpa" in wanted:
            name = "torch.scaled_dot_product_attention(is_causal)"
            try:
                qh, kh, vh = (x.transpose(1, 2).contiguous() for x in (q, k, v))
                ms, runs = median_ms(
                    lambda: F.scaled_dot_product_attention(qh, kh, vh, is_causal=True), sync, warmup=1, min_runs=5, min_total_s=1.0
                )
                print(json.dumps({"name": name, "kind": "sdpa", "ms": ms, "threads": threads, "runs": runs}), flush=True)
            except Exception as e:
                print(json.dumps({"name": name, "kind": "sdpa", "error": f"{type(e).__name__}: {e}"}), flush=True)


if __name__ == "__main__":
    main()
