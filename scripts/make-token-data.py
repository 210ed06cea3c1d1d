#!/usr/bin/python3
"""Byte-level token files for the "tokens" dataset format (docs/task-format.md).

Reads a text file, takes its bytes as tokens (vocabulary 256), splits them 90/10 into a
training and a test part, and writes each as a flat little-endian uint16 file (nanoGPT's
train.bin / val.bin convention). Prints each file's sha256 for the task file.

    scripts/make-token-data.py /usr/share/common-licenses/GPL-3 configs/data/gpl3
    -> configs/data/gpl3-train.bin, configs/data/gpl3-test.bin
"""
import argparse
import hashlib
import pathlib
import struct
import sys

TRAIN_FRACTION = 0.9


def write_tokens(path: pathlib.Path, tokens: bytes) -> None:
    path.write_bytes(struct.pack(f"<{len(tokens)}H", *tokens))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    print(f"{path}: {len(tokens)} tokens, sha256 {digest}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", type=pathlib.Path, help="the text file to tokenise")
    parser.add_argument("prefix", type=pathlib.Path, help="output prefix: writes PREFIX-train.bin and PREFIX-test.bin")
    args = parser.parse_args()

    data = args.text.read_bytes()
    if len(data) < 1000:
        print(f"{args.text}: {len(data)} bytes, expected at least 1000 to split", file=sys.stderr)
        return 2
    split = int(len(data) * TRAIN_FRACTION)
    write_tokens(args.prefix.with_name(args.prefix.name + "-train.bin"), data[:split])
    write_tokens(args.prefix.with_name(args.prefix.name + "-test.bin"), data[split:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
