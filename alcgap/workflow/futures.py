"""Futures in flight: handle each result as it returns (:class:`Pending`), and hold tasks of one
kind back to a site's limit (:class:`Throttle`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Pending:
    """Futures in flight and what to do with each result."""

    handlers: dict[Future, tuple[Callable, Callable | None]] = field(default_factory=dict)
    #: seconds the driver spent in its own handlers (storing labels, submitting the next apps)
    driver_seconds: float = 0.0

    def add(self, future: Future, handler: Callable, on_error: Callable[[BaseException], None] | None = None) -> None:
        """``handler(result)`` when ``future`` succeeds; ``on_error(exception)`` when it fails
        (without one, the exception ends the drain)."""
        self.handlers[future] = (handler, on_error)

    def drain(self) -> None:
        """Handle results as they come, including futures added by handlers, until none is left."""
        while self.handlers:
            done, _ = wait(list(self.handlers), return_when=FIRST_COMPLETED)
            for future in sorted(done, key=id):
                handler, on_error = self.handlers.pop(future)
                started = time.perf_counter()
                error = future.exception()
                if error is None:
                    handler(future.result())
                elif on_error is not None:
                    on_error(error)
                else:
                    raise error
                self.driver_seconds += time.perf_counter() - started


class Throttle:
    """At most ``limit`` tasks of one kind in flight (a site's ``tasks.<kind>.max_concurrent``);
    the others wait, in the order they were submitted, and start as running ones end.
    :meth:`submit` returns at once a future of the task's result."""

    def __init__(self, limit: int):
        self.limit = max(1, int(limit))
        self.running = 0
        #: the most that ran at once (what a test of the limit reads)
        self.peak = 0
        self._waiting: deque = deque()
        self._lock = threading.Lock()

    def submit(self, start: Callable[[], Future]) -> Future:
        result: Future = Future()
        with self._lock:
            self._waiting.append((start, result))
        self._start_next()
        return result

    def _start_next(self) -> None:
        while True:
            with self._lock:
                if self.running >= self.limit or not self._waiting:
                    return
                start, result = self._waiting.popleft()
                self.running += 1
                self.peak = max(self.peak, self.running)
            try:
                task = start()
            except BaseException as err:  # noqa: BLE001  (handed to whoever waits on the result)
                with self._lock:
                    self.running -= 1
                result.set_exception(err)
                continue
            task.add_done_callback(lambda done, result=result: self._finished(done, result))

    def _finished(self, task: Future, result: Future) -> None:
        with self._lock:
            self.running -= 1
        error = task.exception()
        if error is not None:
            result.set_exception(error)
        else:
            result.set_result(task.result())
        self._start_next()
