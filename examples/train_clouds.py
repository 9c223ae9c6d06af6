"""Train a tiny segmentation CNN for a few steps on an imgshard dataset with masks (the demo's, by default).

    python examples/train_clouds.py results/train.h5 --steps 20
    torchrun --nproc-per-node 2 examples/train_clouds.py results/train.h5   # the same under DDP, on the CPU

It shows what a training script needs from imgshard: a Loader (its part of
each shuffled epoch under DDP, a new permutation per epoch), its state in a
checkpoint to resume mid-epoch, and refresh() between epochs to pick up a
newer dataset that a rerun published meanwhile. torch is an optional extra:
imgshard itself never imports it.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

import torch
from torch import nn

try:
    from imgshard import Loader
except ModuleNotFoundError:  # run from a checkout: the package sits one folder up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from imgshard import Loader


def to_tensors(images, masks, step: int):
    """(B, H, W, 3) uint8 images and (B, H, W, K) 0/1 masks to float tensors, every ``step``-th pixel."""
    x = torch.from_numpy(images[:, ::step, ::step]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(masks[:, ::step, ::step]).permute(0, 3, 1, 2).float()
    return x, y


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="results/train.h5")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--downsample", type=int, default=8)
    parser.add_argument("--checkpoint", help="save the model and the loader's state here at the end; resume from it if it exists")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    # Under torchrun each process is a rank: the Loader gives it its own part of every epoch.
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    if world > 1:
        torch.distributed.init_process_group("gloo")

    loader = Loader(args.dataset, batch_size=args.batch_size, shuffle=True, seed=0, rank=rank, world_size=world)
    if loader.target != "masks":
        raise SystemExit(f"{args.dataset}: no masks; build it with labels set (make run does)")
    k = len(loader.classes)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, k, 1)
    )
    if world > 1:
        model = nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    if args.checkpoint and os.path.exists(args.checkpoint):
        saved = torch.load(args.checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        loader.load_state_dict(saved["loader"])  # the batches of its epoch not yet taken come next
    loss_fn = nn.BCEWithLogitsLoss()
    loss, step, epoch = math.nan, 0, loader.epoch
    while step < args.steps:
        loader.set_epoch(epoch)  # every rank draws the same permutation
        for images, masks in loader:
            x, y = to_tensors(images, masks, args.downsample)
            optimizer.zero_grad()
            loss_value = loss_fn(model(x), y)
            loss_value.backward()
            optimizer.step()
            loss, step = loss_value.item(), step + 1
            if rank == 0:
                print(f"step {step}: loss {loss:.4f} (batch {tuple(x.shape)}, classes {', '.join(loader.classes)})")
            if step == args.steps:
                break
        else:
            epoch += 1
            if world == 1:  # under DDP every rank must move at the same epoch: see the README
                loader.refresh()  # a rerun published a newer dataset meanwhile: the next epoch reads it
    if args.checkpoint and rank == 0:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "loader": loader.state_dict()}, args.checkpoint)
    loader.close()
    return loss


if __name__ == "__main__":
    main()
