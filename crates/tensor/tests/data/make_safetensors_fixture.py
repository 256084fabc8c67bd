"""Writes the safetensors fixture read by crates/tensor/tests/io_python.rs.

Run from the repository root with a Python that has torch and safetensors:

    /tmp/pyfx/bin/python crates/tensor/tests/data/make_safetensors_fixture.py

Outputs, next to this script:
- python_fixture.safetensors: one small tensor per dtype (plus a scalar, an empty
  tensor and a BOOL), written by `safetensors.torch.save_file` with metadata;
- python_fixture.expected.json: for every tensor its torch dtype, shape, raw
  little-endian bytes (hex) and values (integers; floats widened to float64, both
  readable and as exact f64 bit patterns), and the metadata, so the Rust test checks
  against numbers PyTorch produced rather than a formula of its own.

Values are deterministic (no RNG) and include negative zero, subnormals, infinities
and extremes where the dtype has them.
"""

import json
import pathlib

import safetensors
import torch
from safetensors.torch import save_file

HERE = pathlib.Path(__file__).resolve().parent

FLOAT_SPECIAL = [0.0, -0.0, 1.0, -1.5, 3.140625, 1e-3, 65504.0, float("inf"), float("-inf")]


def floats(dtype, shape):
    n = 1
    for d in shape:
        n *= d
    base = torch.tensor(FLOAT_SPECIAL + [i * 0.37 - 2.0 for i in range(max(0, n - len(FLOAT_SPECIAL)))], dtype=torch.float64)
    return base[:n].to(dtype).reshape(shape)


def ints(dtype, shape, lo, hi):
    n = 1
    for d in shape:
        n *= d
    vals = [lo, hi, 0, 1, -1 if lo < 0 else 2] + [(i * 7919) % (hi - lo + 1) + lo for i in range(n)]
    return torch.tensor(vals[:n], dtype=torch.int64).to(dtype).reshape(shape)


def main():
    tensors = {
        "f32.matrix": floats(torch.float32, (3, 4)),
        "f16.vector": floats(torch.float16, (9,)),
        "bf16.cube": torch.tensor([0.0, -0.0, 1.0, -2.5, 1e-40, 3.0e38, float("inf"), float("nan")], dtype=torch.float64).to(torch.bfloat16).reshape(2, 2, 2),
        "f64.row": torch.tensor([[0.1, -0.0, 2.0**-1074, 1.7976931348623157e308, float("-inf")]], dtype=torch.float64),
        "u8.bytes": ints(torch.uint8, (2, 3), 0, 255),
        "i8.bytes": ints(torch.int8, (5,), -128, 127),
        "u16.vals": ints(torch.uint16, (4,), 0, 65535),
        "i16.vals": ints(torch.int16, (2, 2), -32768, 32767),
        "u32.vals": ints(torch.uint32, (3,), 0, 2**32 - 1),
        "i32.vals": ints(torch.int32, (2, 3), -(2**31), 2**31 - 1),
        "i64.vals": ints(torch.int64, (4,), -(2**63), 2**63 - 1),
        "f8e4m3.vals": torch.tensor([0.0, -0.0, 1.0, -1.5, 448.0, -448.0, 0.001953125, 0.25], dtype=torch.float32).to(torch.float8_e4m3fn),
        "f8e5m2.vals": torch.tensor([0.0, 1.0, -2.0, 57344.0, float("inf"), 1.52587890625e-05], dtype=torch.float32).to(torch.float8_e5m2),
        "bool.mask": torch.tensor([[True, False, True], [False, False, True]]),
        "scalar.f32": torch.tensor(2.5, dtype=torch.float32),
        "empty.f32": torch.zeros((0, 3), dtype=torch.float32),
    }
    metadata = {"format": "pt", "producer": "make_safetensors_fixture.py", "note": "unicode \u2713 and \"quotes\""}
    out = HERE / "python_fixture.safetensors"
    save_file(tensors, str(out), metadata=metadata)

    expected = {"safetensors_version": safetensors.__version__, "torch_version": torch.__version__, "metadata": metadata, "tensors": {}}
    with safetensors.safe_open(str(out), framework="pt") as f:
        for name in f.keys():
            t = f.get_tensor(name)
            raw = t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
            entry = {"dtype": str(t.dtype).replace("torch.", ""), "shape": list(t.shape), "hex": raw.hex()}
            if t.is_floating_point():
                wide = t.to(torch.float64).reshape(-1)
                # Readable values, and the exact f64 bit patterns the test compares
                # (JSON float parsing need not round-trip the last bit).
                entry["values"] = [v if v == v and abs(v) != float("inf") else repr(v) for v in wide.tolist()]
                entry["f64_bits"] = [b & 0xFFFFFFFFFFFFFFFF for b in wide.view(torch.int64).tolist()]
            else:
                entry["values"] = [int(v) for v in t.to(torch.int64).reshape(-1).tolist()]
            expected["tensors"][name] = entry
    (HERE / "python_fixture.expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
