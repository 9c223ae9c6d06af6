"""Build, step 3 of a shard job, assemble: the new part filled in its row order, from the decode buffers and older parts.

Rows the plan copies (unchanged images of a fresh part, or of merged deltas)
go in as stored, chunk by chunk, before each batch, while the workers decode
it; a decoded batch goes in as soon as it is collected, its buffer then free
for the batch after next. What comes back is where every new-part image went
and what the workers said of each decoded one: the index is made from it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import h5py

from .reuse import Plan
from .workers import Decoded


@dataclass
class Assembled:
    row_of: dict[int, int] = field(default_factory=dict)  # position -> its row in the new part
    decoded: dict[int, Decoded] = field(default_factory=dict)  # position -> what the workers said
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    decode_wait: float = 0.0  # seconds waiting for the workers
    write: float = 0.0  # seconds writing and copying rows


def assemble(plan: Plan, decoder, writer, relpaths: list[str], shards_dir: str, stop_writing: bool) -> Assembled:
    """Fill ``writer`` (None when the plan writes no new part) with the plan's new-part images.

    ``decoder`` (workers.Decoder) has the batches of ``plan.todo`` queued.
    ``stop_writing``: after the first image that cannot be stored, decode on
    (to name every bad image) but write nothing more; the job will fail.
    """
    out = Assembled()
    sources: dict[int, h5py.File] = {}  # older parts, opened once
    cursor = 0  # next entry of plan.new_part
    new_part = plan.new_part

    def place(until: int, decoded: dict[int, Decoded] | None = None, buffer=None, masks=None) -> None:
        """New-part images at positions below ``until``: copied ones, and those of ``decoded`` (in ``buffer``)."""
        nonlocal cursor
        copies: dict[int, list[tuple[int, int]]] = {}
        writes = []
        while cursor < len(new_part) and new_part[cursor] < until:
            i = new_part[cursor]
            cursor += 1
            row = len(out.row_of)
            if decoded is not None and i in decoded:
                d = decoded[i]
                out.decoded[i] = d
                if d.error is not None:
                    out.skipped.append((relpaths[i], d.error))
                    continue
                writes.append((d.row, row))
            else:  # copied from an older part: its key is unchanged
                part, old_row, _ = plan.previous_ref(i)
                copies.setdefault(part, []).append((old_row, row))
            out.row_of[i] = row
        if out.skipped and stop_writing:
            return
        for part, pairs in copies.items():
            if part not in sources:
                sources[part] = h5py.File(os.path.join(shards_dir, plan.previous.parts[part]), "r")
            writer.copy(sources[part], pairs)
        if writes:
            writer.write(buffer, writes, masks)

    todo = plan.todo
    try:
        for b, (first, end) in enumerate(decoder.batches):
            t0 = time.perf_counter()
            place(todo[first])  # copied rows before this batch, while the workers decode it
            t1 = time.perf_counter()
            decoded, buffer, masks = decoder.collect(b)
            t2 = time.perf_counter()
            place(todo[end - 1] + 1, {todo[first + d.row]: d for d in decoded}, buffer, masks)
            decoder.release(b)  # its buffer is written: the workers refill it
            out.decode_wait += t2 - t1
            out.write += (t1 - t0) + (time.perf_counter() - t2)
        t0 = time.perf_counter()
        place(len(relpaths))
        out.write += time.perf_counter() - t0
    finally:
        for f in sources.values():
            f.close()
    return out
