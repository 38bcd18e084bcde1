"""Decode, detect and write at once: the three steps of the face stage overlapped through bounded queues.

One thread decodes batches of frames, the calling thread detects, tracks and aligns them (in order: the tracker's
choice in a frame depends on the previous one), one thread writes the results into the store. Memory stays
bounded by a few batches whatever the video's length: the decoder takes a slot before it decodes a batch and the
detector hands it back once done with it, so at most ``depth + 1`` batches of frames (the large part: 22 MB at
32 frames of 640x360, 200 MB at 1080p) are alive, one being detected and ``depth`` decoded ahead; results (crops)
wait in a queue of ``depth``. The first failure in any of the three stops the other two and is raised in the
caller; nothing hangs.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_END = object()  # the producer's last item
_POLL = 0.05  # seconds between checks of the stop flag while a queue is full or empty


class _Stopped(Exception):
    """Another step failed: this one gives up quietly (the failure is raised once, in the caller)."""


class _Pipe:
    """A bounded queue whose put and get give up once the pipeline is stopped."""

    def __init__(self, depth: int, stop: threading.Event):
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = stop

    def put(self, item) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise _Stopped

    def get(self):
        while True:
            try:
                return self._q.get(timeout=_POLL)
            except queue.Empty:
                if self._stop.is_set():
                    raise _Stopped from None


def run_overlapped(
    items: Iterable[T], process: Callable[[T], R], write: Callable[[R], Any], *, depth: int = 1, name: str = "faces"
) -> int:
    """``write(process(item))`` for each of ``items`` in order, with the iteration over ``items`` (the decoding)
    in one thread, ``process`` in the caller's and ``write`` in a third; returns the items processed.

    ``process`` should return what ``write`` needs (e.g. the batch's frame numbers), not the item itself, so a
    batch of frames is let go as soon as it is processed. The first exception raised in any step is re-raised
    here, after the other threads have stopped."""
    stop = threading.Event()
    errors: list[BaseException] = []
    decoded = _Pipe(depth, stop)
    processed = _Pipe(depth, stop)

    def guarded(step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                step()
            except _Stopped:
                pass
            except BaseException as e:  # handed to the caller, which re-raises it
                errors.append(e)
                stop.set()

        return run

    slots = threading.Semaphore(depth + 1)

    def decode() -> None:
        it = iter(items)
        while True:
            while not slots.acquire(timeout=_POLL):
                if stop.is_set():
                    raise _Stopped
            try:
                item = next(it)
            except StopIteration:
                break
            decoded.put(item)
            del item  # not kept alive while the next one is decoded
        decoded.put(_END)

    def writer() -> None:
        while (got := processed.get()) is not _END:
            write(got)
            del got

    threads = [
        threading.Thread(target=guarded(decode), name=f"{name}-decode", daemon=True),
        threading.Thread(target=guarded(writer), name=f"{name}-write", daemon=True),
    ]
    for t in threads:
        t.start()
    count = 0
    try:
        while (item := decoded.get()) is not _END:
            result = process(item)
            processed.put(result)
            del item, result  # the writer owns the result; the frames are let go before the next batch is decoded
            slots.release()
            count += 1
        processed.put(_END)
        threads[1].join()  # the writer finishes the last batch (or fails) before the caller closes the store
    except _Stopped:
        pass
    except BaseException:
        stop.set()
        raise
    finally:
        stop.set()  # after a failure the others give up; after success they have ended already
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return count
