"""Step 3, decode: one shard's images, decoded by worker processes straight into shared memory.

The parent creates one or two SharedArray buffers in /dev/shm and starts the
workers; each worker attaches once and ``cv2.imread``s every image it is given
into its row of a buffer. Only row numbers, digests and error strings travel
between processes, never pixels. With two buffers the parent writes batch k to
the shard file while the workers decode batch k+1.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import signal
import sys
import time
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from multiprocessing import get_context

import cv2
import numpy as np
from tqdm import tqdm

from . import shm
from .errors import ImgshardError
from .geometry import Geometry, reduced_size
from .header import Header, problem, read_header
from .labels import Labels, rle_decode
from .write import ShardWriter

FLAGS = cv2.IMREAD_COLOR_RGB
MB = 1024 * 1024
# Tasks per worker per batch: enough to even out slow images, few enough that
# the per-message cost stays invisible.
TASKS_PER_WORKER = 4


@dataclass
class Decoded:
    row: int
    sha256: str | None
    size: tuple[int, int] | None  # (height, width) of the decoded source
    error: str | None


# Written to a row's first and last pixel before decoding into it. imread with
# ``dst`` returns ``dst`` untouched, with no error, when it cannot decode a
# file, and a decoder that fails partway leaves the last rows unwritten; a mark
# that survives is how either shows. A real image that happens to carry these
# exact values only costs one confirming decode, never a wrong result.
_MARK_FIRST = np.array([1, 254, 3], np.uint8)
_MARK_LAST = np.array([252, 5, 250], np.uint8)
# imread flags for a reduced-size RGB decode, by reduction factor.
_REDUCED = {
    1: FLAGS,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_COLOR_RGB,
}

Outcome = tuple[str | None, tuple[int, int] | None, str | None]  # sha256, original (height, width), error


def decode_into(path: str, out: np.ndarray, geometry: Geometry) -> Outcome:
    """Decode ``path`` into the row ``out`` as ``geometry`` says; report its digest, size and any error."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror}"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, None, "empty file (0 bytes)"
    header = read_header(io.BytesIO(data))
    why = problem(data, header)
    if why:
        return digest, header.size, why
    if geometry.resize is None:
        return (digest, *_decode_direct(path, out, geometry))
    return (digest, *_decode_resized(path, out, geometry, header))


def _decode_direct(path: str, out: np.ndarray, geometry: Geometry) -> tuple[tuple[int, int] | None, str | None]:
    out[0, 0] = _MARK_FIRST
    out[-1, -1] = _MARK_LAST
    try:
        img = cv2.imread(path, out, FLAGS)
        written = (
            img is not None
            and np.shares_memory(img, out)
            and not (out[0, 0] == _MARK_FIRST).all()
            and not (out[-1, -1] == _MARK_LAST).all()
        )
    except cv2.error:
        # OpenCV 5 refuses a ``dst`` of another shape than the file's stored
        # size: an EXIF-rotated image, or one of another size.
        written = False
    if written:
        return geometry.shape, None
    # Decode on its own: None means undecodable; a rotated image that fits is copied in.
    img, error = _imread(path, FLAGS)
    if error:
        return None, error
    size = (int(img.shape[0]), int(img.shape[1]))
    if size != geometry.shape:
        return size, _size_error(size, geometry)
    out[...] = img
    return size, None


def _decode_resized(path: str, out: np.ndarray, geometry: Geometry, header: Header) -> tuple[tuple[int, int] | None, str | None]:
    factor = geometry.reduction(header.size) if header.kind == "jpeg" and header.size else 1
    img, error = _imread(path, _REDUCED[factor])
    if error:
        return None, error
    original = header.size if factor > 1 else (int(img.shape[0]), int(img.shape[1]))
    if factor > 1 and img.shape[:2] != reduced_size(original, factor):
        # The header was misread (an orientation cv2 sees differently, say): decode in full.
        factor, (img, error) = 1, _imread(path, FLAGS)
        if error:
            return None, error
        original = (int(img.shape[0]), int(img.shape[1]))
    geometry.place(img, out, original)
    return original, None


def _imread(path: str, flags: int) -> tuple[np.ndarray | None, str | None]:
    try:
        img = cv2.imread(path, flags)
    except cv2.error as e:
        return None, f"OpenCV cannot decode it ({_first_line(e)})"
    if img is None or img.size == 0:
        return None, "not a decodable image"
    return img, None


def _size_error(size: tuple[int, int], geometry: Geometry) -> str:
    ref = f"{geometry.reference}'s " if geometry.reference else "the dataset's "
    return (
        f"size {size[0]}x{size[1]} differs from {ref}{geometry.height}x{geometry.width};"
        " set image_size: [height, width] to resize images of different sizes"
    )


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


# --- worker side -------------------------------------------------------------

_buffers: list[np.ndarray] = []
_masks: list[np.ndarray] = []
_geometry: list[Geometry] = []


def _init_worker(names: list[str], mask_names: list[str], geometry: Geometry) -> None:
    # fork copies the parent's SIGTERM handler; a worker should simply die, the
    # parent cleans up. Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _buffers[:] = [shm.attach(name) for name in names]
    _masks[:] = [shm.attach(name) for name in mask_names]
    _geometry[:] = [geometry]


def _decode_chunk(k: int, rows: list[int], paths: list[str], rles: list[tuple[str, ...]] | None) -> list[Decoded]:
    buf, geometry = _buffers[k], _geometry[0]
    out = []
    for j, (row, path) in enumerate(zip(rows, paths)):
        digest, size, error = decode_into(path, buf[row], geometry)
        if error is None and rles is not None:
            error = place_masks(rles[j], size, _masks[k][row], geometry)
        out.append(Decoded(row, digest, size, error))
    return out


def place_masks(rles: tuple[str, ...], original: tuple[int, int], out: np.ndarray, geometry: Geometry) -> str | None:
    """Decode one image's run-length masks at its original size into ``out`` (H, W, K), as its pixels were placed."""
    try:
        masks = np.stack([rle_decode(rle, *original) for rle in rles], axis=-1)
    except ValueError as e:
        return f"labels: {e}"
    if geometry.resize is None:
        out[...] = masks
    else:
        geometry.place(masks, out, original, interpolation=cv2.INTER_NEAREST, fill=0)
    return None


# --- parent side -------------------------------------------------------------


@dataclass
class ShardResult:
    paths: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labels: list[int] = field(default_factory=list)  # class index per kept image, with classification labels
    seconds: float = 0.0
    # Where the seconds went, as the parent sees them: waiting for workers to
    # decode (with their start-up), and writing to HDF5 while they decode the next batch.
    decode_wait: float = 0.0
    write: float = 0.0
    buffer_rows: int = 0
    buffers: int = 0


# A shard that fits the budget still goes in this many batches, so that
# writing all but the last overlaps decoding.
MIN_BATCHES = 4


def plan_buffers(n: int, image_bytes: int, budget_bytes: int, free_bytes: int) -> tuple[int, int]:
    """(rows per buffer, number of buffers) for a shard of ``n`` images.

    Two buffers let writing overlap decoding; one is used when only one image
    fits, or the shard is one image. Never more than /dev/shm has free: writing
    past it kills the process with SIGBUS.
    """
    if n == 0:
        return 0, 0
    usable = min(budget_bytes, free_bytes)
    if usable < image_bytes:
        need = math.ceil(image_bytes / MB)
        if budget_bytes < image_bytes:
            raise ImgshardError(f"shm_budget_mb: {budget_bytes // MB} MB is less than one image ({need} MB)")
        raise ImgshardError(
            f"/dev/shm has {free_bytes // MB} MB free but one image needs {need} MB:"
            f" free some, or raise its size (docker run --shm-size={2 * need}m)"
        )
    fit = usable // image_bytes
    if fit < 2 or n < 2:
        return min(fit, n), 1
    return min(fit // 2, math.ceil(n / MIN_BATCHES)), 2


def mp_context(start_method: str):
    """The multiprocessing context workers start in.

    forkserver is the default because fork is unsafe in a process that has
    already run OpenCV code: the child inherits OpenCV's thread pool in a
    locked state and its first imread can hang forever. The server imports
    this module once, so each worker starts without paying for cv2's import.
    """
    ctx = get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


def run_tag(out_path: str) -> str:
    """Short tag that tells apart runs writing to different places."""
    return hashlib.blake2b(os.path.abspath(out_path).encode(), digest_size=4).hexdigest()


def decode_shard(
    sources: list[str],
    relpaths: list[str],
    out_path: str,
    geometry: Geometry,
    *,
    shard: int = 0,
    workers: int = 1,
    shm_budget_mb: int = 1024,
    compression: str = "none",
    on_error: str = "fail",
    start_method: str = "forkserver",
    labels: Labels | None = None,
    attrs: dict | None = None,
) -> ShardResult:
    """Decode ``sources`` into the shard file ``out_path``; ``relpaths`` are what it records.

    ``labels`` (every relpath must have a row) adds ``masks`` or ``labels`` to the shard.
    """
    started = time.perf_counter()
    shm.remove_stale()
    height, width = geometry.shape
    n = len(sources)
    k_masks = len(labels.classes) if labels is not None and labels.kind == "masks" else 0
    targets = [labels.rows[r] for r in relpaths] if labels is not None else None
    rows, nbuf = plan_buffers(n, height * width * (3 + k_masks), shm_budget_mb * MB, shm.free_bytes())
    tag = run_tag(out_path)
    names = [shm.segment_name(tag, shard, k) for k in range(nbuf)]
    mask_names = [shm.segment_name(tag, shard, k, "m") for k in range(nbuf)] if k_masks else []
    result = ShardResult(buffer_rows=rows, buffers=nbuf)
    buffers: list[np.ndarray] = []
    mask_buffers: list[np.ndarray] = []
    pool = writer = None
    finished = False
    try:
        for name in names:
            buffers.append(shm.create(name, (rows, height, width, 3)))
        for name in mask_names:
            mask_buffers.append(shm.create(name, (rows, height, width, k_masks)))
        if n:
            pool = ProcessPoolExecutor(
                max_workers=max(1, min(workers, n)),
                mp_context=mp_context(start_method),
                initializer=_init_worker,
                initargs=(names, mask_names, geometry),
            )
        rles = targets if k_masks else None
        batches = [(start, min(start + rows, n)) for start in range(0, n, rows)] if n else []
        pending = _submit(pool, 0, sources, rles, *batches[0], workers) if batches else []
        # Open the HDF5 file only now: the workers exist, so none inherits its handle.
        writer = ShardWriter(out_path, n, geometry.shape, compression, labels)
        progress = tqdm(total=n, desc=f"shard {shard}", unit="img", file=sys.stderr, mininterval=2, ascii=True)
        with progress:
            for b, (start, stop) in enumerate(batches):
                t0 = time.perf_counter()
                decoded = _collect(pending, progress, shard)
                if b + 1 < len(batches):
                    pending = _submit(pool, (b + 1) % nbuf, sources, rles, *batches[b + 1], workers)
                t1 = time.perf_counter()
                masks = mask_buffers[b % nbuf] if k_masks else None
                batch_targets = targets[start:stop] if targets is not None and not k_masks else None
                kept = _keep(decoded, buffers[b % nbuf], masks, relpaths[start:stop], batch_targets, result)
                if not (result.skipped and on_error == "fail"):
                    writer.write(buffers[b % nbuf], kept, masks)
                result.decode_wait += t1 - t0
                result.write += time.perf_counter() - t1
        if result.skipped and on_error == "fail":
            lines = "\n".join(f"{path}: {reason}" for path, reason in result.skipped)
            raise ImgshardError(
                f"shard {shard}: {len(result.skipped)} of {n} images could not be stored (on_error: fail)\n{lines}"
            )
        result.seconds = time.perf_counter() - started
        writer.finish(
            result.paths, result.sha256, np.array(result.sizes).reshape(-1, 2), result.skipped, attrs or {}, result.labels
        )
        finished = True
        return result
    finally:
        if pool is not None:
            _stop(pool, kill=not finished)
        if writer is not None and not finished:
            writer.abort()
        for name in names + mask_names:
            shm.delete(name)


def _submit(pool, k: int, sources: list[str], rles, start: int, stop: int, workers: int):
    m = stop - start
    per_task = max(1, math.ceil(m / (workers * TASKS_PER_WORKER)))
    return [
        pool.submit(
            _decode_chunk,
            k,
            list(range(i, min(i + per_task, m))),
            sources[start + i : start + i + per_task],
            rles[start + i : start + i + per_task] if rles is not None else None,
        )
        for i in range(0, m, per_task)
    ]


def _collect(futures, progress, shard: int) -> list[Decoded]:
    decoded: list[Decoded] = []
    remaining = set(futures)
    try:
        while remaining:
            done, remaining = wait(remaining, return_when=FIRST_EXCEPTION)
            for fut in done:
                part = fut.result()
                decoded.extend(part)
                progress.update(len(part))
    except BrokenProcessPool:
        raise ImgshardError(f"shard {shard}: a worker process died (killed, or out of memory); nothing was written") from None
    decoded.sort(key=lambda d: d.row)
    return decoded


def _keep(
    decoded: list[Decoded],
    buf: np.ndarray,
    masks: np.ndarray | None,
    relpaths: list[str],
    labels: list[tuple] | None,
    result: ShardResult,
) -> int:
    """Record a batch's results; pack its good rows to the front of ``buf`` (and ``masks``); return how many."""
    kept = 0
    for d in decoded:
        path = relpaths[d.row]
        if d.error is not None:
            result.skipped.append((path, d.error))
            continue
        if d.row != kept:
            buf[kept] = buf[d.row]
            if masks is not None:
                masks[kept] = masks[d.row]
        if labels is not None:
            result.labels.append(labels[d.row][0])
        result.paths.append(path)
        result.sha256.append(d.sha256)
        result.sizes.append(d.size)
        kept += 1
    return kept


def _stop(pool: ProcessPoolExecutor, kill: bool) -> None:
    if kill:
        # No public way to stop workers mid-task before Python 3.14's terminate_workers().
        terminate = getattr(pool, "terminate_workers", None)
        if terminate is not None:
            terminate()
        else:
            for proc in list((getattr(pool, "_processes", None) or {}).values()):
                proc.terminate()
    pool.shutdown(wait=True, cancel_futures=True)
