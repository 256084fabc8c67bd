"""Prints a safetensors file as Python's `safetensors` reads it, as JSON on stdout.

    python read_safetensors.py FILE

Output: {"metadata": {...} or null, "tensors": {name: {"dtype", "shape", "hex"}}}, where
dtype is the torch dtype name and hex the raw little-endian bytes. Used by
crates/tensor/tests/io_python.rs to check that files written by linattn load in Python.
"""

import json
import sys

import safetensors
import torch


def main():
    path = sys.argv[1]
    out = {"tensors": {}}
    with safetensors.safe_open(path, framework="pt") as f:
        out["metadata"] = f.metadata()
        for name in f.keys():
            t = f.get_tensor(name)
            raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            out["tensors"][name] = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "hex": raw.hex()}
    json.dump(out, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
