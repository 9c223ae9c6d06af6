"""Train a tiny segmentation CNN for a few steps on an imgshard dataset with masks (the demo's, by default).

    python examples/train_clouds.py results/train.h5 --steps 20 --checkpoint ckpt.pt
    torchrun --nproc-per-node 2 examples/train_clouds.py results/train.h5   # the same under DDP, on the CPU

It shows what a training script needs from imgshard: a Loader (its part of
each shuffled epoch under DDP, a new permutation per epoch), its state in a
checkpoint to resume mid-epoch, and refresh() between epochs to pick up a
newer dataset that a rerun published meanwhile. With --checkpoint it saves
every --save-every steps and when SIGTERM arrives (a preempted cluster job),
and a run started again continues from the step after the last one saved,
with the batches not yet taken. Each step prints the images/s it trains at.
torch is an optional extra (`make torch`): imgshard itself never imports it.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import signal
import sys
import time
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


def save(path: str, **state) -> None:
    """Write the checkpoint whole, then rename it: a kill while saving leaves the previous one."""
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", nargs="?", default="results/train.h5")
    parser.add_argument("--steps", type=int, default=20, help="train until this step (counted across resumes)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--downsample", type=int, default=8)
    parser.add_argument("--checkpoint", help="save the model, optimizer, loader and step here; resume from it if it exists")
    parser.add_argument("--save-every", type=int, default=10, help="steps between checkpoints (and one at the end, and on SIGTERM)")
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
    step = 0
    if args.checkpoint and os.path.exists(args.checkpoint):
        saved = torch.load(args.checkpoint)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        loader.load_state_dict(saved["loader"])  # the batches of its epoch not yet taken come next
        step = saved["step"]
        if rank == 0:
            print(f"resumed from {args.checkpoint} after step {step}, epoch {loader.epoch}", flush=True)

    def checkpoint() -> None:
        if args.checkpoint and rank == 0:
            save(args.checkpoint, model=model.state_dict(), optimizer=optimizer.state_dict(), loader=loader.state_dict(), step=step)

    # A preempted job gets SIGTERM, then some seconds: finish the step, save, stop.
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    loss_fn = nn.BCEWithLogitsLoss()
    loss, epoch = math.nan, loader.epoch
    started, images = time.perf_counter(), 0
    while step < args.steps and not stopping:
        loader.set_epoch(epoch)  # every rank draws the same permutation
        for batch, masks in loader:
            x, y = to_tensors(batch, masks, args.downsample)
            optimizer.zero_grad()
            loss_value = loss_fn(model(x), y)
            loss_value.backward()
            optimizer.step()
            loss, step, images = loss_value.item(), step + 1, images + len(batch)
            if rank == 0:
                rate = images / (time.perf_counter() - started)
                digest = hashlib.sha1(batch.tobytes()).hexdigest()[:8]
                print(f"step {step}: loss {loss:.4f}, {rate:.0f} images/s (batch {tuple(x.shape)} {digest}, classes {', '.join(loader.classes)})", flush=True)
            if step % args.save_every == 0:
                checkpoint()
            if step == args.steps or stopping:
                break
        else:
            epoch += 1
            if world == 1:  # under DDP every rank must move at the same epoch: see the README
                loader.refresh()  # a rerun published a newer dataset meanwhile: the next epoch reads it
    checkpoint()
    if stopping and rank == 0:
        saved = f"; checkpoint saved to {args.checkpoint}" if args.checkpoint else ""
        print(f"stopped by SIGTERM after step {step}{saved}", flush=True)
    loader.close()
    return loss


if __name__ == "__main__":
    main()
