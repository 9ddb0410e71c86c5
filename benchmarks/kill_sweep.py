"""Kill sweep and recovery time: the quick classical campaign SIGKILLed again and again, resumed each time.

    nice -n 5 python benchmarks/kill_sweep.py [--kills 6] [--seed 0]

Campaign: the classical twin of the demo (``configs/sio2-quick.yaml`` with the Vashishta
reference for CP2K xTB, exploration at 1x and 2x, the stop rule on 2x, budget 6, at most 2
iterations), first run once unkilled. Then the same campaign in a new run directory, driven by
``alcgap run`` / ``alcgap resume`` as subprocesses in sessions of their own: each driver is
SIGKILLed with its process group (the driver and Parsl's interchange; the worker pools, in groups
of their own, would go on: the driver's watchdog stops them) in the stage it is aimed at
(``PLAN``: the bootstrap; fit, exploration MD and labelling of iteration 1; fit and MD of
iteration 2), a random 0-1 s after that stage began, and resumed at once by the next. After ``--kills``
kills the last resume runs to the end. The suite runs the same sweep (tests/test_campaign.py).

Measured:
- at every kill, which stages had finished and how many labels the store held; after the next
  resume's end, that none of those labels was lost or changed (energy, forces);
- labels computed twice (a structure with the same fingerprint and settings stored twice): 0;
- the final store against the unkilled run's: the same structures (fingerprints of the OK
  labels), and the same stop rule;
- recovery time: seconds from the resume's start to its first new useful work (the first of: a
  file written in an iteration's folder after the resume took the run's lock, a label stored that was not there, a stage finished
  that was not, an MD attempt started), by the stage the kill landed in;
- no process of a killed driver (``ALCGAP_RUN_DIR`` of the run) alive after the last resume.
Writes benchmarks/kill_sweep.json (beside this script, with the machine and date); the runs and
logs go to benchmarks/results/kill_sweep/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import ARTEFACTS, summary_path, write_summary  # noqa: E402

OUT = ARTEFACTS / "kill_sweep"


def config() -> dict:
    demo = yaml.safe_load((ROOT / "configs" / "sio2-quick.yaml").read_text())
    return {**demo, "name": "kill-sweep", "seed": 5, "threads": 1, "reference": {"kind": "lammps"},
            "main": {**demo["main"], "soap": {**demo["main"]["soap"], "n_sparse": 100}},
            # a checkpoint every 100 of the 600 steps: a kill costs at most 100 steps of MD
            "explore": {**demo["explore"], "sizes": [1, 2], "seeds": [1], "protocol_scale": 0.004,
                        "checkpoint_every": 100},
            "select": {"budget": 6}, "judge": {**demo["judge"], "target_size": 2, "max_energy_mae": 40.0,
                                               "force_tolerance": 1.0},
            "stop": {"max_iterations": 2}}


def stages(run: Path) -> set[str]:
    done = set()
    for state in run.glob("iter-*/state.json"):
        try:
            done |= {f"{state.parent.name}/{name}" for name in json.loads(state.read_text())["stages"]}
        except (OSError, ValueError):
            pass
    return done


def labels(run: Path) -> dict[str, tuple]:
    """fingerprint/settings -> (status, energy, forces checksum) of every stored row."""
    import ase.db
    import numpy as np

    if not (run / "data.db").exists():
        return {}
    out = {}
    for row in ase.db.connect(run / "data.db").select():
        key = f"{row.fingerprint}/{row.settings_hash}"
        forces = float(np.abs(row.forces).sum()) if row.get("forces") is not None else None
        out.setdefault(key, []).append((row.status, row.get("energy"), forces))
    return out


def attempts(run: Path) -> set[str]:
    """MD attempt folders (each attempt makes a new one) and finished MD tasks."""
    return {str(p) for p in run.glob("iter-*/md/*/.attempt-*")} | {str(p) for p in run.glob("iter-*/md/*/result.json")}


def driver(args: list[str], log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "alcgap.cli", *args], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)


#: the stages of iteration 0 and of every later one, in order ("md": exploration MD with nothing
#: picked yet; "label": picks made, selected frames being labelled)
BOOTSTRAP = ("dimers", "aux", "bootstrap", "label", "split", "distances")
ORDER = ("fit", "md", "label", "judge")


def phase(run: Path) -> tuple[int, str]:
    """(iteration, stage) the campaign is in: a stage of ``BOOTSTRAP`` in iteration 0, of
    ``ORDER`` in later ones; (99, "done") at the end."""
    stage = _running(run, stages(run))
    if stage == "done":
        return 99, "done"
    folder, name = stage.split("/")
    iteration = int(folder.split("-")[1])
    if name == "explore_select_label":
        return iteration, "label" if list((run / folder / "select").glob("*.xyz")) else "md"
    return iteration, name


#: the stage each kill aims at, in order: the bootstrap MD and labels, then fit, exploration MD
#: and labelling of iteration 1, then fit and MD of iteration 2
PLAN = ((0, "bootstrap"), (1, "fit"), (1, "md"), (1, "label"), (2, "fit"), (2, "md"))


def _key(where: tuple[int, str]) -> tuple[int, int]:
    iteration, name = where
    return iteration, (BOOTSTRAP if iteration == 0 else ORDER).index(name) if iteration < 99 else 0


def _wrote_since(run: Path, started: float) -> bool:
    """Has anything in the run's iteration folders (a fit's files, an MD attempt's, a pick) been
    written since ``started``?"""
    for path in run.glob("iter-*/**/*"):
        try:
            if path.stat().st_mtime > started:
                return True
        except OSError:
            pass
    return False


def _holds(run: Path, pid: int) -> bool:
    """Has driver ``pid`` taken the run (its lock's owner record names it)?"""
    try:
        return json.loads((run / "driver.json").read_text()).get("pid") == pid
    except (OSError, ValueError):
        return False


def _reached(now: tuple[int, str], target: tuple[int, str]) -> bool:
    """Is the campaign at ``target`` or past it? (A stage may be over between two polls.)"""
    return _key(now) >= _key(target)


def sweep(source: Path, run: Path, log, *, kills: int = 6, seed: int = 0, first_alone: bool = False,
          on_kill=None) -> list[dict]:
    """Run ``source`` in ``run`` as ``alcgap run``, SIGKILL it once the stage of ``PLAN[k]`` has
    run for a random time (uniform in [0, 1] s; the kill lands in the next stage when that one
    ends sooner), resume it at once with ``alcgap resume``, ``kills`` times; then let the last
    resume finish. ``first_alone``: the first kill hits the driver alone (an OOM kill, a lost
    login node), not its process group. ``on_kill(event)`` runs after each kill, before the
    resume. One event per driver: what it found, when it was killed, its recovery time."""
    rng = random.Random(seed)
    events = []
    command = ["run", str(source), "--run-dir", str(run)]
    for kill in range(kills + 1):
        before_stages, before_labels, before_attempts = stages(run), labels(run), attempts(run)
        started = time.time()
        child = driver(command, log)
        recovery, target, seen, delay = None, PLAN[kill % len(PLAN)] if kill < kills else None, None, rng.uniform(0.0, 1.0)
        polls, holding = 0, None
        while child.poll() is None:
            polls += 1
            if holding is None and _holds(run, child.pid):
                holding = time.time()  # what the dead driver's processes wrote is before this
            if recovery is None and kill > 0 and holding is not None and (
                    _wrote_since(run, holding) or stages(run) - before_stages
                                                  or attempts(run) - before_attempts
                                                  or (polls % 10 == 0 and len(labels(run)) > len(before_labels))):
                recovery = time.time() - started
            if target is not None:
                if seen is None and holding is not None and _reached(phase(run), target):
                    seen = time.time()
                if seen is not None and time.time() - seen >= delay:
                    break
            time.sleep(0.02)
        event = {"driver": kill, "command": command[0], "recovery_seconds": recovery,
                 "aimed_at": "/".join(map(str, target)) if target else None,
                 "labels_before": sum(len(v) for v in before_labels.values())}
        if child.poll() is None:
            running = "/".join(map(str, phase(run)))
            stage = _running(run, stages(run))
            (os.kill if kill == 0 and first_alone else os.killpg)(child.pid, signal.SIGKILL)
            child.wait()
            event.update(killed_after_seconds=round(time.time() - started, 1), killed_in=running, running_stage=stage,
                         driver_alone=kill == 0 and first_alone, labels_at_kill=sum(len(v) for v in labels(run).values()),
                         pid=child.pid)
            if on_kill is not None:
                on_kill(event)
        else:
            event.update(exit_code=child.returncode, ended_after_seconds=round(time.time() - started, 1))
        events.append(event)
        print(json.dumps(event), flush=True)
        # what was there before this driver must still be there, unchanged
        after = labels(run)
        event["lost_or_changed"] = sum(1 for key, rows in before_labels.items() if after.get(key, [])[:len(rows)] != rows)
        command = ["resume", str(run)]
        if "exit_code" in event:
            break
    return events


def compare(killed: Path, unkilled: Path, events: list[dict]) -> dict:
    """The killed run's store and stop against the unkilled one's."""
    from alcgap.workflow.lock import stale_processes
    from alcgap.workflow.state import read_run_json

    final, reference = labels(killed), labels(unkilled)
    ok = lambda table: {key for key, rows in table.items() if rows[0][0] == "ok"}  # noqa: E731
    by_stage: dict[str, list[float]] = {}
    for pair in _pairs(events):
        by_stage.setdefault(pair["killed_in_of_previous"], []).append(round(pair["recovery_seconds"], 1))
    return {
        "kills": sum(1 for e in events if "killed_after_seconds" in e),
        "killed_in": [e.get("killed_in") for e in events if "killed_after_seconds" in e],
        "labels_lost_or_changed": sum(e["lost_or_changed"] for e in events),
        "labels_computed_twice": sum(1 for rows in final.values() if len(rows) > 1),
        "same_structures_as_unkilled": ok(final) == ok(reference),
        "only_in_killed": len(ok(final) - ok(reference)), "only_in_unkilled": len(ok(reference) - ok(final)),
        "stopped_by": [read_run_json(killed / "summary.json")["stopped_by"],
                       read_run_json(unkilled / "summary.json")["stopped_by"]],
        "processes_of_the_run_left": len(stale_processes(killed)),
        "recovery_seconds_by_stage": by_stage,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    source = OUT / "campaign.yaml"
    source.write_text(yaml.safe_dump(config(), sort_keys=False))
    unkilled, killed = OUT / "unkilled", OUT / "killed"
    for folder in (unkilled, killed):
        if folder.exists():
            subprocess.run(["rm", "-rf", str(folder)], check=True)
    with open(OUT / "unkilled.log", "w") as log:
        started = time.time()
        assert driver(["run", str(source), "--run-dir", str(unkilled)], log).wait() == 0
        unkilled_seconds = time.time() - started
    print(f"unkilled: {unkilled_seconds:.0f} s", flush=True)
    with open(OUT / "killed.log", "w") as log:
        started = time.time()
        events = sweep(source, killed, log, kills=args.kills, seed=args.seed)
        killed_seconds = time.time() - started
    result = {**compare(killed, unkilled, events), "unkilled_seconds": round(unkilled_seconds, 1),
              "killed_seconds": round(killed_seconds, 1), "events": events}
    write_summary(summary_path(__file__), result)
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=1))
    return 0


def _running(run: Path, done: set[str]) -> str:
    """The stage that was running: the first of the campaign's order not yet done."""
    for name in BOOTSTRAP:
        if f"iter-000/{name}" not in done:
            return f"iter-000/{name}"
    for k in range(1, 10):
        for name in ("fit", "explore_select_label", "judge"):
            if f"iter-{k:03d}/{name}" not in done:
                return f"iter-{k:03d}/{name}"
    return "done"


def _pairs(events: list[dict]):
    """Each resume that found new work, with the stage its predecessor was killed in."""
    for previous, event in zip(events, events[1:]):
        if "killed_in" in previous and event["recovery_seconds"] is not None:
            yield {**event, "killed_in_of_previous": previous["killed_in"]}


if __name__ == "__main__":
    sys.exit(main())
