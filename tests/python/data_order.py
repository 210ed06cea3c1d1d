#!/usr/bin/python3
"""An independent data-order implementation, written only from the specification comment in
common/data_order.h (the same text as docs/bundle-format.md, "Seeds and data order"), so a
verifier in another language can be checked against the C++ generator.

Usage: data_order.py QUERY...  where each QUERY is
  perm:SEED:EPOCH:N          the permutation of [0, N) for that epoch
  batch:SEED:N:B:STEP        the sample indices of 1-based step STEP with batch size B
  derive:SEED:STREAM:COUNTER derive_seed(SEED, STREAM, COUNTER)
Prints one JSON object mapping each query to its answer.
"""
import json
import sys

MASK = (1 << 64) - 1
GAMMA = 0x9E3779B97F4A7C15
STREAM_DATA = 2


def mix(x):
    z = (x + GAMMA) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return z ^ (z >> 31)


def derive_seed(seed, stream, counter):
    return mix(mix(mix(seed) ^ stream) ^ counter)


def epoch_order(seed, epoch, n):
    a = list(range(n))
    state = derive_seed(seed, STREAM_DATA, epoch)
    for i in range(n - 1, 0, -1):
        j = mix(state) % (i + 1)
        state = (state + GAMMA) & MASK
        a[i], a[j] = a[j], a[i]
    return a


def batch(seed, n, b, step):
    per_epoch = n // b
    epoch, index = divmod(step - 1, per_epoch)
    return epoch_order(seed, epoch, n)[index * b:(index + 1) * b]


def answer(query):
    kind, *numbers = query.split(":")
    numbers = [int(x) for x in numbers]
    if kind == "perm":
        return epoch_order(*numbers)
    if kind == "batch":
        return batch(*numbers)
    if kind == "derive":
        return derive_seed(*numbers)
    raise SystemExit(f"unknown query kind {kind!r} in {query!r}")


if __name__ == "__main__":
    print(json.dumps({query: answer(query) for query in sys.argv[1:]}))
