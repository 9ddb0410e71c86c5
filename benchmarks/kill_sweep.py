"""Kill sweep and recovery time: the quick classical campaign SIGKILLed again and again, resumed each time.

    nice -n 5 python benchmarks/kill_sweep.py [--kills 6] [--seed 0]

Campaign: the classical twin of the demo (``configs/sio2-quick.yaml`` with the Vashishta
reference for CP2K xTB, exploration at 1x and 2x, the stop rule on 2x, budget 6, at most 2
iterations), first run once unkilled. Then the same campaign in a new run directory, driven by
``alcgap run`` / ``alcgap resume`` as subprocesses in sessions of their own: each driver is
SIGKILLed with its process group (the driver and Parsl's interchange; the worker pools, in groups
of their own, go on) after a random time drawn uniformly from [4, 45] s, and resumed at once by
the next. After ``--kills`` kills the last resume runs to the end.

Measured:
- at every kill, which stages had finished and how many labels the store held; after the next
  resume's end, that none of those labels was lost or changed (energy, forces);
- labels computed twice (a structure with the same fingerprint and settings stored twice): 0;
- the final store against the unkilled run's: the same structures (fingerprints of the OK
  labels), and the same stop rule;
- recovery time: seconds from the resume's start to its first new useful work (the first of: a
  label stored that was not there, a stage finished that was not, an MD attempt started), by the
  stage the kill landed in;
- no process of a killed driver (``ALCGAP_RUN_DIR`` of the run) alive after the last resume.
Writes benchmarks/results/kill_sweep.json.
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
RESULTS = ROOT / "benchmarks" / "results"
OUT = RESULTS / "kill_sweep"


def config() -> dict:
    demo = yaml.safe_load((ROOT / "configs" / "sio2-quick.yaml").read_text())
    return {**demo, "name": "kill-sweep", "seed": 5, "threads": 1, "reference": {"kind": "lammps"},
            "main": {**demo["main"], "soap": {**demo["main"]["soap"], "n_sparse": 100}},
            # a checkpoint every 100 of the 600 steps: a kill costs at most 100 steps of MD
            "explore": {**demo["explore"], "sizes": [1, 2], "protocol_scale": 0.004, "checkpoint_every": 100},
            "select": {"budget": 6}, "judge": {**demo["judge"], "target_size": 2, "max_energy_mae": 40.0,
                                               "max_force_rmse": 1.0},
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from alcgap.workflow.lock import stale_processes

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

    rng = random.Random(args.seed)
    events, log = [], open(OUT / "killed.log", "w")
    command = ["run", str(source), "--run-dir", str(killed)]
    for kill in range(args.kills + 1):
        before_stages, before_labels, before_attempts = stages(killed), labels(killed), attempts(killed)
        started = time.time()
        child = driver(command, log)
        recovery = None
        delay = rng.uniform(4.0, 45.0) if kill < args.kills else None
        while child.poll() is None and (delay is None or time.time() - started < delay):
            if recovery is None and kill > 0 and (len(labels(killed)) > len(before_labels)
                                                  or stages(killed) - before_stages
                                                  or attempts(killed) - before_attempts):
                recovery = time.time() - started
            time.sleep(0.2)
        event = {"driver": kill, "command": command[0], "recovery_seconds": recovery,
                 "killed_in_stage_after": sorted(before_stages)[-1:] if before_stages else [],
                 "labels_before": sum(len(v) for v in before_labels.values())}
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            now = stages(killed)
            event.update(killed_after_seconds=round(time.time() - started, 1), stages_done=len(now),
                         running_stage=_running(killed, now), labels_at_kill=sum(len(v) for v in labels(killed).values()))
        else:
            event.update(exit_code=child.returncode, ended_after_seconds=round(time.time() - started, 1))
        events.append(event)
        print(json.dumps(event), flush=True)
        # what was there before this driver must still be there, unchanged
        after = labels(killed)
        event["lost_or_changed"] = sum(1 for key, rows in before_labels.items() if after.get(key, [])[:len(rows)] != rows)
        command = ["resume", str(killed)]
        if "exit_code" in event:
            break
    log.close()

    final, reference = labels(killed), labels(unkilled)
    twice = sum(1 for rows in final.values() if len(rows) > 1)
    ok = lambda table: {key for key, rows in table.items() if rows[0][0] == "ok"}  # noqa: E731
    summary_killed = json.loads((killed / "summary.json").read_text())
    summary_unkilled = json.loads((unkilled / "summary.json").read_text())
    result = {
        "kills": sum(1 for e in events if "killed_after_seconds" in e), "events": events,
        "unkilled_seconds": round(unkilled_seconds, 1),
        "labels_lost_or_changed": sum(e["lost_or_changed"] for e in events),
        "labels_computed_twice": twice,
        "same_structures_as_unkilled": ok(final) == ok(reference),
        "only_in_killed": len(ok(final) - ok(reference)), "only_in_unkilled": len(ok(reference) - ok(final)),
        "stopped_by": [summary_killed["stopped_by"], summary_unkilled["stopped_by"]],
        "processes_of_the_run_left": len(stale_processes(killed)),
        "recovery_seconds_by_stage": [[e["running_stage_of_previous"], e["recovery_seconds"]] for e in _pairs(events)],
    }
    (RESULTS / "kill_sweep.json").write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "events"}, indent=1))
    return 0


def _running(run: Path, done: set[str]) -> str:
    """The stage that was running: the first of the campaign's order not yet done."""
    order = ["dimers", "aux", "bootstrap", "label", "split", "distances"]
    for name in order:
        if f"iter-000/{name}" not in done:
            return f"iter-000/{name}"
    for k in range(1, 10):
        for name in ("fit", "explore_select_label", "judge"):
            if f"iter-{k:03d}/{name}" not in done:
                return f"iter-{k:03d}/{name}"
    return "done"


def _pairs(events: list[dict]):
    """Each resume with the stage its predecessor was killed in."""
    for previous, event in zip(events, events[1:]):
        if "running_stage" in previous:
            yield {**event, "running_stage_of_previous": previous["running_stage"]}


if __name__ == "__main__":
    sys.exit(main())
