"""Read: the batch buffers a DataLoader worker reuses, handed to the main process without a copy.

A fresh shared-memory tensor per batch, as torch's DataLoader makes one, costs
its pages: the kernel allocates and zeroes them, and each is faulted in as the
worker writes (about 8 ms for a 9.6 MB batch of 224x224 images here, against
1.1 ms to read the batch into a buffer already mapped). So each worker keeps
a ring of batch buffers in /dev/shm, made once, and sends only which slot
holds a batch; the main process maps the ring once and gives the caller
tensors that are views of that slot.

A slot is written again only once the main process has let go of every view
of it: a finalizer on the view marks the slot free in a flag array the ring
shares. A caller that keeps many batches never gets a rewritten one: when no
slot is free, the worker sends that batch in a fresh tensor of its own, as the
default path does.
"""

from __future__ import annotations

import os
import time
import weakref
from multiprocessing import util

import numpy as np
import psutil

from .. import shm

FREE, TAKEN = 0, 1
# The main process holds a batch while its step runs and often the one before;
# the DataLoader keeps prefetch_factor batches of each worker in flight.
SLOTS = 6
WAIT = 0.05  # seconds a worker waits for a free slot before it sends a fresh tensor instead


def segment(kind: str, number: int) -> str:
    # shm.remove_stale() removes it when this process dies without cleaning up
    return f"{shm.PREFIX}-ring-s{number}-p{os.getpid()}-{kind}0"


_count = [0]


class Ring:
    """This worker's slots: images, targets (masks or labels) and the flags the main process frees."""

    def __init__(self, batch: int, image_shape: tuple, target_shape: tuple | None, target_dtype=np.uint8):
        shm.remove_stale()  # rings of workers that were killed before they could clean up
        _count[0] += 1
        self.names = {kind: segment(kind, _count[0]) for kind in ("b", "m", "f")}  # images, targets, flags
        self.images = shm.create(self.names["b"], (SLOTS, batch, *image_shape))
        self.flags = shm.create(self.names["f"], (SLOTS,))
        self.targets = None
        if target_shape is not None:
            self.targets = shm.create(self.names["m"], (SLOTS, batch, *target_shape), target_dtype)
        # A DataLoader worker leaves through multiprocessing, which runs these finalizers (not atexit).
        util.Finalize(self, _delete, args=(list(self.names.values()),), exitpriority=10)

    def acquire(self) -> int | None:
        """A free slot, marked taken; None when the main process holds them all."""
        deadline = time.monotonic() + WAIT
        while True:
            free = np.flatnonzero(self.flags == FREE)
            if len(free):
                slot = int(free[0])
                self.flags[slot] = TAKEN
                return slot
            if time.monotonic() > deadline:
                return None
            time.sleep(0.0005)


def _delete(names: list[str]) -> None:
    for name in names:
        shm.delete(name)


# --- the main process ------------------------------------------------------------

_attached: dict[str, np.ndarray] = {}


def _attach(name: str) -> np.ndarray:
    array = _attached.get(name)
    if array is None:
        # The rings of workers that are gone (a DataLoader starts new ones each epoch unless its
        # workers persist): let go of them, or their memory would stay mapped here for good.
        for old in [n for n in _attached if not psutil.pid_exists(_owner(n))]:
            del _attached[old]
        array = _attached[name] = shm.attach(name)
    return array


def _owner(name: str) -> int:
    return int(name.split("-p")[-1].split("-")[0])


def _release(flags: np.ndarray, slot: int, holders: list[int]) -> None:
    holders[0] -= 1
    if holders[0] == 0:
        flags[slot] = FREE


def received(names: dict[str, str], slot: int, count: int, has_targets: bool, labels: bool):
    """In the main process, as a batch is unpickled: ``(images, targets)`` tensors viewing the worker's slot.

    Each tensor's storage holds its numpy view, whatever is derived from it
    later: the slot is freed once every such view is gone.
    """
    import torch

    flags = _attach(names["f"])
    views = [_attach(names["b"])[slot, :count]]
    targets = None
    if has_targets:
        target = _attach(names["m"])[slot, :count]
        if labels:  # a few bytes: copied, so that the images alone hold the slot
            targets = torch.from_numpy(target.copy())
        else:
            views.append(target)
    holders = [len(views)]
    for view in views:
        weakref.finalize(view, _release, flags, slot, holders)
    tensors = [torch.from_numpy(view) for view in views]
    return tensors[0], (tensors[1] if len(tensors) > 1 else targets)


class Shipped:
    """What a worker's ``collate`` returns: which slot of its ring holds the batch. Unpickled in the
    main process, it becomes the ``(images, targets)`` tensors themselves."""

    def __init__(self, ring: Ring, slot: int, count: int, has_targets: bool, labels: bool):
        self.args = (ring.names, slot, count, has_targets, labels)

    def __reduce__(self):
        return received, self.args
