"""One driver per run directory; what a dead driver left running is stopped, and nothing else."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alcgap.workflow.lock import RUN_MARKER, CampaignBusy, RunLock, stale_processes


def _sleeper(env=None, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env, cwd=cwd,
                            start_new_session=True)


def test_a_second_driver_is_refused_naming_the_first(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from pathlib import Path
from alcgap.workflow.lock import RunLock
with RunLock({str(tmp_path)!r}):
    print("held", flush=True)
    time.sleep(600)
"""], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(CampaignBusy, match=rf"another driver \(pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # the kernel dropped the dead holder's lock: the next driver gets it at once
    with RunLock(tmp_path) as lock:
        assert os.environ[RUN_MARKER] == os.path.realpath(tmp_path)
        assert lock.owner()["pid"] == os.getpid()
    assert RUN_MARKER not in os.environ and not (tmp_path / "driver.json").exists()


def test_what_a_dead_driver_left_running_is_stopped_and_nothing_else(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    orphan = _sleeper(env=dict(os.environ, **{RUN_MARKER: os.path.realpath(run)}))
    other_run = _sleeper(env=dict(os.environ, **{RUN_MARKER: os.path.realpath(tmp_path / "other")}))
    onlooker = _sleeper(cwd=run)  # a shell or an editor in the run directory: not the campaign's
    try:
        time.sleep(0.2)
        assert stale_processes(run) == [orphan.pid]
        with RunLock(run, grace=2.0) as lock:
            assert lock.stopped == [orphan.pid]
        assert orphan.wait(timeout=5) is not None
        assert other_run.poll() is None and onlooker.poll() is None
    finally:
        for process in (orphan, other_run, onlooker):
            process.kill()
            process.wait()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace_time(tmp_path):
    from alcgap.procs import stop_processes

    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                                 "signal.SIG_IGN); print('ready', flush=True); time.sleep(600)"],
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert stubborn.stdout.readline().strip() == "ready"
        started = time.monotonic()
        assert stop_processes([stubborn.pid], grace=0.5) == [stubborn.pid]
        assert stubborn.wait(timeout=5) == -9 and time.monotonic() - started < 5
    finally:
        stubborn.kill()
        stubborn.wait()


def test_a_dead_drivers_orphans_that_lost_their_mark_are_stopped(tmp_path):
    """Parsl's interchange renames itself, which wipes its environment in /proc: no mark to find
    it by. It is still the dead driver's orphan (reparented to init, in the driver's session)."""
    run = tmp_path / "run"
    driver = subprocess.Popen([sys.executable, "-c", f"""
import subprocess, sys, time
from alcgap.workflow.lock import RunLock
lock = RunLock({str(run)!r}).acquire()
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env={{}})  # no mark
print(child.pid, flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True, start_new_session=True)
    orphan = int(driver.stdout.readline())
    bystander = _sleeper()  # another session: never touched
    try:
        assert stale_processes(run) == []  # the mark is gone
        driver.kill()  # the driver alone: its child goes on, reparented
        driver.wait()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[1] != "1" and time.monotonic() < deadline:
            time.sleep(0.05)
        with RunLock(run, grace=2.0) as lock:
            assert orphan in lock.stopped
        deadline = time.monotonic() + 5
        while Path(f"/proc/{orphan}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{orphan}").exists() or "Z" in Path(f"/proc/{orphan}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert bystander.poll() is None
    finally:
        for pid in (orphan,):
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        bystander.kill()
        bystander.wait()


def test_progress_shows_md_steps_rate_and_labels_in_80_columns(tmp_path):
    """The live board reads a running MD task's attempt as it grows; plain lines when not on a
    terminal; progress.json for `alcgap status`."""
    import io
    import json
    import time

    from rich.console import Console

    from alcgap.workflow.progress import ProgressBoard

    stream = io.StringIO()
    board = ProgressBoard(tmp_path, live=False, poll=0.1, every=0.2, console=Console(file=stream, width=80))
    board.set_stage("iteration 2: explore_select_label")
    task = tmp_path / "md" / "s2001-T4000-x10"
    attempt = task / ".attempt-abc"
    attempt.mkdir(parents=True)
    board.md_started("s2001-T4000-x10", task, 450)
    board.label_submitted()
    board.label_submitted()
    board.label_done(ok=True)
    board.label_done(ok=False, retries=2)
    board.start()
    for step in (0, 10, 20, 30):
        with open(attempt / "monitor.jsonl", "a") as out:
            out.write(json.dumps({"step": step}) + "\n")
        time.sleep(0.15)
    board.stop()
    snap = json.loads((tmp_path / "progress.json").read_text())
    task_state = snap["md"]["s2001-T4000-x10"]
    assert task_state["step"] == 30 and task_state["steps"] == 450 and task_state["rate"] > 0
    assert snap["labels"] == {"submitted": 2, "done": 2, "failed": 1, "retried": 1}
    lines = ProgressBoard.lines(snap)
    assert all(len(line) <= 80 for line in lines) and "30/450" in "\n".join(lines)
    assert "iteration 2: explore_select_label" in stream.getvalue()  # plain lines, not a live panel
