#!/usr/bin/python3
"""The Python side of bench/ratios.sh: trains a task's MLP the way a PyTorch user would, with
Debian's python3-torch, so its steps/s can be set beside `solver run --no-proof`.

Usage: /usr/bin/python3 bench/train_reference.py [TASK.json] [--threads N] [--steps S]

Same model (nn.Sequential: Flatten, Linear+ReLU per hidden width, Linear), same data (the
task's IDX files, normalised per batch with the trainer's ops), same data order (the task
seed's splitmix64 Fisher-Yates, docs/bundle-format.md), same optimizer (torch.optim.AdamW or
Adam or SGD with the task's hyperparameters), learning-rate schedule, gradient clipping and
batch size, and the same process settings as the trainer (deterministic algorithms, the
initialisation and each step seeded from the task seed, N intra-op threads), so it computes
the same numbers: its final loss equals the one `solver run` prints. Like the trainer it reads
each step's loss as a Python float (the bundle records every loss). Only the training loop
is timed, as `solver run` times only Trainer::train: loading data and building the model are not.
Prints one JSON object: {"steps", "seconds", "steps_per_s", "final_loss", "threads", "torch"}.
"""
import argparse
import json
import math
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "python"))
from data_order import derive_seed, epoch_order  # noqa: E402  (the repository's independent data-order implementation)
from reference_step import build_mlp, build_optimizer, read_idx  # noqa: E402

STREAM_INIT, STREAM_STEP = 1, 3  # common/data_order.h's streams
DEFAULT_TASK = pathlib.Path(__file__).resolve().parent.parent / "configs" / "tasks" / "fashion-mnist-mlp.json"


def learning_rate_at(training: dict, step: int, total: int) -> float:
    """common/task.h's learning_rate_at: linear warm-up, then constant, cosine or step decay."""
    base = training["optimizer"]["lr"]
    schedule = training.get("schedule", {"kind": "constant"})
    warmup = schedule.get("warmup_steps", 0)
    if step <= warmup:
        return base * step / warmup
    if schedule["kind"] == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        low = schedule.get("min_lr", 0.0)
        return low + 0.5 * (base - low) * (1.0 + math.cos(math.pi * progress))
    if schedule["kind"] == "step":
        return base * schedule.get("gamma", 0.1) ** ((step - 1 - warmup) // schedule["step_size"])
    return base


def optimizer_spec(training: dict) -> dict:
    """The task's optimizer with common/task.cpp's defaults filled in."""
    spec = {"momentum": 0.0, "nesterov": False, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0}
    spec.update(training["optimizer"])
    return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", nargs="?", default=str(DEFAULT_TASK))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=0, help="train this many steps instead of the task's")
    args = parser.parse_args()

    task = json.loads(pathlib.Path(args.task).read_text())
    if task["model"]["kind"] != "mlp":
        raise SystemExit(f"train_reference.py trains mlp tasks only, got model.kind {task['model']['kind']!r}")
    training, dataset = task["training"], task["dataset"]
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    images = read_idx(dataset["train_images"]["location"])
    labels = torch.from_numpy(read_idx(dataset["train_labels"]["location"]).astype(np.int64))
    samples, height, width = images.shape
    images = torch.from_numpy(images.reshape(samples, 1, height, width).copy())
    batch_size = training["batch_size"]
    steps_per_epoch = samples // batch_size
    total = args.steps or training.get("steps") or training["epochs"] * steps_per_epoch
    mean, std = dataset["normalize"]["mean"], dataset["normalize"]["std"]

    torch.manual_seed(derive_seed(task["seed"], STREAM_INIT, 0))
    model = build_mlp(height * width, task["model"]["hidden"], int(labels.max()) + 1)
    optimizer = build_optimizer(optimizer_spec(training), model.parameters())
    clip = training.get("grad_clip_norm", 0.0)
    # The data order is a pure function of the seed; drawn up front, as a DataLoader's sampler would be.
    epochs = (total + steps_per_epoch - 1) // steps_per_epoch
    orders = [torch.tensor(epoch_order(task["seed"], epoch, samples), dtype=torch.int64) for epoch in range(epochs)]

    started = time.perf_counter()
    loss_value = float("nan")
    for step in range(1, total + 1):
        epoch, index = divmod(step - 1, steps_per_epoch)
        rows = orders[epoch][index * batch_size:(index + 1) * batch_size]
        torch.manual_seed(derive_seed(task["seed"], STREAM_STEP, step))
        batch = images.index_select(0, rows).float().div(255.0).sub(mean).div(std)
        targets = labels.index_select(0, rows)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate_at(training, step, total)
        loss = nn.functional.cross_entropy(model(batch), targets)
        loss.backward()
        if clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_value = loss.item()
    seconds = time.perf_counter() - started

    print(json.dumps({"steps": total, "seconds": round(seconds, 4), "steps_per_s": round(total / seconds, 2),
                      "final_loss": round(loss_value, 4), "threads": args.threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
