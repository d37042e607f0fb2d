"""The stages of one shard's pipeline, each in a thread of its own, joined by bounded queues.

A mining worker alternates CPU work (decode, nouns, crops, encoding, the tar)
with device work (proposals, CLIP). Run in turn, the device waits while the
CPU works. Here each stage is a generator over the previous stage's output
running in its own thread, and a queue of ``depth`` elements between two
stages bounds what is in flight, so memory does not grow with the shard.
torch and PIL release the GIL in their kernels, so the threads overlap.
Elements keep their order (every queue is FIFO, :func:`ordered_map` yields
in input order): the shard's bytes do not depend on the threads.
``threaded=False`` runs the very same stages in the calling thread, in turn.
"""
from __future__ import annotations

import queue
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
U = TypeVar("U")

_END = object()  # the stage's input is exhausted


class _Raised:
    """An exception of a stage thread, handed downstream to be raised where the results are read."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class StageThreads:
    """The threads of one shard's stages; :meth:`stop` ends them (on a failure, or when the shard is done)."""

    def __init__(self, threaded: bool = True, name: str = "stage") -> None:
        self.threaded = threaded
        self.name = name
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def stage(self, run: Callable[[Iterator[T]], Iterator[U]], upstream: Iterable[T], depth: int, name: str) -> Iterator[U]:
        """``run(upstream)``: in a thread of its own with an output queue of ``depth`` (in turn if not threaded)."""
        if not self.threaded:
            return run(iter(upstream))
        out: queue.Queue = queue.Queue(maxsize=max(1, depth))

        def work() -> None:
            try:
                for element in run(iter(upstream)):
                    if not self._put(out, element):
                        return
                self._put(out, _END)
            except BaseException as exc:  # noqa: BLE001 - handed to the reader, who raises it
                self._put(out, _Raised(exc))

        thread = threading.Thread(target=work, name=f"{self.name}-{name}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return self._read(out)

    def source(self, make: Callable[[], Iterator[U]], depth: int, name: str) -> Iterator[U]:
        """The first stage: ``make()``'s elements, produced in a thread of its own (in turn if not threaded)."""
        return self.stage(lambda _: make(), (), depth, name)

    def _put(self, out: queue.Queue, element: object) -> bool:
        while not self._stop.is_set():
            try:
                out.put(element, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read(self, out: queue.Queue) -> Iterator:
        while True:
            try:
                element = out.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if element is _END:
                return
            if isinstance(element, _Raised):
                raise element.exc
            yield element

    def stop(self, wait: bool = False) -> None:
        """End every stage thread: each stops at its next hand-over (``wait``: join them)."""
        self._stop.set()
        if wait:
            for thread in self._threads:
                thread.join()


def ordered_map(fn: Callable[[T], U], elements: Iterable[T], workers: int, name: str = "map") -> Iterator[U]:
    """``map(fn, elements)`` on ``workers`` threads, at most ``workers`` elements in flight, results in order."""
    if workers <= 1:
        yield from map(fn, elements)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix=name) as pool:
        pending: deque = deque()
        try:
            for element in elements:
                pending.append(pool.submit(fn, element))
                if len(pending) >= workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
