"""The active-learning campaign: the driver that wires Parsl futures, checkpoints and resumes.

iteration 0   dimers + isolated atoms --label--> aux fit;  classical melt-and-quench --label-->
iteration k   fit main GAP on the residual -> explore (MD tasks with monitors) -> select (per
              task, as soon as it finishes) -> label (as soon as selected) -> judge -> stop?

The driver does no science: every step is an app of :mod:`alcgap.workflow.apps` (or the MD task
command). It is the only writer of the label store, and writes each label the moment its future
returns. Stages are checkpointed in ``iter-NNN/state.json``; a resumed campaign re-runs only what
did not finish, and a label computed but not yet stored is found in its task folder.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml
from ase import Atoms
from rich.console import Console

from alcgap.config import CampaignConfig, ConfigError, load_campaign_config
from alcgap.reference import Reference, isolated, make_reference
from alcgap.store import LabelStore, Provenance, fingerprint
from alcgap.structures import pair_name
from alcgap.workflow import apps
from alcgap.workflow.state import IterationState, iteration_dir, read_frames, write_frames_atomic, write_json_atomic
from alcgap.workflow.stop import Judgement, StopDecision, decide

console = Console(stderr=True)
log = logging.getLogger("alcgap.campaign")

#: config sections that change what a label or the auxiliary means: a resume must not change them
FROZEN_SECTIONS = ("species", "reference", "aux", "data", "seed")
#: how a selection function looks: (flagged candidates, frames already known, budget) -> chosen
SelectFn = Callable[[list[Atoms], list[Atoms], int], Sequence[Atoms]]


class ResumeRefused(ConfigError):
    """The config changed in a way that would make the stored data inconsistent."""


@dataclass
class ExploreTask:
    """One exploration MD run: a seed, a melt temperature and a cell multiplier."""

    iteration: int
    seed: int
    temperature: float
    size: int

    @property
    def id(self) -> str:
        return f"s{self.seed}-T{self.temperature:g}-x{self.size}"


@dataclass
class Pending:
    """Futures in flight and what to do with each result."""

    handlers: dict[Future, Callable] = field(default_factory=dict)
    #: seconds the driver spent in its own handlers (storing labels, submitting the next apps)
    driver_seconds: float = 0.0

    def add(self, future: Future, handler: Callable) -> None:
        self.handlers[future] = handler

    def drain(self) -> None:
        """Handle results as they come, including futures added by handlers, until none is left."""
        while self.handlers:
            done, _ = wait(list(self.handlers), return_when=FIRST_COMPLETED)
            for future in done:
                handler = self.handlers.pop(future)
                result = future.result()
                started = time.perf_counter()
                handler(result)
                self.driver_seconds += time.perf_counter() - started


def config_differences(old: dict, new: dict, sections: Sequence[str] = FROZEN_SECTIONS) -> list[str]:
    """Human-readable differences of the frozen sections of two configs."""
    diffs = []

    def walk(a, b, where):
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                walk(a.get(key), b.get(key), f"{where}.{key}" if where else key)
        elif a != b:
            diffs.append(f"{where}: {a!r} -> {b!r}")

    for section in sections:
        walk(old.get(section), new.get(section), section)
    return diffs


class CampaignApps:
    """The apps of :mod:`alcgap.workflow.apps` bound to a site's executors and resources."""

    def __init__(self, site, reference: Reference):
        from parsl import bash_app, python_app

        self.site = site
        serial = [site.executor("fit")]
        mpi = [site.executor("md")]
        self.fit_aux = python_app(apps.fit_aux, executors=serial)
        self.fit_main = python_app(apps.fit_main, executors=serial)
        self.bootstrap_md = python_app(apps.bootstrap_md, executors=serial)
        self.select = python_app(apps.select, executors=serial)
        self.verdict = python_app(apps.clustering_verdict, executors=serial)
        # a DFT code runs on the MPI executor with its ranks; a classical stand-in is a serial call
        self._dft = hasattr(getattr(reference, "config", None), "launch_prefix")
        self._label = python_app(apps.label_structure, executors=mpi if self._dft else serial)
        self._explore = bash_app(_explore_command, executors=mpi)

    def label(self, reference: Reference, atoms: Atoms, workdir: str) -> Future:
        if not self._dft:
            return self._label(reference, atoms, workdir)
        task = self.site.tasks.cp2k
        return self._label(reference, atoms, workdir, launcher=task.launcher if task.ranks > 1 else "",
                           threads=task.threads, parsl_resource_specification=self.site.resource_specification("cp2k"))

    def explore(self, task_file: str) -> Future:
        task = self.site.tasks.md
        folder = Path(task_file).parent
        return self._explore(apps.md_command(task_file, task.launcher, task.threads),
                             stdout=str(folder / "md.out"), stderr=str(folder / "md.err"),
                             parsl_resource_specification=self.site.resource_specification("md"))


def _explore_command(command: str, stdout=None, stderr=None, parsl_resource_specification=None) -> str:
    return command


class Campaign:
    """An active-learning campaign in ``run_dir``; ``run()`` runs or resumes it to its stopping rule.

    ``reference`` replaces the configured reference (any :class:`Reference`, picklable);
    ``select_fn`` replaces the built-in selection (flags + SOAP de-duplication + budget).
    """

    def __init__(self, config: CampaignConfig | str | os.PathLike | dict, run_dir: str | os.PathLike, *,
                 site=None, reference: Reference | None = None, select_fn: SelectFn | None = None):
        self.config = config if isinstance(config, CampaignConfig) else load_campaign_config(config)
        self.run_dir = Path(run_dir)
        self.site_source = site
        # everything that can be wrong is found here, before any work starts
        self.reference = reference or make_reference(self.config.reference, self.config.species)
        self.select_fn = select_fn
        self.settings_hash = self.reference.settings_hash()
        self._in_flight: set[str] = set()

    # -- set-up --------------------------------------------------------------------------------

    def _freeze_config(self) -> None:
        frozen = self.run_dir / "campaign.yaml"
        current = self.config.model_dump(mode="json")
        if frozen.exists():
            diffs = config_differences(yaml.safe_load(frozen.read_text()), current)
            if diffs:
                raise ResumeRefused(
                    f"{frozen} was run with other settings; resuming with these would mix "
                    "inconsistent data:\n  " + "\n  ".join(diffs) + "\nstart a new run directory, or restore those settings"
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.run_dir / "campaign.json", {"settings_hash": self.settings_hash, "reference": self.reference.name})
        (self.run_dir / "campaign.yaml").write_text(yaml.safe_dump(current, sort_keys=False))

    def _start_parsl(self):
        import parsl

        from alcgap.sites import load_site

        self.site = load_site(self.site_source or "local", self.run_dir)
        parsl.clear()
        self.dfk = parsl.load(self.site.config)
        self.apps = CampaignApps(self.site, self.reference)
        # what the apps get: the config, with the site's fitting threads unless the config pins them
        self.app_config = self.config.model_dump(mode="json")
        if self.app_config.get("threads") is None:
            self.app_config["threads"] = self.site.tasks.fit.threads

    # -- running -------------------------------------------------------------------------------

    def run(self) -> dict:
        """Run (or resume) to the stopping rule; return the campaign summary."""
        self._freeze_config()
        self.store = LabelStore(self.run_dir / "data.db")
        self.store.register_settings(self.reference.name, self.settings_hash, self.reference.settings())
        self._start_parsl()
        logging.basicConfig(filename=self.run_dir / "campaign.log", level=logging.INFO,
                            format="%(asctime)s %(levelname)s %(message)s")
        try:
            self._bootstrap()
            decision = StopDecision(False, "continue", "")
            iteration = 0
            while not decision.stop:
                iteration += 1
                decision = self._iteration(iteration)
            summary = self._summary(iteration, decision)
        finally:
            import parsl

            self.dfk.cleanup()
            parsl.clear()
        return summary

    def _stage(self, state: IterationState, name: str, work: Callable[[], dict]) -> dict:
        if state.done(name):
            console.log(f"iteration {state.iteration}: {name} already done")
            return state.get(name)
        console.log(f"iteration {state.iteration}: {name} ...")
        started = time.time()
        outputs = work()
        outputs["seconds"] = round(time.time() - started, 2)
        log.info("iteration %d stage %s done: %s", state.iteration, name, outputs)
        return state.finish(name, **outputs)

    # -- labelling, streamed -------------------------------------------------------------------

    def _label_dir(self, atoms: Atoms) -> Path:
        return self.run_dir / "labels" / self.settings_hash / fingerprint(atoms)

    def _submit_label(self, pending: Pending, atoms: Atoms, provenance: Provenance, results: list) -> None:
        """Label ``atoms`` unless the store has it; store the label the moment it returns."""
        row = self.store.reusable_row(atoms, self.settings_hash)
        if row is not None:
            results.append(row.status)
            return
        key = fingerprint(atoms)
        if key in self._in_flight:  # the same structure twice in one batch: one calculation
            return
        self._in_flight.add(key)

        def store(outcome) -> None:
            label, started, finished = outcome
            self._in_flight.discard(key)
            self.store.add(atoms, label, self.reference.name, self.settings_hash, provenance,
                           started=started, finished=finished)
            results.append(label.status.value)
            if not label.ok:
                console.log(f"[yellow]label failed[/] ({provenance.origin}): {label.status.value}: {label.reason[:200]}")

        pending.add(self.apps.label(self.reference, atoms, str(self._label_dir(atoms))), store)

    def _label_all(self, frames: Sequence[Atoms], provenances: Sequence[Provenance]) -> dict:
        pending, results = Pending(), []
        for atoms, provenance in zip(frames, provenances):
            self._submit_label(pending, atoms, provenance, results)
        pending.drain()
        return {"labelled": results.count("ok"), "failed": len(results) - results.count("ok"),
                "driver_s": round(pending.driver_seconds, 3)}

    # -- iteration 0 ---------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        config, state = self.config, IterationState(self.run_dir, 0)
        if not (state.dir / "start.xyz").exists():  # every exploration run starts from this cell
            from alcgap.workflow.fit import starting_structure

            write_frames_atomic(state.dir / "start.xyz", [starting_structure(config)])
        self._stage(state, "dimers", self._dimers)
        self._stage(state, "aux", lambda: self.apps.fit_aux(
            self.app_config, state.get("dimers")["curves"], str(state.dir / "aux")).result())
        frames_path = state.dir / "bootstrap.xyz"
        self._stage(state, "bootstrap", lambda: {"frames": self.apps.bootstrap_md(
            self.app_config, str(frames_path)).result()})
        frames = read_frames(frames_path)
        self._stage(state, "label", lambda: self._label_all(frames, [Provenance(0, "bootstrap")] * len(frames)))

    def _dimers(self) -> dict:
        config = self.config
        scan = config.aux.scan
        from alcgap.dimers import scan_grid

        structures, provenances, keys = [], [], []
        for symbol in config.species:
            structures.append(isolated(symbol))
            provenances.append(Provenance(0, "isolated"))
            keys.append(("atom", symbol, 0.0))
        for pair, r_cut in config.aux.pair_cutoffs().items():
            for r in scan_grid(scan.r_min, r_cut, scan.step, scan.beyond_cutoff):
                structures.append(isolated(pair[0] + pair[1], positions=[[0, 0, 0], [r, 0, 0]]))
                provenances.append(Provenance(0, "dimer", min_distance=float(r)))
                keys.append(("dimer", pair, float(r)))
        self._label_all(structures, provenances)
        energies = {}
        for atoms, key in zip(structures, keys):
            row = self.store.reusable_row(atoms, self.settings_hash)
            energies[key] = row.energy if row is not None and row.status == "ok" else None
        atom_energies = {s: energies[("atom", s, 0.0)] for s in config.species}
        missing = [s for s, e in atom_energies.items() if e is None]
        if missing:
            raise RuntimeError(f"isolated-atom labels failed for {missing}: see {self.run_dir / 'data.db'} (status, label_reason)")
        curves: dict[str, dict] = {}
        for (kind, pair, r), energy in energies.items():
            if kind != "dimer":
                continue
            curve = curves.setdefault(pair_name(pair), {"r": [], "energy": [], "failed": {}})
            if energy is None:
                curve["failed"][str(r)] = "label failed (see data.db)"
            else:
                curve["r"].append(r)
                curve["energy"].append(energy - atom_energies[pair[0]] - atom_energies[pair[1]])
        return {"atom_energies": atom_energies, "curves": curves}

    # -- iterations k >= 1 ---------------------------------------------------------------------

    def _tasks(self, iteration: int) -> list[ExploreTask]:
        explore = self.config.explore
        return [ExploreTask(iteration, seed + 1000 * iteration, t, size)
                for size in explore.sizes for t in explore.temperatures for seed in explore.seeds]

    def _iteration(self, iteration: int) -> StopDecision:
        config, state = self.config, IterationState(self.run_dir, iteration)
        boot = IterationState(self.run_dir, 0)
        aux_xml = boot.get("aux")["aux_xml"]
        atom_energies = boot.get("dimers")["atom_energies"]

        def fit() -> dict:
            # dimers and isolated atoms defined the aux; the main GAP learns condensed structures
            train, test = [], []
            for origin in ("bootstrap", "explore*"):
                if self.store.rows(origin=origin):
                    part = self.store.split(config.seed, config.data.test_fraction, origin=origin)
                    train += part[0]
                    test += part[1]
            if not test:
                raise RuntimeError("no held-out labels: label more bootstrap frames (data.sample_every) or raise data.test_fraction")
            write_frames_atomic(state.dir / "train.xyz", train)
            return self.apps.fit_main(self.app_config, train, test, atom_energies, aux_xml, str(state.dir)).result()

        fitted = self._stage(state, "fit", fit)
        self._stage(state, "explore_select_label", lambda: self._explore(state, fitted["xml"]))
        judged = self._stage(state, "judge", lambda: self._judge(state, fitted))
        decision = StopDecision(**judged["decision"])
        console.log(f"iteration {iteration}: [bold]{decision.rule}[/] {decision.why}")
        return decision

    def _explore(self, state: IterationState, xml: str) -> dict:
        """MD tasks -> per-task selection as each finishes -> labels as soon as selected."""
        config = self.config
        tasks = self._tasks(state.iteration)
        known_path = state.dir / "train.xyz"
        budget_left = [config.select.budget]
        per_task = max(1, -(-config.select.budget // len(tasks)))
        pending, statuses, chosen_all = Pending(), [], []

        def after_select(task: ExploreTask, selected_path: str) -> None:
            frames = read_frames(selected_path)
            chosen_all.extend(frames)
            for atoms in frames:
                provenance = Provenance(state.iteration, f"explore:{task.id}", variance=atoms.info.get("max_variance"),
                                        min_distance=atoms.info.get("min_distance"), reason=str(atoms.info.get("flag_reasons", "")))
                self._submit_label(pending, atoms, provenance, statuses)

        def after_md(task: ExploreTask, folder: Path) -> None:
            selected = folder / "selected.xyz"
            if selected.exists():
                after_select(task, str(selected))
                return
            budget = min(per_task, budget_left[0])
            budget_left[0] -= budget
            if budget <= 0:
                write_frames_atomic(selected, [])
                return
            known = folder / "known.xyz"
            write_frames_atomic(known, read_frames(known_path) + chosen_all)
            future = self.apps.select(str(folder / "flagged.xyz"), str(known), config.species, budget,
                                      config.select.min_soap_distance, str(selected), self.select_fn)
            pending.add(future, lambda path, task=task: after_select(task, path))

        for task in tasks:
            folder = state.dir / "md" / task.id
            if (folder / "result.json").exists():
                after_md(task, folder)
                continue
            task_file = apps.write_md_task(self.app_config, xml, task.seed, task.temperature,
                                           task.size, str(folder), str(iteration_dir(self.run_dir, 0) / "start.xyz"))
            pending.add(self.apps.explore(task_file), lambda _, task=task, folder=folder: after_md(task, folder))
        pending.drain()
        return {"tasks": [t.id for t in tasks], "selected": len(chosen_all), "driver_s": round(pending.driver_seconds, 3),
                "labelled": statuses.count("ok"), "failed": len(statuses) - statuses.count("ok")}

    def _judge(self, state: IterationState, fitted: dict) -> dict:
        config = self.config
        verdicts, sizes, details = {}, {}, {}
        futures = {}
        for task in self._tasks(state.iteration):
            folder = state.dir / "md" / task.id
            result = json.loads((folder / "result.json").read_text())
            sizes[task.id] = task.size
            futures[task.id] = (result, self.apps.verdict(str(folder / "trajectory.xyz"), config.species, config.judge.clustering))
        for task_id, (result, future) in futures.items():
            verdict = future.result()
            if result.get("stopped_early"):
                verdict = {**verdict, "verdict": "clustered", "stopped_early": result.get("stop_reason")}
            verdicts[task_id] = verdict["verdict"]
            details[task_id] = verdict
        errors = fitted["errors"]["composite"]
        n_labels = self.store.summary().by_status.get("ok", 0)  # failed rows are not labels
        explored = state.get("explore_select_label")
        judgement = Judgement(state.iteration, errors["energy_mae"], errors["force_rmse"], verdicts, sizes,
                              n_labels=n_labels, n_selected=explored["selected"])
        decision = decide(judgement, config)
        metrics = {"iteration": state.iteration, "labels": n_labels, "errors": errors, "clustering": verdicts,
                   "clustering_details": details, "sizes": sizes, "selected": explored["selected"],
                   "decision": decision.as_dict()}
        write_json_atomic(state.dir / "metrics.json", metrics)
        return {"decision": decision.as_dict(), "verdicts": verdicts}

    def _summary(self, last: int, decision: StopDecision) -> dict:
        summary = {"run_dir": str(self.run_dir), "iterations": last, "stopped_by": decision.rule, "why": decision.why,
                   "store": str(self.store.summary()), "settings_hash": self.settings_hash,
                   "metrics": [json.loads((iteration_dir(self.run_dir, k) / "metrics.json").read_text())
                               for k in range(1, last + 1) if (iteration_dir(self.run_dir, k) / "metrics.json").exists()]}
        write_json_atomic(self.run_dir / "summary.json", summary)
        return summary


def run_campaign(config, run_dir, *, site=None, reference=None, select_fn=None) -> dict:
    """Run (or resume) a campaign: the Python API behind ``alcgap run``."""
    return Campaign(config, run_dir, site=site, reference=reference, select_fn=select_fn).run()


def resume_campaign(run_dir, *, site=None, reference=None, select_fn=None) -> dict:
    """Continue a stopped or killed campaign from its checkpoints, with its frozen config."""
    frozen = Path(run_dir) / "campaign.yaml"
    if not frozen.exists():
        raise ConfigError(f"{run_dir} holds no campaign (no campaign.yaml): start it with `alcgap run`")
    return run_campaign(frozen, run_dir, site=site, reference=reference, select_fn=select_fn)
