"""The explore stage of an iteration: MD tasks -> each task's pick (its fixed share of the budget)
as it finishes -> labels as soon as picked; then one pick of what is left of the budget over every
task, and a fallback pick when nothing was flagged but a gate failed. The plan, its budget and
what each task and pick did are :class:`~.explore_plan.Exploration` (``exploration.json``)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import ase.io
from ase import Atoms

from alcgap.config import CampaignConfig, ExploreSettings
from alcgap.explore.distances import DistanceTable, clustering_criteria
from alcgap.explore.picks import PickSettings, draw_test_frames, frozen_radius, pick_environments
from alcgap.provenance import centre_atoms
from alcgap.md.lammps import flagged_to_checkpoint
from alcgap.md.protocols import exploration_protocol
from alcgap.md.task import MDTask, load_task
from alcgap.store import Provenance
from alcgap.workflow.checkpoint import done_or_submit
from alcgap.workflow.context import Run
from alcgap.workflow.futures import Pending
from alcgap.workflow.stages.explore_plan import FALLBACK, LEFTOVER, Exploration, ExploreTask, PlanEntry, md_summary
from alcgap.workflow.stages.label import Labeller
from alcgap.workflow.state import IterationState, read_frames, write_frames_atomic


def tasks_of(config: CampaignConfig, iteration: int) -> list[ExploreTask]:
    explore = config.explore
    return [ExploreTask(iteration, seed + 1000 * iteration, t, size)
            for size in explore.sizes for t in explore.temperatures for seed in explore.seeds]


def pick_settings(config: CampaignConfig) -> PickSettings:
    radius = config.label.carve_radius or config.main.soap.cutoff
    return PickSettings(species=tuple(config.species), whole_frame_atoms=config.label.max_atoms or config.data.n_atoms,
                        carve_radius=radius, frozen_radius=frozen_radius(radius, config.label.carve_frozen_radius),
                        relax_boundary=config.label.relax_boundary, min_soap_distance=config.select.min_soap_distance)


def flagged_of(folder: Path) -> str:
    """The frames an MD task flagged: its ``flagged.xyz``, or for a task killed before it ended,
    those up to its last checkpoint."""
    salvaged = folder / "flagged-to-checkpoint.xyz"
    return str(salvaged if not (folder / "result.json").exists() and salvaged.exists() else folder / "flagged.xyz")


def selection_details(atoms: Atoms) -> dict:
    """What the store keeps of why and where a selected frame was cut: its centre atoms, the MD
    step and task it came from, and a carved cell's carving parameters."""
    details = {"centre_atoms": centre_atoms(atoms)}
    for key, value in atoms.info.items():
        if key.startswith("carve") or key in ("md_step", "task", "selection_kind", "selection_score"):  # carve_failed too
            details[key] = value.tolist() if hasattr(value, "tolist") else value
    return details


# -- apps and task files ----------------------------------------------------------------------

def frames_of(paths: list[str], onsets: dict[str, int] | None) -> list[Atoms]:
    """The frames of MD tasks' files (a task's frames live in its folder, named by the task id),
    up to the step each task first went wrong (``onsets``: later frames follow from the model's
    error, not from the material)."""
    frames = []
    for path in paths:
        if not Path(path).exists():
            continue
        for frame in read_frames(path):
            frame.info.setdefault("task", Path(path).parent.name)
            onset = (onsets or {}).get(frame.info["task"])
            if onset is None or int(frame.info.get("md_step", 0)) <= onset:
                frames.append(frame)
    return frames


def draw_tests(trajectory_paths: list[str], settings: PickSettings, n: int, seed: int, out_path: str, *,
               onsets: dict[str, int] | None = None, exclude: list[tuple] = (), model_xml: str | None = None) -> dict:
    """The app: this iteration's explored test frames (:func:`alcgap.explore.picks.draw_test_frames`)
    from its runs' trajectories, written to ``out_path``."""
    chosen, record = draw_test_frames(frames_of(trajectory_paths, onsets), settings, n, seed, exclude=exclude,
                                      model_xml=model_xml)
    write_frames_atomic(out_path, chosen)
    return {"path": out_path, **record}


def pick(candidate_paths: list[str], known_paths: list[str], settings: PickSettings, budget: int,
         variance_threshold: float | None, out_path: str, *, fallback: bool = False, onsets: dict[str, int] | None = None,
         select_fn=None, model_xml: str | None = None) -> dict:
    """The app: choose among the frames of ``candidate_paths`` (:func:`alcgap.explore.picks.pick_environments`)
    and write what is to be labelled to ``out_path``. ``known_paths``: frames whose environments are
    known (the training set, earlier picks); ``onsets``: task id -> the step its run first went
    wrong (later frames follow from the model's error, not from the material, and are not
    candidates); ``select_fn(candidates, known, budget) -> frames`` replaces the built-in choice."""
    candidates = frames_of(candidate_paths, onsets)
    known = [frame for path in known_paths for frame in read_frames(path)]
    if select_fn is not None:
        chosen = list(select_fn(candidates, known, budget))[:budget]
        write_frames_atomic(out_path, chosen)
        return {"path": out_path, "n_chosen": len(chosen), "n_candidates": len(candidates), "events": []}
    chosen, record = pick_environments(candidates, known, settings, budget, variance_threshold, fallback=fallback,
                                       model_xml=model_xml)
    write_frames_atomic(out_path, chosen)
    return {"path": out_path, **record}


def exploration_monitor(config: CampaignConfig, table: dict, variance_threshold: float | None, training_path: str) -> dict:
    """The monitors of an exploration run: flags, clustering verdict and collapse, from one table
    (the flags for the model trained on the frames of ``training_path``)."""
    distances = DistanceTable.from_dict(table)
    criteria = clustering_criteria(config.species, distances, config.judge.clustering)
    flags = distances.flags_for(read_frames(training_path), config.distances.data_margin)
    return {"every": config.explore.monitor_every, "min_distance": flags, "clustering": criteria.model_dump(),
            "collapse_fraction": distances.collapse_fraction, "variance_threshold": variance_threshold}


def write_md_task(explore: ExploreSettings, species: list[str], xml: str, task: ExploreTask, folder: str, start: str,
                  monitor: dict) -> str:
    """The task file of one exploration run: heat, hold and quench ``task.size`` x the training cell."""
    out = Path(folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # paths relative to the task file (load_task reads them so): a moved run directory still runs it
    here = lambda path: os.path.relpath(Path(path).resolve(), out)  # noqa: E731
    md = MDTask(structure=str(Path(start).resolve()), size_factor=task.size,
                force_field={"xml": str(Path(xml).resolve()), "species": species},
                protocol=exploration_protocol(max(10, round(150_000 * explore.protocol_scale)), task.temperature,
                                              heat_fraction=explore.heat_fraction, hold_fraction=explore.hold_fraction),
                timestep=explore.timestep, seed=task.seed, sample_every=explore.monitor_every * 5, monitor=monitor,
                output_dir=str(out), checkpoint_every=explore.checkpoint_every, max_displacement=explore.max_displacement,
                max_energy_change=explore.max_energy_change)
    # validated with absolute paths, written relative (model_copy does not validate again)
    md = md.model_copy(update={"structure": here(md.structure), "output_dir": ".",
                               "force_field": md.force_field.model_copy(update={"xml": here(md.force_field.xml)})})
    return str(md.write(out / "task.json"))


def md_task_atoms(task_file: str) -> int:
    """Atoms of the cell an MD task file runs (its structure x ``size_factor``): what the site's
    ``tasks.md.ranks`` by size is keyed on."""
    task = load_task(task_file)
    return len(ase.io.read(task.structure, index=task.frame)) * task.size_factor


def md_command(task_file: str, launcher: str = "", threads: int = 1) -> str:
    """Shell line that runs one MD task file on the ranks the launcher starts."""
    return f"export OMP_NUM_THREADS={threads}; {launcher} {sys.executable} -m alcgap.md.task {task_file}"


# -- the stage ---------------------------------------------------------------------------------

class Explorer:
    """One iteration's exploration, wired: MD tasks, picks and labels, each result kept in the plan."""

    def __init__(self, run: Run, state: IterationState, fitted: dict, gate_fails):
        config = run.config
        self.run, self.state, self.fitted, self.gate_fails = run, state, fitted, gate_fails
        self.tasks = tasks_of(config, state.iteration)
        self.plan = Exploration.load(state.dir / "exploration.json", self.tasks, config.select.budget)
        self.threshold = fitted["variance"]["threshold"]
        table = run.iteration(0).get("distances")["table"]
        self.monitor = exploration_monitor(config, table, self.threshold, str(state.dir / "train.xyz"))
        self.known = [str(state.dir / "train.xyz")]
        self.settings = pick_settings(config)
        self.labeller = Labeller(run)
        self.pending, self.statuses, self.tests = Pending(), [], []

    def label_pick(self, summary: dict) -> None:
        for atoms in read_frames(summary["path"]) if summary.get("n_chosen") else []:
            kind, flags = atoms.info.get("selection_kind"), str(atoms.info.get("flag_reasons", ""))
            reason = f"{kind}: {flags}" if kind else flags
            provenance = Provenance(self.state.iteration, f"explore:{atoms.info.get('task', 'unknown')}",
                                    variance=atoms.info.get("max_variance"), min_distance=atoms.info.get("min_distance"),
                                    reason=reason[:500], details=selection_details(atoms))
            self.labeller.submit(self.pending, atoms, provenance, self.statuses)

    def label_tests(self, summary: dict) -> None:
        """Label the explored test frames: origin ``test:<task>``, which no fit trains on."""
        for atoms in read_frames(summary["path"]) if summary.get("n_chosen") else []:
            provenance = Provenance(self.state.iteration, f"test:{atoms.info.get('task', 'unknown')}",
                                    variance=atoms.info.get("max_variance"), min_distance=atoms.info.get("min_distance"),
                                    reason="explored test set: drawn at random, regardless of flags",
                                    details=selection_details(atoms))
            self.labeller.submit(self.pending, atoms, provenance, self.tests)

    def draw_tests(self) -> None:
        """The explored test set's frames of this iteration (judge.test_frames), once."""
        n = self.run.config.judge.test_frames
        record = PlanEntry(self.plan, "tests", "explored")
        if record.read() is None and n == 0:
            record.write({"path": None, "n_chosen": 0, "n_candidates": 0, "events": []})
        onsets = {t: md["first_bad_step"] for t, md in self.plan.md.items() if md.get("first_bad_step") is not None}
        trajectories = [str(self.state.dir / "md" / t.id / "trajectory.xyz") for t in self.tasks]
        seed = self.run.config.seed * 7919 + self.state.iteration
        picked = [(e["task"], e["md_step"]) for p in self.plan.picks.values() for e in p.get("events", [])]
        done_or_submit(record, lambda: self.run.apps.draw_tests(
            trajectories, self.settings, n, seed, str(self.state.dir / "select" / "tests.xyz"), onsets=onsets,
            exclude=picked, model_xml=self.fitted["xml"]), self.pending, self.label_tests)

    def pick(self, name: str, candidates: list[str], known_paths: list[str], budget: int, fallback: bool = False) -> None:
        """One pick, once: read back (its labels are in the store or their folders) or made."""
        plan, record = self.plan, PlanEntry(self.plan, "picks", name)
        candidates = [path for path in candidates if Path(path).exists()]
        if record.read() is None and (budget <= 0 or not candidates):
            record.write({"path": None, "n_chosen": 0, "n_candidates": 0, "events": []})
        onsets = {t: md["first_bad_step"] for t, md in plan.md.items() if md.get("first_bad_step") is not None}
        done_or_submit(record, lambda: self.run.apps.select(
            candidates, known_paths, self.settings, budget, self.threshold, str(self.state.dir / "select" / f"{name}.xyz"),
            fallback=fallback, onsets=onsets, select_fn=self.run.select_fn, model_xml=self.fitted["xml"]),
            self.pending, self.label_pick)

    def after_md(self, task: ExploreTask, folder: Path, error: str | None = None) -> None:
        if error is not None and not (folder / "result.json").exists():
            flagged_to_checkpoint(folder)  # killed: what its last checkpoint vouches for
        PlanEntry(self.plan, "md", task.id).write(md_summary(folder, task, error))
        self.run.board.md_ended(task.id, self.plan.md[task.id]["verdict"])
        # what it flagged before it failed is as selectable as any other run's
        self.pick(task.id, [flagged_of(folder)], self.known, self.plan.quotas[task.id])

    def md_failed(self, task: ExploreTask, folder: Path, error: BaseException) -> None:
        self.run.log(f"[yellow]MD task {task.id} failed[/]: {str(error)[:300]} (see {folder / 'md.err'})")
        self.after_md(task, folder, str(error)[:500])

    def start_md(self, task: ExploreTask) -> None:
        """Run a task (a failed one again, on resume); a finished one goes straight to its pick."""
        folder = self.state.dir / "md" / task.id
        if PlanEntry(self.plan, "md", task.id, redo=lambda md: md["verdict"] == "failed").read() is not None:
            self.after_md(task, folder) if task.id not in self.plan.picks else self.label_pick(self.plan.picks[task.id])
            return
        config = self.run.config
        task_file = write_md_task(config.explore, config.species, self.fitted["xml"], task, str(folder),
                                  str(self.run.iteration(0).dir / "start.xyz"), self.monitor)
        self.run.board.md_started(task.id, folder, sum(s["steps"] for s in json.loads(Path(task_file).read_text())["protocol"]))
        self.pending.add(self.run.apps.explore(task_file), lambda _, task=task, folder=folder: self.after_md(task, folder),
                         lambda error, task=task, folder=folder: self.md_failed(task, folder, error))

    def run_all(self) -> dict:
        (self.state.dir / "select").mkdir(parents=True, exist_ok=True)
        plan = self.plan
        for task in self.tasks:
            self.start_md(task)
        self.pending.drain()
        flagged = [flagged_of(self.state.dir / "md" / t.id) for t in self.tasks]
        self.draw_tests()  # before the leftover pick: of frames no task's pick chose
        self.pick(LEFTOVER, flagged, self.known + plan.pick_paths(), plan.left())
        self.pending.drain()
        if plan.chosen() == 0 and self.gate_fails(plan):
            trajectories = [str(self.state.dir / "md" / t.id / "trajectory.xyz") for t in self.tasks]
            self.pick(FALLBACK, trajectories, self.known, plan.budget, fallback=True)
            self.pending.drain()
        return {"tasks": [t.id for t in self.tasks], "selected": plan.chosen(),
                "driver_s": round(self.pending.driver_seconds, 3), "flag_distances": self.monitor["min_distance"],
                "variance_threshold": self.threshold, "labelled": self.statuses.count("ok"),
                "failed": len(self.statuses) - self.statuses.count("ok"),
                "test_frames": {"labelled": self.tests.count("ok"), "failed": len(self.tests) - self.tests.count("ok")},
                "picks": {name: {k: v for k, v in p.items() if k != "events"} for name, p in plan.picks.items()}}
