#!/usr/bin/python3
"""An independent safetensors reader for tests: only json, numpy, hashlib and struct.

Parses the file named on the command line the way the format's documentation describes it
(8-byte little-endian header length, JSON header, raw little-endian data) without any code
from solver, and prints one JSON object: metadata, and per tensor its dtype, shape, the
sha256 of its raw bytes and the float64 sum of its elements. A C++ test compares the output
with what it wrote, so a bug shared by our encoder and decoder cannot hide.
"""
import hashlib
import json
import struct
import sys

import numpy as np

NUMPY_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4",
    "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?",
}


def values(dtype, raw):
    if dtype == "BF16":  # numpy has no bfloat16: it is the top half of a float32
        halves = np.frombuffer(raw, dtype="<u2").astype(np.uint32)
        return (halves << 16).view(np.float32)
    return np.frombuffer(raw, dtype=NUMPY_DTYPES[dtype])


def main(path):
    with open(path, "rb") as f:
        content = f.read()
    (header_length,) = struct.unpack("<Q", content[:8])
    header = json.loads(content[8:8 + header_length].decode("utf-8"))
    data = content[8 + header_length:]
    result = {"header_length": header_length, "metadata": header.pop("__metadata__", {}), "tensors": {}}
    for name, entry in header.items():
        begin, end = entry["data_offsets"]
        raw = data[begin:end]
        result["tensors"][name] = {
            "dtype": entry["dtype"],
            "shape": entry["shape"],
            "sha256": hashlib.sha256(raw).hexdigest(),
            "sum": float(values(entry["dtype"], raw).astype(np.float64).sum()),
        }
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1])
