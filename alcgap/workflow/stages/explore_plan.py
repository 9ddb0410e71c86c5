"""The exploration stage of one iteration as explicit state: tasks, budget, picks.

An iteration runs its MD tasks, and labels what their monitors flagged, within one budget shared
by all tasks. The share of each task is fixed before any task runs (``quotas``: the budget split
in task order), and each task's pick compares only with the training set, so what is chosen does
not depend on which task finishes first. After every task has picked, what is left of the budget
goes to one ``leftover`` pick over all tasks' flagged frames (compared with the training set and
every earlier pick), and, when nothing at all was flagged but a gate failed, to a ``fallback``
pick of the most informative environments of the runs. Every pick and MD outcome is written to
``exploration.json`` as it happens, so a resumed iteration continues with exactly the same budget.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from alcgap.md.failures import classify_md_failure
from alcgap.md.protocols import reached_temperature
from alcgap.workflow.state import located, relocatable, write_json_atomic

LEFTOVER, FALLBACK = "leftover", "fallback"


@dataclass(frozen=True)
class ExploreTask:
    """One exploration MD run: a seed, a melt temperature and a cell multiplier."""

    iteration: int
    seed: int
    temperature: float
    size: int

    @property
    def id(self) -> str:
        return f"s{self.seed}-T{self.temperature:g}-x{self.size}"


def quotas(tasks: list[ExploreTask], budget: int) -> dict[str, int]:
    """The budget split over the tasks in their order: the first ``budget % n`` get one more."""
    n = len(tasks)
    return {task.id: budget // n + (1 if index < budget % n else 0) for index, task in enumerate(tasks)}


def md_summary(folder: Path, task: ExploreTask, error: str | None = None) -> dict:
    """What one finished MD task showed, from its ``result.json``: the verdict over every
    monitored frame ("clean" | "clustered" | "failed"), the step it first went wrong, the
    temperature it reached. ``error``: how its process ended, when it failed (the launcher's
    exit code: a rank killed, a node lost), for a task that left no result of its own."""

    path = folder / "result.json"
    result = json.loads(path.read_text()) if path.exists() else {"failed": True, "error": f"no result.json: {error or 'killed'}"}
    if result.get("failed"):
        kind, whose = classify_md_failure(str(result.get("error", "")), path.exists())
        return {"verdict": "failed", "why": str(result.get("error", ""))[-500:], "first_bad_step": None, "size": task.size,
                "failure": kind, "failure_of": whose}
    reached = reached_temperature(result.get("segment_temperatures", []), task.temperature)
    summary = {"size": task.size, "steps_done": result["steps_done"], "steps_requested": result["steps_requested"],
               "n_monitored": result.get("n_monitored", 0), "n_flagged": result.get("n_flagged", 0),
               "flagged_atom_fraction": result.get("n_flagged_atoms", 0) / max(1, result.get("n_monitored", 0) * result["n_atoms"]),
               "n_clustered": result.get("n_clustered", 0), "max_variance": result.get("max_variance"),
               "min_distances": result.get("min_distances", {}), "temperature": reached,
               "peak_temperature": result.get("peak_temperature")}
    if result.get("stopped_early"):
        step = result.get("first_clustered_step")
        stop_step = _step_of(result.get("stop_reason", ""), result["steps_done"])
        kind, whose = classify_md_failure(result.get("stop_reason"))
        # stopped by the package's own monitors (collapse, a non-finite energy): a result of the
        # potential; ended by LAMMPS (lost atoms, a pair inside the table, any other error): the
        # run did not finish, and a resume runs it again
        verdict = "failed" if str(result.get("stop_reason", "")).startswith("LAMMPS error") else "clustered"
        summary.update(verdict=verdict, why=f"stopped early: {result.get('stop_reason')}",
                       first_bad_step=min(s for s in (step, stop_step) if s is not None), failure=kind, failure_of=whose)
    elif result.get("first_clustered_step") is not None:
        summary.update(verdict="clustered", why=result.get("first_clustered"), first_bad_step=result["first_clustered_step"])
    else:
        summary.update(verdict="clean", why="", first_bad_step=None)
    return summary


def _step_of(reason: str, default: int) -> int:
    """The step in "step 450: collapse ..." or "LAMMPS error in steps 280-290: ..."."""

    match = re.search(r"steps? (\d+)", reason)
    return int(match.group(1)) if match else default


@dataclass
class Exploration:
    """State of one iteration's exploration; ``save()`` after every change (see the module docstring)."""

    path: Path
    budget: int
    tasks: list[ExploreTask]
    quotas: dict[str, int] = field(default_factory=dict)
    #: task id -> md_summary
    md: dict[str, dict] = field(default_factory=dict)
    #: pick name (a task id, "leftover", "fallback") -> what the select app returned
    picks: dict[str, dict] = field(default_factory=dict)
    #: "explored" -> the draw of this iteration's explored test frames (judge.test_frames; not
    #: a pick: it is not of the budget, and never trains)
    tests: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, tasks: list[ExploreTask], budget: int) -> "Exploration":
        state = cls(Path(path), budget, list(tasks), quotas(list(tasks), budget))
        if state.path.exists():
            saved = json.loads(state.path.read_text())
            if saved["budget"] != budget or saved["tasks"] != [t.id for t in tasks]:
                raise ValueError(f"{path}: this iteration started with budget {saved['budget']} and tasks "
                                 f"{saved['tasks']}; restore select.budget and explore settings to resume it")
            saved = located(saved, state.path.parent.parent)
            state.md, state.picks, state.tests = saved["md"], saved["picks"], saved.get("tests", {})
        return state

    def save(self) -> None:
        write_json_atomic(self.path, relocatable({
            "budget": self.budget, "tasks": [t.id for t in self.tasks], "quotas": self.quotas,
            "md": self.md, "picks": self.picks, "tests": self.tests, "task_settings": [asdict(t) for t in self.tasks]},
            self.path.parent.parent))

    def record_md(self, task: ExploreTask, summary: dict) -> None:
        self.md[task.id] = summary
        self.save()

    def record_pick(self, name: str, summary: dict) -> None:
        self.picks[name] = summary
        self.save()

    def chosen(self) -> int:
        return sum(p.get("n_chosen", 0) for p in self.picks.values())

    def left(self) -> int:
        return max(0, self.budget - self.chosen())

    def pick_paths(self) -> list[str]:
        """Files of the picks made so far, in a fixed order (tasks, then leftover, then fallback)."""
        order = [t.id for t in self.tasks] + [LEFTOVER, FALLBACK]
        return [self.picks[name]["path"] for name in order if name in self.picks and self.picks[name].get("n_chosen")]


class PlanEntry:
    """One entry of an exploration plan (``kind``: "md", "picks" or "tests"), as a checkpoint record
    (:mod:`alcgap.workflow.checkpoint`): written to ``exploration.json`` at once. ``redo(entry)``:
    an entry found there that is to run again (a failed MD task, on resume)."""

    def __init__(self, plan: Exploration, kind: str, name: str, redo=lambda entry: False):
        self.plan, self.kind, self.name, self.redo = plan, kind, name, redo

    def read(self) -> dict | None:
        entry = getattr(self.plan, self.kind).get(self.name)
        return None if entry is None or self.redo(entry) else entry

    def write(self, result: dict) -> None:
        getattr(self.plan, self.kind)[self.name] = result
        self.plan.save()
