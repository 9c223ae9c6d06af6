"""Run-length encoded masks (Kaggle "Understanding Clouds" format): pairs ``start length``, 1-based,
pixels numbered top to bottom then left to right (column-major); empty means no mask."""

from __future__ import annotations

import numpy as np


def rle_decode(rle: str, height: int, width: int) -> np.ndarray:
    """(height, width) uint8 mask of 0/1 from a column-major, 1-based run-length encoding."""
    flat = np.zeros(height * width, np.uint8)
    numbers = rle.split()
    if numbers:
        if len(numbers) % 2:
            raise ValueError("run-length encoding has an odd count of numbers")
        runs = np.asarray(numbers, dtype=np.int64).reshape(-1, 2)
        starts, lengths = runs[:, 0] - 1, runs[:, 1]
        if (starts < 0).any() or (lengths < 0).any() or (starts + lengths > flat.size).any():
            raise ValueError(f"run-length encoding runs outside a {height}x{width} image")
        for start, length in zip(starts, lengths):
            flat[start : start + length] = 1
    return np.ascontiguousarray(flat.reshape(width, height).T)


def rle_encode(mask: np.ndarray) -> str:
    """The run-length encoding of a (height, width) 0/1 mask; '' for an empty mask."""
    pixels = np.concatenate([[0], mask.T.reshape(-1).astype(bool).view(np.uint8), [0]])
    edges = np.flatnonzero(pixels[1:] != pixels[:-1]) + 1
    edges[1::2] -= edges[::2]
    return " ".join(map(str, edges))
