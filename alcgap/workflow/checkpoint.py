"""One way to say "this is done": read a finished result back, or run the work and keep its result.

Labels (``label.json`` in a label's folder), survival runs (``record.json``), the picks and MD
outcomes of an exploration (entries of ``exploration.json``) and the stages of an iteration
(entries of ``state.json``) are each a :class:`Record`. :func:`done_or_run` reads a record back
when it holds a result, else runs the work and writes the result atomically; :func:`done_or_submit`
does the same for work that returns a future (a Parsl app), writing in the driver when the future returns.
A killed run leaves either no result or a whole one, never a torn one (see :mod:`.state`).
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Protocol

from alcgap.workflow.futures import Pending
from alcgap.workflow.state import IterationState, write_json_atomic


class Record(Protocol):
    """Where one result is kept: ``read()`` gives it back (None: not done), ``write`` keeps it."""

    def read(self) -> Any | None: ...

    def write(self, result: Any) -> None: ...


class JsonRecord:
    """A result in its own JSON file; ``accept(data)`` says whether a result found there is this
    work's (a survival record made with other settings is not)."""

    def __init__(self, path: str | os.PathLike, accept: Callable[[Any], bool] | None = None):
        self.path = Path(path)
        self.accept = accept

    def read(self) -> Any | None:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return data if self.accept is None or self.accept(data) else None

    def write(self, result: Any) -> None:
        write_json_atomic(self.path, result)


class StageRecord:
    """A stage's outputs, an entry of its iteration's ``state.json``."""

    def __init__(self, state: IterationState, stage: str):
        self.state, self.stage = state, stage

    def read(self) -> dict | None:
        return self.state.stages.get(self.stage)

    def write(self, result: dict) -> None:
        self.state.finish(self.stage, **result)


def done_or_run(record: Record, run: Callable[[], Any], *, keep: Callable[[Any], bool] = lambda result: True,
                encode: Callable[[Any], Any] = lambda result: result,
                decode: Callable[[Any], Any] = lambda held: held) -> Any:
    """The record's result when it is there, else ``run()``'s, written to the record when
    ``keep(result)`` (a result that a rerun may improve on, a time-out say, is not kept).
    ``encode`` turns a result into what the record holds, ``decode`` what it holds into a result."""
    done = record.read()
    if done is not None:
        return decode(done)
    result = run()
    if keep(result):
        record.write(encode(result))
    return result


def done_or_submit(record: Record, submit: Callable[[], Future], pending: Pending, then: Callable[[Any], None], *,
                   on_error: Callable[[BaseException], None] | None = None) -> None:
    """:func:`done_or_run` for work that returns a future: ``then(result)`` at once with the
    record's result when it is there; else ``submit()``, and when its future returns (in the
    driver, as :class:`Pending` drains) the result is written to the record, then ``then(result)``."""
    done = record.read()
    if done is not None:
        then(done)
        return

    def finished(result: Any) -> None:
        record.write(result)
        then(result)

    pending.add(submit(), finished, on_error)
