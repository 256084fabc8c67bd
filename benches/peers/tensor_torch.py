"""Peer for `linattn bench tensor`: times torch.matmul on the CPU for an n x n x n product
and prints one JSON line {"name", "ms"} (median of repeated runs).

Needs: torch (any recent version).
"""
import argparse
import json
import time

import torch


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--dtype", default="f32")
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    a = torch.full((args.n, args.n), 0.5, dtype=dtype, device=args.device)
    b = torch.full((args.n, args.n), 0.25, dtype=dtype, device=args.device)
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    for _ in range(2):
        torch.matmul(a, b)
    sync()
    samples = []
    start_all = time.perf_counter()
    while len(samples) < 5 or (time.perf_counter() - start_all < 0.5 and len(samples) < 200):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        sync()
        samples.append((time.perf_counter() - t0) * 1e3)
    samples.sort()
    print(json.dumps({"name": "torch.matmul", "ms": samples[len(samples) // 2], "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
