"""Train a tiny segmentation CNN for a few steps on an imgshard dataset with masks (the demo's, by default).

    python examples/train_clouds.py results/train.h5 --steps 20

It shows the three lines that matter (dataset, loader, loop) with torch, which
is an optional extra: imgshard itself never imports it.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

try:
    from imgshard import H5ImageDataset
except ModuleNotFoundError:  # run from a checkout: the package sits one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgshard import H5ImageDataset


class Downsample:
    """(image, mask) uint8 arrays to float tensors, every ``step``-th pixel: enough for a tiny model."""

    def __init__(self, step: int):
        self.step = step

    def __call__(self, item):
        image, mask = item
        x = torch.from_numpy(image[:: self.step, :: self.step].copy()).permute(2, 0, 1).float() / 255
        y = torch.from_numpy(mask[:: self.step, :: self.step].copy()).permute(2, 0, 1).float()
        return x, y


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="results/train.h5")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--downsample", type=int, default=8)
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    dataset = H5ImageDataset(args.dataset, transform=Downsample(args.downsample))
    if dataset.target != "masks":
        raise SystemExit(f"{args.dataset}: no masks; build it with labels set (make run does)")
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    k = len(dataset.classes)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, k, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.BCEWithLogitsLoss()
    batches = itertools.chain.from_iterable(itertools.repeat(loader))
    loss = math.nan
    for step, (x, y) in zip(range(1, args.steps + 1), batches):
        optimizer.zero_grad()
        loss_value = loss_fn(model(x), y)
        loss_value.backward()
        optimizer.step()
        loss = loss_value.item()
        print(f"step {step}: loss {loss:.4f} (batch {tuple(x.shape)}, classes {', '.join(dataset.classes)})")
    return loss


if __name__ == "__main__":
    main()
