"""Live progress of a running campaign: the stage, MD tasks with their steps and rate, labels
done out of submitted (failed, retried), time elapsed and an estimate of what is left.

The driver keeps a :class:`ProgressBoard`. Every ``poll`` seconds a thread reads where each
running MD task is (the last line of its attempt's ``monitor.jsonl``), writes the snapshot to
``<run>/progress.json`` (what ``alcgap status`` shows from another shell) and shows it: a rich
live panel on a terminal, or, in a log or under CI, one plain line every ``every`` seconds.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.text import Text

from alcgap.workflow.state import write_json_atomic

#: a line of the board at most this wide: the board reads in an 80-column log
WIDTH = 78


def _last_step(folder: Path) -> int | None:
    """The last monitored step of an MD task: its newest attempt's monitor.jsonl, or the
    promoted one of a finished task."""
    candidates = sorted(folder.glob(".attempt-*/monitor.jsonl"), key=os.path.getmtime) + [folder / "monitor.jsonl"]
    for path in reversed(candidates):
        try:
            with open(path, "rb") as stream:
                stream.seek(max(0, path.stat().st_size - 4096))
                lines = stream.read().decode(errors="replace").splitlines()
            for line in reversed(lines):
                try:
                    return int(json.loads(line)["step"])
                except (ValueError, KeyError):
                    continue
        except OSError:
            continue
    return None


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(max(0, seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class ProgressBoard:
    """What the driver is doing, as counters it updates and a thread that shows them."""

    def __init__(self, run_dir: str | os.PathLike, *, live: bool | None = None, poll: float = 2.0, every: float = 30.0,
                 console: Console | None = None):
        self.run_dir = Path(run_dir)
        self.console = console or Console(stderr=True)
        # a terminal gets the live panel; a log, a pipe or CI gets plain lines
        self.live = (self.console.is_terminal and not os.environ.get("CI")) if live is None else live
        self.poll, self.every = poll, every
        self.started = time.time()
        self.stage, self.stage_started = "starting", time.time()
        self.md: dict[str, dict] = {}
        self.labels = {"submitted": 0, "done": 0, "failed": 0, "retried": 0}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._live = None
        self._last_line = 0.0

    # -- what the driver reports
    def set_stage(self, name: str) -> None:
        with self._lock:
            self.stage, self.stage_started = name, time.time()
            self.labels = {"submitted": 0, "done": 0, "failed": 0, "retried": 0}
            self.md = {}

    def md_started(self, task_id: str, folder: str | os.PathLike, steps: int) -> None:
        with self._lock:
            self.md[task_id] = {"folder": str(folder), "steps": int(steps), "step": 0, "state": "running",
                                "since": time.time(), "rate": None}

    def md_ended(self, task_id: str, verdict: str) -> None:
        with self._lock:
            if task_id in self.md:
                self.md[task_id].update(state=verdict, step=self.md[task_id]["steps"] if verdict != "failed"
                                        else self.md[task_id]["step"])

    def label_submitted(self) -> None:
        with self._lock:
            self.labels["submitted"] += 1

    def label_done(self, ok: bool, retries: int = 0) -> None:
        with self._lock:
            self.labels["done"] += 1
            self.labels["failed"] += 0 if ok else 1
            self.labels["retried"] += int(retries > 0)

    # -- the snapshot
    def snapshot(self) -> dict:
        now = time.time()
        with self._lock:
            for task in self.md.values():
                if task["state"] == "running":
                    step = _last_step(Path(task["folder"]))
                    if step is not None:
                        task["rate"] = step / max(1e-9, now - task["since"]) if step else task["rate"]
                        task["step"] = step
            md = {k: dict(v) for k, v in self.md.items()}
            labels = dict(self.labels)
            stage, stage_started = self.stage, self.stage_started
        left = []
        for task in md.values():
            if task["state"] == "running" and task["rate"]:
                left.append((task["steps"] - task["step"]) / task["rate"])
        pending = labels["submitted"] - labels["done"]
        if pending and labels["done"]:
            left.append(pending * (now - stage_started) / labels["done"])
        return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "stage": stage, "elapsed_s": round(now - self.started, 1),
                "stage_elapsed_s": round(now - stage_started, 1), "stage_left_s": round(max(left), 1) if left else None,
                "md": {k: {key: v[key] for key in ("steps", "step", "state", "rate")} for k, v in md.items()},
                "labels": labels, "pid": os.getpid()}

    @staticmethod
    def lines(snap: dict) -> list[str]:
        """The snapshot as short lines (each under 80 characters; a long stage or task name is
        wrapped, never cut)."""
        md, labels = snap.get("md", {}), snap.get("labels", {})
        done = sum(1 for t in md.values() if t["state"] != "running")
        out = textwrap.wrap(snap["stage"], WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""]
        out += [f"  elapsed {_clock(snap['elapsed_s'])}; this stage {_clock(snap['stage_elapsed_s'])}, "
                f"about {_clock(snap.get('stage_left_s'))} left"]
        if md:
            out.append(f"  MD tasks {done}/{len(md)} done")
            for name, task in md.items():
                rate = f"{task['rate']:.1f} steps/s" if task.get("rate") else "-"
                if len(name) > 28:  # the whole name on a line of its own, the figures under it
                    out += textwrap.wrap(name, WIDTH - 4, initial_indent="    ", subsequent_indent="    ")
                    name = ""
                out.append(f"    {name:28s} {task['step']:>7d}/{task['steps']:<7d} {rate:>14s} {task['state']}")
        if labels.get("submitted"):
            out.append(f"  labels {labels['done']}/{labels['submitted']} done, {labels['failed']} failed, "
                       f"{labels['retried']} retried")
        return out

    # -- showing it
    def _render(self, snap: dict) -> Text:
        return Text("\n".join(self.lines(snap)))

    def _tick(self) -> None:
        snap = self.snapshot()
        try:
            write_json_atomic(self.run_dir / "progress.json", snap)
        except OSError:
            pass
        if self._live is not None:
            self._live.update(self._render(snap))
        elif time.time() - self._last_line >= self.every:
            self._last_line = time.time()
            self.console.log(" | ".join(line.strip() for line in self.lines(snap)))

    def start(self) -> "ProgressBoard":
        if self.live:
            self._live = Live(self._render(self.snapshot()), console=self.console, refresh_per_second=2, transient=True)
            self._live.start()
        self._last_line = time.time()

        def loop():
            while not self._stop.wait(self.poll):
                try:
                    self._tick()
                except Exception as err:  # noqa: BLE001  (progress must never end a campaign)
                    print(f"progress display failed: {err}", file=sys.stderr)
                    return

        self._thread = threading.Thread(target=loop, name="alcgap-progress", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._live is not None:
            self._live.stop()
            self._live = None
        try:
            self._tick()  # the last state, for `alcgap status`
        except Exception:  # noqa: BLE001
            pass
