"""Exports TorchScript models that probe the trainer's check of a submitter's model
(train/detail/script_check.h): hostile ones it must refuse before any of their code runs, and
honest ones it must accept.

Usage: /usr/bin/python3 export_checked_models.py KIND OUTPUT.pt

Every model maps [B, 1, 28, 28] float images to [B, 10] logits. KIND is one of:
  reads_file         forward reads /etc/os-release with torch.from_file, into the logits (so the
                     loss reported to the market would carry the file's bytes)
  reads_file_nested  the same read inside a function called in an `if` of a submodule's forward
  while_loop         forward runs a while loop
  foreign_op         forward calls profiler::_record_function_enter, an operator LibTorch
                     registers outside aten and prim
  unknown_op         forward calls solver_test::exfiltrate, defined here with torch.library:
                     an operator the loading process does not have
  names_device       forward moves its input to cuda:1, a GPU that may be another task's
  setstate           the module defines __setstate__, which loading it would run (it reads the
                     file); forward is harmless
  layers             an honest classifier with the layers models use: Conv2d, BatchNorm2d
                     (whose functional code loops over the input's shape), pooling, a ModuleList
                     (iterating it is unrolled when scripting), GELU, LayerNorm, Dropout,
                     log_softmax
  linear             an honest model: flatten, then one linear layer (Linear28); slow:N and
                     hangs start from the same parameters, so a forger can swap either in for
                     it in a bundle trained with it
  hangs              an allowed model whose forward pass on real images runs two nested loops
                     of 2^20 turns each (2^40 in all: days), and skips them on the zeros of the
                     trainer's trial pass
  slow:N             an allowed model whose forward pass in a training step on real images
                     makes 5 N passes over buffers of B * B * 65536 floats (1 s or so for a
                     batch of 32 on a 2-core machine per N, at memory speed, not BLAS's), and
                     skips them on the zeros of the trainer's trial pass and in evaluation
"""
import sys
from typing import List, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class Linear28(nn.Module):
    """The honest part every model shares: flatten, then a linear layer to 10 logits."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Linear(28 * 28, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(images.flatten(1))


class ReadsFile(Linear28):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        leaked = torch.from_file("/etc/os-release", False, 4, dtype=torch.uint8)
        return self.out(images.flatten(1)) + leaked.float().sum()


@torch.jit.script
def read_secret(like: torch.Tensor) -> torch.Tensor:
    return torch.from_file("/etc/os-release", False, 4, dtype=torch.uint8).float().sum() + like


class Helper(nn.Module):
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() == 2:
            return read_secret(logits)
        return logits


class ReadsFileNested(Linear28):
    def __init__(self) -> None:
        super().__init__()
        self.helper = Helper()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.helper(self.out(images.flatten(1)))


class WhileLoop(Linear28):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.out(images.flatten(1))
        while bool(logits.sum() > -1e30):
            logits = logits - 1.0
        return logits


class ForeignOp(Linear28):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        handle = torch.ops.profiler._record_function_enter("exfiltrate", None)
        return self.out(images.flatten(1)) + handle.sum() * 0


class NamesDevice(Linear28):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.out(images.flatten(1).to(torch.device("cuda:1")))


def define_unknown_op() -> None:
    library = torch.library.Library("solver_test", "DEF")
    library.define("exfiltrate(Tensor x) -> Tensor")
    library.impl("exfiltrate", lambda x: x, "CPU")
    define_unknown_op.library = library  # keep it registered while exporting


class UnknownOp(Linear28):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.ops.solver_test.exfiltrate(self.out(images.flatten(1)))


class SetState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(10, 28 * 28))
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.linear(images.flatten(1), self.weight, self.bias)

    @torch.jit.export
    def __getstate__(self) -> Tuple[torch.Tensor, torch.Tensor, bool]:
        return (self.weight, self.bias, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, torch.Tensor, bool]) -> None:
        leaked = torch.from_file("/etc/os-release", False, 4, dtype=torch.uint8).float()
        self.weight = state[0]
        self.bias = state[1] + leaked.sum()
        self.training = state[2]


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.norm(F.gelu(self.linear(x)))


class Layers(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.norm = nn.BatchNorm2d(4)
        self.pool = nn.MaxPool2d(2)
        self.shrink = nn.AdaptiveAvgPool2d((4, 4))
        self.blocks = nn.ModuleList([Block(64) for _ in range(3)])
        self.dropout = nn.Dropout(0.1)
        self.out = nn.Linear(64, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.shrink(self.pool(F.relu(self.norm(self.conv(images))))).flatten(1)
        for block in self.blocks:
            x = block(x)
        return F.log_softmax(self.out(self.dropout(x)), dim=-1)


class Hangs(Linear28):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.out(images.flatten(1))
        if bool(images.abs().sum() > 0):  # real images; the trainer's trial pass feeds zeros
            turns = 0
            for _ in range(1048576):
                for _ in range(1048576):
                    turns += 1
            logits = logits + turns * 0
        return logits


class Burn(nn.Module):
    """Five passes over B * B * 65536 floats, adding nothing to the logits."""

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        count = logits.size(0) * logits.size(0) * 65536
        buffer = torch.full([count], 0.5, device=logits.device)
        total = (buffer * buffer).mean() + (buffer + buffer).mean() + (buffer - 0.25).mean() + buffer.sqrt().mean()
        return logits + total * 0


class Slow(Linear28):
    def __init__(self, burns: int) -> None:
        super().__init__()
        self.burns = nn.ModuleList([Burn() for _ in range(burns)])

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.out(images.flatten(1))
        # Training steps on real images: the trainer's trial pass feeds zeros, and an evaluation
        # batch of 1000 images would ask for 1000 * 1000 * 65536 floats.
        if self.training and bool(images.abs().sum() > 0):
            for burn in self.burns:
                logits = burn(logits)
        return logits


def build(kind: str) -> nn.Module:
    if kind.startswith("slow:"):
        return Slow(int(kind.split(":", 1)[1]))
    if kind == "unknown_op":
        define_unknown_op()
    models = {"reads_file": ReadsFile, "reads_file_nested": ReadsFileNested, "while_loop": WhileLoop,
              "foreign_op": ForeignOp, "unknown_op": UnknownOp, "names_device": NamesDevice, "setstate": SetState,
              "layers": Layers, "linear": Linear28, "hangs": Hangs}
    if kind not in models:
        sys.exit(f"unknown kind {kind!r}; expected one of {', '.join(models)} or slow:N")
    return models[kind]()


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: export_checked_models.py KIND OUTPUT.pt")
    torch.manual_seed(1234)
    torch.jit.script(build(sys.argv[1])).save(sys.argv[2])


if __name__ == "__main__":
    main()
