"""Worker processes for ``DataLoader(num_workers=N)``.

Batch k (its index list) goes to worker ``k % N``; each worker fetches and collates its batches in order and
sends them back through its OWN pipe, so the main process reads batch k from worker k % N and the order is the
sampler's; at most ``prefetch_factor * N`` batches are in flight. The pipe is written synchronously (no feeder
thread: a batch sent is a batch delivered even if the worker dies right after) and by one writer (a worker
killed mid-write cannot leave a lock held that would stall the others). Arrays of 4 KiB or more travel through
POSIX shared memory (the worker writes them once into a block, the parent copies them out and unlinks it), the
rest by pickling.

Seeding: each epoch draws ``base_seed`` from the loader's generator (or handgrad's global one); worker i
seeds Python's ``random``, NumPy's legacy global generator and handgrad's generators with
``base_seed + i`` before ``worker_init_fn(i)``, so random augmentations differ between workers and
repeat between runs. ``get_worker_info()`` tells code running in a worker which one it is.

Failures never hang: an exception in a worker is re-raised in the parent as one-line RuntimeError naming
the worker, the batch and the original error; a worker that dies (segfault, ``os._exit``, OOM kill) is
noticed within 0.1 s by polling the processes; ``timeout > 0`` bounds the wait for each batch.
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import queue
import random
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy

_SHM_MIN_BYTES = 4096  # smaller arrays are cheaper to pickle than to map


@dataclass(frozen=True)
class WorkerInfo:
    """What ``get_worker_info()`` returns inside a worker (None in the main process)."""

    id: int
    num_workers: int
    seed: int
    dataset: Any


_worker_info: WorkerInfo | None = None


def get_worker_info() -> WorkerInfo | None:
    """The current worker's id, the number of workers, its seed and its copy of the dataset; None when
    called in the main process (``torch.utils.data.get_worker_info``)."""
    return _worker_info


# -- moving batches between processes ---------------------------------------------------------------------
@dataclass(frozen=True)
class _Shm:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _TensorBox:
    array: Any  # ndarray or _Shm
    requires_grad: bool


class _Exhausted:
    """Sent by a worker whose iterable dataset has no more batches."""


@dataclass(frozen=True)
class _ErrorBox:
    kind: str
    message: str
    trace: str


try:  # POSIX shared memory without multiprocessing's resource tracker (see _put_array)
    import _posixshmem  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - Windows: arrays are pickled instead
    _posixshmem = None

_block_counter = iter(range(1 << 62))


def _put_array(a: numpy.ndarray) -> Any:
    """Small arrays as they are (pickled); large ones into a fresh POSIX shared-memory block.

    The block is made with ``_posixshmem`` + ``mmap`` directly rather than ``shared_memory.SharedMemory``,
    whose resource tracker (one helper process per worker, registered and unregistered on every block)
    costs time and is one more lock a forked worker would share; the parent unlinks each block as soon as
    it has copied it out, and unlinks what is left when an epoch is abandoned.
    """
    if _posixshmem is None or a.nbytes < _SHM_MIN_BYTES or a.dtype.kind not in "biufc":
        return a
    name = f"/handgrad_{os.getpid()}_{next(_block_counter)}"
    fd = _posixshmem.shm_open(name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, a.nbytes)
        with mmap.mmap(fd, a.nbytes) as mm:
            numpy.ndarray(a.shape, a.dtype, buffer=mm)[...] = a
    finally:
        os.close(fd)
    return _Shm(name, tuple(a.shape), a.dtype.str)


def _take_array(box: Any) -> numpy.ndarray:
    if not isinstance(box, _Shm):
        return box
    dtype = numpy.dtype(box.dtype)
    nbytes = int(numpy.prod(box.shape, dtype=numpy.int64)) * dtype.itemsize
    fd = _posixshmem.shm_open(box.name, os.O_RDWR, mode=0o600)
    try:
        with mmap.mmap(fd, nbytes) as mm:
            out = numpy.ndarray(box.shape, dtype, buffer=mm).copy()
    finally:
        os.close(fd)
        _posixshmem.shm_unlink(box.name)
    return out


def _encode(obj: Any) -> Any:
    from handgrad.engine.tensor import Tensor

    if isinstance(obj, Tensor):
        return _TensorBox(_put_array(numpy.ascontiguousarray(obj.numpy())), obj.requires_grad)
    if isinstance(obj, numpy.ndarray):
        return _put_array(numpy.ascontiguousarray(obj))
    if isinstance(obj, Mapping):
        return type(obj)((k, _encode(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_encode(v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_encode(v) for v in obj)
    return obj


def _decode(obj: Any) -> Any:
    from handgrad.engine.tensor import Tensor

    if isinstance(obj, _TensorBox):
        return Tensor(_take_array(obj.array), requires_grad=obj.requires_grad)
    if isinstance(obj, _Shm):
        return _take_array(obj)
    if isinstance(obj, Mapping):
        return type(obj)((k, _decode(v)) for k, v in obj.items())
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_decode(v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(_decode(v) for v in obj)
    return obj


# -- the worker -------------------------------------------------------------------------------------------
def _seed_worker(seed: int) -> None:
    from handgrad.engine.random import manual_seed

    random.seed(seed)
    numpy.random.seed(seed % 2**32)
    manual_seed(seed)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


def _worker_loop(dataset: Any, fetch: Callable[[Any], Any], index_queue: Any, result_pipe: Any, worker_id: int,
                 num_workers: int, seed: int, init_fn: Callable[[int], None] | None, parent: int) -> None:
    global _worker_info
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        _seed_worker(seed)
        _worker_info = WorkerInfo(worker_id, num_workers, seed, dataset)
        if init_fn is not None:
            init_fn(worker_id)
    except Exception as e:
        result_pipe.send((-1, worker_id, _ErrorBox(type(e).__name__, str(e), traceback.format_exc())))
        return
    while True:
        try:
            job = index_queue.get(timeout=1.0)
        except queue.Empty:
            if not _alive(parent):  # the main process died: do not linger (its pid, not getppid():
                return  # under 'forkserver' the parent process is the server)
            continue
        if job is None:
            return
        batch_no, indices = job
        try:
            payload = _encode(fetch(indices))
        except StopIteration:  # an iterable dataset's copy in this worker is used up
            payload = _Exhausted()
        except Exception as e:
            payload = _ErrorBox(type(e).__name__, str(e), traceback.format_exc())
        result_pipe.send((batch_no, worker_id, payload))


def _shutdown(workers: list[Any], index_queues: list[Any], result_pipes: list[Any]) -> None:
    for q in index_queues:
        try:
            q.put(None)
        except Exception:  # pragma: no cover - a queue already broken by a dead worker
            pass
    deadline = time.monotonic() + 1.0  # a healthy worker reads None within its 1 s queue poll
    for w in workers:
        w.join(timeout=max(0.0, deadline - time.monotonic()))
        if w.is_alive():
            w.terminate()
            w.join(timeout=1.0)
    # Drain what finished workers left behind, so no shared-memory block outlives the epoch.
    for rp in result_pipes:
        try:
            while rp.poll(0):
                _, _, payload = rp.recv()
                if not isinstance(payload, _ErrorBox):
                    _decode(payload)
        except Exception:
            pass
        rp.close()
    for q in index_queues:
        q.cancel_join_thread()
        q.close()


def _one_line(text: str) -> str:
    return " ".join(text.split())


class MultiProcessIterator:
    """One epoch of batches fetched by worker processes, yielded in the sampler's order."""

    def __init__(self, loader: Any, batches: list[Any] | None, fetch: Callable[[Any], Any]) -> None:
        from handgrad.data.dataset import resolve_generator

        n = loader.num_workers
        ctx_name = loader.multiprocessing_context
        if ctx_name is None:
            ctx_name = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        ctx = multiprocessing.get_context(ctx_name) if isinstance(ctx_name, str) else ctx_name
        base_seed = int(resolve_generator(loader.generator).integers(2**62))
        self._batches, self._timeout = batches or [], float(loader.timeout)
        pipes = [ctx.Pipe(duplex=False) for _ in range(n)]
        self._result_pipes = [r for r, _ in pipes]
        self._index_queues = [ctx.Queue() for _ in range(n)]
        self._workers = []
        for i in range(n):
            w = ctx.Process(target=_worker_loop, daemon=True,
                            args=(loader.dataset, fetch, self._index_queues[i], pipes[i][1], i, n,
                                  base_seed + i, loader.worker_init_fn, os.getpid()))
            w.start()
            pipes[i][1].close()  # the worker holds the writing end now
            self._workers.append(w)
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._index_queues, self._result_pipes)
        self._sent = self._received = 0
        self._iterable = batches is None  # an iterable dataset: each worker streams from its own copy
        if self._iterable:
            self._active, self._turn = list(range(n)), 0
            for i in range(n):
                for _ in range(loader.prefetch_factor or 2):
                    self._index_queues[i].put((None, None))
            return
        self._max_in_flight = max(1, (loader.prefetch_factor or 2) * n)
        while self._sent < len(batches) and self._sent < self._max_in_flight:
            self._dispatch()

    def _dispatch(self) -> None:
        k = self._sent
        self._index_queues[k % len(self._workers)].put((k, self._batches[k]))
        self._sent += 1

    def __iter__(self) -> MultiProcessIterator:
        return self

    def _fail(self, message: str) -> RuntimeError:
        self._finalizer()
        return RuntimeError(message)

    def _recv(self, i: int, k: int) -> Any:
        """The next message from worker i (which owes batch k), decoded; raises on death, timeout or error."""
        w, rp = self._workers[i], self._result_pipes[i]
        start = time.monotonic()
        while True:
            try:
                if rp.poll(0.1):
                    batch_no, wid, payload = rp.recv()
                    break
            except (EOFError, OSError):  # the worker's end closed: it died (reported below)
                w.join(timeout=1.0)
            if not w.is_alive():
                raise self._fail(
                    f"DataLoader worker {i} (pid {w.pid}) exited unexpectedly with exit code {w.exitcode} "
                    f"before sending batch {k} (killed, out of memory, or a crash in native code)"
                ) from None
            if self._timeout > 0 and time.monotonic() - start > self._timeout:
                raise self._fail(f"DataLoader timed out after {self._timeout:g} seconds waiting for batch {k} "
                                 f"from worker {i}") from None
        if isinstance(payload, _ErrorBox):
            where = ("while fetching a batch" if batch_no is None else "in worker_init_fn" if batch_no < 0
                     else f"while fetching batch {batch_no}")
            err = self._fail(f"DataLoader worker {wid} raised {payload.kind} {where}: {_one_line(payload.message)} "
                             "(num_workers=0 runs it in this process for a full traceback)")
            err.worker_traceback = payload.trace  # type: ignore[attr-defined]
            raise err
        return payload if isinstance(payload, _Exhausted) else _decode(payload)

    def __next__(self) -> Any:
        if self._iterable:
            return self._next_streamed()
        if self._received == len(self._batches):
            self._finalizer()
            raise StopIteration
        k = self._received
        out = self._recv(k % len(self._workers), k)
        self._received += 1
        if self._sent < len(self._batches):
            self._dispatch()
        return out

    def _next_streamed(self) -> Any:
        """Iterable datasets: take batches from the active workers in turn; an exhausted one drops out."""
        while self._active:
            i = self._active[self._turn % len(self._active)]
            out = self._recv(i, self._received)
            if isinstance(out, _Exhausted):
                self._active.remove(i)
                continue
            self._turn += 1
            self._received += 1
            self._index_queues[i].put((None, None))  # one more batch from this worker
            return out
        self._finalizer()
        raise StopIteration

    def __len__(self) -> int:
        return len(self._batches)
