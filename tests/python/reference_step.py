"""Runs training steps with PyTorch's own nn.Sequential MLP, torch.optim and
clip_grad_norm_, as the reference the C++ trainer's optimizers are compared with.

Usage: /usr/bin/python3 reference_step.py REQUEST_DIR OUTPUT_DIR

REQUEST_DIR/request.json:
  {"train_images": path, "train_labels": path, "normalize": {"mean": m, "std": s}, "hidden": [widths], "classes": n,
   "threads": t, "grad_clip_norm": c (0 = off), "precision": "fp32"|"bf16" (optional, default fp32),
   "optimizer": {"kind": "sgd"|"adam"|"adamw", "lr", "momentum", "nesterov", "beta1", "beta2",
                 "eps", "weight_decay"},
   "steps": [{"indices": [...], "lr": x}, ...],
   "parameters": [{"name": "1.weight", "shape": [...], "file": "1.weight.f32"}, ...]}
Each parameter file holds raw little-endian float32 values (the initial weights).
Writes OUTPUT_DIR/<name>.f32 (the weights after the steps) and OUTPUT_DIR/losses.json.
The batch is normalised with the same tensor ops as the trainer (float, /255, -mean, /std).
"""
import gzip
import json
import pathlib
import struct
import sys

import numpy as np
import torch
from torch import nn


def read_idx(path: str) -> np.ndarray:
    """An IDX uint8 array: magic 0x0000080D (D = number of dims), D big-endian uint32 sizes, data."""
    with gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb") as file:
        raw = file.read()
    dims = raw[3]
    shape = struct.unpack(">" + "I" * dims, raw[4:4 + 4 * dims])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def build_mlp(features: int, hidden: list, classes: int) -> nn.Sequential:
    layers: list = [nn.Flatten()]
    for width in hidden:
        layers += [nn.Linear(features, width), nn.ReLU()]
        features = width
    layers.append(nn.Linear(features, classes))
    return nn.Sequential(*layers)


def build_optimizer(spec: dict, parameters) -> torch.optim.Optimizer:
    if spec["kind"] == "sgd":
        return torch.optim.SGD(parameters, lr=spec["lr"], momentum=spec["momentum"],
                               nesterov=spec["nesterov"], weight_decay=spec["weight_decay"])
    betas = (spec["beta1"], spec["beta2"])
    if spec["kind"] == "adam":
        return torch.optim.Adam(parameters, lr=spec["lr"], betas=betas, eps=spec["eps"],
                                weight_decay=spec["weight_decay"])
    if spec["kind"] == "adamw":
        return torch.optim.AdamW(parameters, lr=spec["lr"], betas=betas, eps=spec["eps"],
                                 weight_decay=spec["weight_decay"])
    raise SystemExit(f"unknown optimizer kind {spec['kind']!r}")


def main() -> None:
    if len(sys.argv) != 3:
        raise SystemExit("usage: reference_step.py REQUEST_DIR OUTPUT_DIR")
    request_dir, output_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    request = json.loads((request_dir / "request.json").read_text())
    torch.set_num_threads(request["threads"])
    torch.use_deterministic_algorithms(True)

    images = read_idx(request["train_images"])
    images = images.reshape(images.shape[0], 1, images.shape[1], images.shape[2])
    labels = read_idx(request["train_labels"]).astype(np.int64)
    model = build_mlp(images.shape[2] * images.shape[3], request["hidden"], request["classes"])
    state = {}
    for parameter in request["parameters"]:
        values = np.fromfile(request_dir / parameter["file"], dtype="<f4").reshape(parameter["shape"])
        state[parameter["name"]] = torch.from_numpy(values.copy())
    model.load_state_dict(state, strict=True)
    optimizer = build_optimizer(request["optimizer"], model.parameters())

    mean, std = request["normalize"]["mean"], request["normalize"]["std"]
    losses = []
    for step in request["steps"]:
        rows = np.asarray(step["indices"], dtype=np.int64)
        batch = torch.from_numpy(images[rows].copy()).float().div(255.0).sub(mean).div(std)
        targets = torch.from_numpy(labels[rows].copy())
        for group in optimizer.param_groups:
            group["lr"] = step["lr"]
        # training.precision "bf16": the forward pass and loss under CPU autocast, backward outside it.
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=request.get("precision", "fp32") == "bf16"):
            loss = nn.functional.cross_entropy(model(batch), targets)
        loss.backward()
        if request["grad_clip_norm"] > 0:
            nn.utils.clip_grad_norm_(model.parameters(), request["grad_clip_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())

    output_dir.mkdir(parents=True, exist_ok=True)
    for name, tensor in model.state_dict().items():
        tensor.numpy().astype("<f4").tofile(output_dir / f"{name}.f32")
    (output_dir / "losses.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main()
