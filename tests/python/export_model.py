"""Exports a small TorchScript classifier for the trainer's "torchscript" model tests.

Usage: /usr/bin/python3 export_model.py OUTPUT.pt

The module maps [B, 1, 28, 28] float images to [B, 10] logits. It has a dropout layer on
purpose: its masks come from torch's generator, which the trainer re-seeds before every step,
so a replay reproduces it only if that seeding works. Its weights (seeded here) are the
initialisation the trainer starts from.
"""
import sys

import torch
from torch import nn


class SmallClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(28 * 28, 32)
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(32, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(torch.relu(self.hidden(self.flatten(images)))))


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: export_model.py OUTPUT.pt")
    torch.manual_seed(1234)
    torch.jit.script(SmallClassifier()).save(sys.argv[1])


if __name__ == "__main__":
    main()
