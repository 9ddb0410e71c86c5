"""The active-learning campaign: the driver that wires Parsl futures, checkpoints and resumes.

iteration 0   dimers + isolated atoms --label--> aux fit;  classical melt-and-quench --label-->
iteration k   fit main GAP on the residual -> explore (MD tasks with monitors) -> select (per
              task, as soon as it finishes) -> label (as soon as selected) -> judge (with
              judge.survival: the survival test, once every other gate passes) -> stop?

The driver does no science: every step is an app of :mod:`alcgap.workflow.apps` (or the MD task
command). It is the only writer of the label store, and writes each label the moment its future
returns. Stages are checkpointed in ``iter-NNN/state.json``; a resumed campaign re-runs only what
did not finish, and a label computed but not yet stored is found in its task folder.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import yaml
from ase import Atoms
from rich.console import Console

from alcgap.config import CampaignConfig, ConfigError, load_campaign_config, read_yaml
from alcgap.explore.distances import OWN_BOOTSTRAP_MARGIN, STAND_IN_BOOTSTRAP_MARGIN
from alcgap.reference import Label, LabelStatus, Reference, isolated, make_reference, vashishta_sio2_commands
from alcgap.reference.contacts import default_contact_limits, too_close_pairs
from alcgap.store import LabelStore, Provenance, fingerprint
from alcgap.survival import held
from alcgap.structures import pair_name
from alcgap.workflow import apps
from alcgap.workflow.explore import FALLBACK, LEFTOVER, Exploration, ExploreTask, md_summary
from alcgap.workflow.lock import RunLock
from alcgap.workflow.state import (IterationState, iteration_dir, read_frames, read_run_json, relocatable, write_atomic,
                                   write_frames_atomic, write_json_atomic)
from alcgap.workflow.stop import Judgement, StopDecision, decide, gates, survival_settings

console = Console(stderr=True)
log = logging.getLogger("alcgap.campaign")

#: config sections that change what a label or the auxiliary means: a resume must not change them
FROZEN_SECTIONS = ("species", "reference", "aux", "data", "seed", "potential")
#: how a selection function looks: (flagged candidates, frames already known, budget) -> chosen
SelectFn = Callable[[list[Atoms], list[Atoms], int], Sequence[Atoms]]


class ResumeRefused(ConfigError):
    """The config changed in a way that would make the stored data inconsistent."""


class LabellingStopped(ConfigError):
    """The reference refused its input (an unknown basis, a bad keyword): every further label
    would fail the same way, so labelling stops with the program's own message."""


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


def flagged_of(folder: Path) -> str:
    """The frames an MD task flagged: its ``flagged.xyz``, or for a task killed before it ended,
    those up to its last checkpoint."""
    salvaged = folder / "flagged-to-checkpoint.xyz"
    return str(salvaged if not (folder / "result.json").exists() and salvaged.exists() else folder / "flagged.xyz")


def selection_details(atoms: Atoms) -> dict:
    """What the store keeps of why and where a selected frame was cut: its centre atoms, the MD
    step and task it came from, and a carved cell's carving parameters."""
    from alcgap.explore.select import centre_atoms

    details = {"centre_atoms": centre_atoms(atoms)}
    for key, value in atoms.info.items():
        if key.startswith("carve") or key in ("md_step", "task", "selection_kind", "selection_score"):  # carve_failed too
            details[key] = value.tolist() if hasattr(value, "tolist") else value
    return details


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


def _label_meaning(dumped: dict, config: CampaignConfig | None) -> dict:
    """The config with its reference section reduced to what changes a label (CP2K: not the
    executable, launcher, threads, walltime, data_dir or recovery settings)."""
    label_settings = getattr(getattr(config, "reference", None), "label_settings", None)
    return {**dumped, "reference": label_settings()} if label_settings else dumped


class Throttle:
    """At most ``limit`` tasks of one kind in flight (a site's ``tasks.<kind>.max_concurrent``);
    the others wait, in the order they were submitted, and start as running ones end.
    :meth:`submit` returns at once a future of the task's result."""

    def __init__(self, limit: int):
        import threading
        from collections import deque

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


class CampaignApps:
    """The apps of :mod:`alcgap.workflow.apps` bound to a site's executors and resources."""

    def __init__(self, site, reference: Reference):
        from parsl import bash_app, python_app

        self.site = site
        self.throttles = {kind: Throttle(getattr(site.tasks, kind).max_concurrent) for kind in ("md", "cp2k")}
        serial = [site.executor("fit")]
        mpi = [site.executor("md")]
        self.fit_aux = python_app(apps.fit_aux, executors=serial)
        self.fit_main = python_app(apps.fit_main, executors=serial)
        self.bootstrap_md = python_app(apps.bootstrap_md, executors=serial)
        # the judge's survival test: serial MD in the worker, like the bootstrap's (one run per app)
        self.survival_md = python_app(apps.survival_md, executors=serial)
        self.select = python_app(apps.select, executors=serial)
        # a DFT code runs on the MPI executor with its ranks; a classical stand-in is a serial call
        self._dft = hasattr(getattr(reference, "config", None), "launch_prefix")
        self._label = python_app(apps.label_structure, executors=mpi if self._dft else serial)
        self._check_reference = python_app(apps.check_reference, executors=mpi)
        self._explore = bash_app(_explore_command, executors=mpi)

    def check_reference(self, reference: Reference) -> Future:
        """The reference's machine checks on the MPI executor, where CP2K runs (check_on: compute)."""
        return self._check_reference(reference, parsl_resource_specification=self.site.resource_specification("cp2k", 1))

    def label(self, reference: Reference, atoms: Atoms, workdir: str) -> Future:
        if not self._dft:
            return self._label(reference, atoms, workdir)
        # the site's ranks for this structure's size (a dimer, a carved cell, a whole frame)
        task, n_atoms = self.site.tasks.cp2k, len(atoms)
        return self.throttles["cp2k"].submit(lambda: self._label(
            reference, atoms, workdir, launcher=task.launcher if task.ranks_for(n_atoms) > 1 else "", threads=task.threads,
            parsl_resource_specification=self.site.resource_specification("cp2k", n_atoms)))

    def explore(self, task_file: str) -> Future:
        task = self.site.tasks.md
        folder = Path(task_file).parent
        return self.throttles["md"].submit(lambda: self._explore(
            apps.md_command(task_file, task.launcher, task.threads), stdout=str(folder / "md.out"),
            stderr=str(folder / "md.err"),
            parsl_resource_specification=self.site.resource_specification("md", apps.md_task_atoms(task_file))))


def _explore_command(command: str, stdout=None, stderr=None, parsl_resource_specification=None) -> str:
    return command


class Campaign:
    """An active-learning campaign in ``run_dir``; ``run()`` runs or resumes it to its stopping rule.

    ``reference`` replaces the configured reference (any :class:`Reference`, picklable);
    ``select_fn`` replaces the built-in selection (flags + SOAP de-duplication + budget).
    """

    def __init__(self, config: CampaignConfig | str | os.PathLike | dict, run_dir: str | os.PathLike, *,
                 site=None, reference: Reference | None = None, select_fn: SelectFn | None = None):
        from alcgap.sites import check_site

        self.config = config if isinstance(config, CampaignConfig) else load_campaign_config(config)
        # absolute, so that workers started elsewhere find it; checkpoints keep paths relative to it
        self.run_dir = Path(run_dir).absolute()
        self.site_source = site
        # everything that can be wrong is found here, before any work starts or any file is written
        check_site(site or "local", cp2k_walltime=getattr(self.config.reference, "walltime", None)
                   if self.config.reference.kind == "cp2k" else None)
        try:
            self.reference = reference or make_reference(self.config.reference, self.config.species)
        except ValueError as err:  # a check that needs the species and the machine (CP2K's libraries)
            raise ConfigError(str(err)) from None
        self.select_fn = select_fn
        self.settings_hash = self.reference.settings_hash()
        self._in_flight: set[str] = set()
        from alcgap.workflow.progress import ProgressBoard

        #: live progress (started by run(); until then it only counts)
        self.board = ProgressBoard(self.run_dir, console=console)  # one console: logs print above the live panel

    # -- set-up --------------------------------------------------------------------------------

    def _freeze_config(self) -> None:
        frozen, record = self.run_dir / "campaign.yaml", self.run_dir / "campaign.json"
        current = self.config.model_dump(mode="json")
        if frozen.exists():
            # what the campaign ran with is the record's copy: campaign.yaml is for people, and an
            # edit of it is checked here like any other config
            recorded = json.loads(record.read_text()).get("config") if record.exists() else None
            before = recorded if recorded is not None else yaml.safe_load(frozen.read_text())
            try:  # in today's layout (a frozen file of an older layout compares by what it means)
                before_config = CampaignConfig.model_validate(before)
            except ValueError:
                before_config = None  # it no longer validates: compare as written, and show every difference
            if before_config is not None:
                before = before_config.model_dump(mode="json")
            diffs = config_differences(_label_meaning(before, before_config), _label_meaning(current, self.config))
            if diffs:
                raise ResumeRefused(
                    f"{frozen} was run with other settings; resuming with these would mix "
                    "inconsistent data:\n  " + "\n  ".join(diffs) + "\nstart a new run directory, or restore those settings"
                )
            harmless = config_differences(before, current, ("reference",))
            if harmless:  # where or how the reference runs, not what its labels mean
                console.log("resuming with changes that do not change a label (recorded in campaign.yaml): "
                            + "; ".join(harmless))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(record, {"settings_hash": self.settings_hash, "reference": self.reference.name, "config": current})
        write_atomic(frozen, yaml.safe_dump(current, sort_keys=False))

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
        """Run (or resume) to the stopping rule; return the campaign summary.

        One driver per run directory (:class:`~alcgap.workflow.lock.RunLock`): a second one is
        refused, and what a dead driver left running on this host is stopped first. SIGTERM (a
        batch job's walltime, ``kill``) ends the driver through its clean-up, which stops Parsl's
        workers; the checkpoints keep what finished."""
        with RunLock(self.run_dir, watchdog=True) as lock:
            if lock.stopped:
                console.log(f"stopped {len(lock.stopped)} process(es) a dead driver of {self.run_dir} left running")
            self._freeze_config()
            self.store = LabelStore(self.run_dir / "data.db")
            self.store.register_settings(self.reference.name, self.settings_hash, self.reference.settings())
            self._start_parsl()
            logging.basicConfig(filename=self.run_dir / "campaign.log", level=logging.INFO,
                                format="%(asctime)s %(levelname)s %(message)s")
            previous = _exit_on_sigterm()
            self.board.start()
            try:
                self._check_reference_on_compute()
                self._bootstrap()
                decision = StopDecision(False, "continue", "")
                iteration = 0
                while not decision.stop:
                    iteration += 1
                    decision = self._iteration(iteration)
                summary = self._summary(iteration, decision)
            finally:
                import parsl

                self.board.stop()
                self.dfk.cleanup()
                parsl.clear()
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
        return summary

    def _check_reference_on_compute(self) -> None:
        """``reference.check_on: compute``: the checks the login node could not make, made by a
        first task where the labels run, before any label."""
        if getattr(getattr(self.reference, "config", None), "check_on", "driver") != "compute":
            return
        try:
            found = self.apps.check_reference(self.reference).result()
        except Exception as err:  # noqa: BLE001  (the worker's ValueError, named by field)
            raise ConfigError(f"reference (check_on: compute): the check where the labels run failed: {err}") from None
        console.log(f"reference checked on the compute side: CP2K data in {found}")

    def _stage(self, state: IterationState, name: str, work: Callable[[], dict]) -> dict:
        if state.done(name):
            console.log(f"iteration {state.iteration}: {name} already done")
            return state.get(name)
        console.log(f"iteration {state.iteration}: {name} ...")
        self.board.set_stage(f"iteration {state.iteration}: {name}")
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
        if provenance.origin.startswith("explore"):  # dimer scans go short on purpose; the loop's picks may not
            contacts = too_close_pairs(atoms, default_contact_limits(self.config.species, self.config.label.contact_fraction))
            if contacts:
                c = contacts[0]
                reason = (f"{len(contacts)} pair(s) too close for the reference, shortest {pair_name(c.pair)} "
                          f"{c.distance:.3f} A < {c.limit:.3f} A (label.contact_fraction "
                          f"{self.config.label.contact_fraction} x covalent radii): not sent; the model went there")
                now = time.time()
                self.store.add(atoms, Label(LabelStatus.TOO_CLOSE, reason=reason), self.reference.name,
                               self.settings_hash, provenance, started=now, finished=now)
                results.append(LabelStatus.TOO_CLOSE.value)
                console.log(f"[yellow]not labelled[/] ({provenance.origin}): {reason}")
                return
        self._in_flight.add(key)

        def store(outcome) -> None:
            label, started, finished = outcome
            self._in_flight.discard(key)
            self.board.label_done(label.ok, len(label.info.get("recovery", [])) if isinstance(label.info, dict) else 0)
            self.store.add(atoms, label, self.reference.name, self.settings_hash, provenance,
                           started=started, finished=finished)
            results.append(label.status.value)
            if label.fatal:  # the reference's input is wrong for every structure: stop before the next
                raise LabellingStopped(f"{self.reference.name} refused its input ({provenance.origin}): {label.reason}; "
                                       "fix the reference settings, then resume")
            if not label.ok:
                console.log(f"[yellow]label failed[/] ({provenance.origin}): {label.status.value}: {label.reason[:200]}")

        self.board.label_submitted()
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
        if config.potential == "plain":  # no aux: the main GAP alone learns the short range
            self._stage(state, "aux", lambda: {"aux_xml": None, "aux_table": None, "skipped": "potential: plain"})
        else:
            self._stage(state, "aux", lambda: self.apps.fit_aux(
                self.app_config, state.get("dimers")["curves"], str(state.dir / "aux")).result())
        frames_path = state.dir / "bootstrap.xyz"
        self._stage(state, "bootstrap", lambda: {"frames": self.apps.bootstrap_md(
            self.app_config, str(frames_path)).result()})
        frames = read_frames(frames_path)
        self._stage(state, "label", lambda: self._label_all(frames, [Provenance(0, "bootstrap")] * len(frames)))
        self._stage(state, "split", lambda: self._split(frames))
        self._stage(state, "distances", lambda: self._distances(frames))

    def _bootstrap_labels(self, frames: Sequence[Atoms]) -> list[Atoms]:
        """The OK labels of the bootstrap frames, in trajectory order."""
        by_key = {row.fingerprint: row for row in self.store.rows(origin="bootstrap", settings_hash=self.settings_hash)}
        from alcgap.store import atoms_from_row

        return [atoms_from_row(by_key[key]) for key in (fingerprint(f) for f in frames) if key in by_key]

    def _split(self, frames: Sequence[Atoms]) -> dict:
        """The held-out set, fixed once: contiguous blocks of the bootstrap trajectory."""
        from alcgap.workflow.fit import split

        labelled = self._bootstrap_labels(frames)
        train, test = split(labelled, self.config.data.test_fraction, self.config.seed)
        return {"test": [a.info["fingerprint"] for a in test], "train": [a.info["fingerprint"] for a in train]}

    def _distances(self, frames: Sequence[Atoms]) -> dict:
        """The one distance table (flags, clustering verdict, collapse) from the labelled bootstrap frames."""
        from alcgap.explore.distances import DistanceTable, base_criteria

        config = self.config
        labelled = self._bootstrap_labels(frames)
        shells = dict(base_criteria(config.species).neighbour_cutoff)
        shells.update((config.judge.clustering or {}).get("neighbour_cutoff", {}))
        margin = config.distances.cluster_margin
        if margin is None:  # see DistanceSettings.cluster_margin
            # the wider margin only when a classical potential other than the reference made the
            # bootstrap geometry (its shortest pairs are the stand-in's, not the reference's)
            potential = config.bootstrap_potential()
            reference = (config.reference.pair_commands or vashishta_sio2_commands()) if config.reference.kind == "lammps" else None
            stand_in = potential is not None and potential[0] != reference
            margin = STAND_IN_BOOTSTRAP_MARGIN if stand_in else OWN_BOOTSTRAP_MARGIN
        table = DistanceTable.from_data(labelled, config.species, data_margin=config.distances.data_margin,
                                        given=config.distances.flag, cluster_margin=margin,
                                        collapse_fraction=config.distances.collapse_fraction, shells=shells)
        console.log(f"distance table: {table.describe()}")
        return {"table": table.as_dict()}

    def _dimers(self) -> dict:
        config = self.config
        scan = config.aux.scan
        from alcgap.dimers import scan_grid

        structures, provenances, keys = [], [], []
        for symbol in config.species:
            structures.append(isolated(symbol))
            provenances.append(Provenance(0, "isolated"))
            keys.append(("atom", symbol, 0.0))
        scans = config.aux.pair_cutoffs().items() if config.potential == "composite" else ()  # plain: the atoms only
        for pair, r_cut in scans:
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

    def _training_data(self, iteration: int) -> tuple[list[Atoms], list[Atoms]]:
        """(train, test): the fixed held-out bootstrap blocks are the test set; every other OK
        bootstrap label and every label the loop selected trains, in a fixed order (bootstrap
        trajectory order, then by iteration and fingerprint), whatever order they were stored in."""
        split = IterationState(self.run_dir, 0).get("split")
        test_keys = set(split["test"])
        boot = self._bootstrap_labels(read_frames(iteration_dir(self.run_dir, 0) / "bootstrap.xyz"))
        train = [a for a in boot if a.info["fingerprint"] not in test_keys]
        test = [a for a in boot if a.info["fingerprint"] in test_keys]
        explored = self.store.labelled(origin="explore*", settings_hash=self.settings_hash, up_to_iteration=iteration - 1)
        train += sorted(explored, key=lambda a: (int(a.info["iteration"]), a.info["fingerprint"]))
        return train, test

    def _iteration(self, iteration: int) -> StopDecision:
        state = IterationState(self.run_dir, iteration)
        boot = IterationState(self.run_dir, 0)
        aux_xml = boot.get("aux")["aux_xml"]
        atom_energies = boot.get("dimers")["atom_energies"]

        def fit() -> dict:
            # dimers and isolated atoms defined the aux; the main GAP learns condensed structures
            train, test = self._training_data(iteration)
            if not test:
                raise RuntimeError("no held-out labels: label more bootstrap frames (data.sample_every) or raise data.test_fraction")
            write_frames_atomic(state.dir / "train.xyz", train)
            fitted = self.apps.fit_main(self.app_config, train, test, atom_energies, aux_xml, str(state.dir)).result()
            console.log(f"iteration {iteration}: {len(train)} training frames; held-out {fitted['errors'][fitted['deployed']]}; "
                        f"variance threshold {fitted['variance']['threshold']:.3g} eV^2")
            return fitted

        fitted = self._stage(state, "fit", fit)
        self._stage(state, "explore_select_label", lambda: self._explore(state, fitted))
        replayed = state.done("judge")
        judged = self._stage(state, "judge", lambda: self._judge(state, fitted))
        if replayed and "judgement" in judged and self._survival_due(Judgement(**judged["judgement"])):
            # judge.survival set or changed since: the survival test is a measurement, not a rule, so
            # the stage runs again (its finished survival runs are read back, not run again)
            console.log(f"iteration {iteration}: judge.survival differs from what it was judged with: judging it again")
            started = time.time()
            judged = self._judge(state, fitted)
            judged = state.finish("judge", **judged, seconds=round(time.time() - started, 2))
            replayed = False
        decision = StopDecision(**judged["decision"])
        if replayed and "judgement" in judged:
            # the stop rule is a pure function of what the iteration showed and of today's stop
            # and judge settings: a campaign stopped by stop.max_iterations goes on when it is raised
            now = decide(Judgement(**judged["judgement"]), self.config)
            if now != decision:
                console.log(f"iteration {iteration}: stopped by {decision.rule} when it ran; with today's settings "
                            f"the stop rule says [bold]{now.rule}[/]")
                log.info("iteration %d: decision %s replaced by %s (settings changed)", iteration, decision, now)
                decision = now
        console.log(f"iteration {iteration}: [bold]{decision.rule}[/] {decision.why}")
        return decision

    def _explore(self, state: IterationState, fitted: dict) -> dict:
        """MD tasks -> each task's pick (its fixed share of the budget) as it finishes -> labels as
        soon as picked; then one pick of what is left of the budget over every task, and a
        fallback pick when nothing was flagged but a gate failed (see :mod:`alcgap.workflow.explore`)."""
        config = self.config
        tasks = self._tasks(state.iteration)
        plan = Exploration.load(state.dir / "exploration.json", tasks, config.select.budget)
        threshold = fitted["variance"]["threshold"]
        table = IterationState(self.run_dir, 0).get("distances")["table"]
        monitor = apps.exploration_monitor(self.app_config, table, threshold, str(state.dir / "train.xyz"))
        known = [str(state.dir / "train.xyz")]
        (state.dir / "select").mkdir(parents=True, exist_ok=True)
        pending, statuses = Pending(), []

        def label_pick(summary: dict) -> None:
            for atoms in read_frames(summary["path"]) if summary.get("n_chosen") else []:
                kind, flags = atoms.info.get("selection_kind"), str(atoms.info.get("flag_reasons", ""))
                reason = f"{kind}: {flags}" if kind else flags
                provenance = Provenance(state.iteration, f"explore:{atoms.info.get('task', 'unknown')}",
                                        variance=atoms.info.get("max_variance"), min_distance=atoms.info.get("min_distance"),
                                        reason=reason[:500], details=selection_details(atoms))
                self._submit_label(pending, atoms, provenance, statuses)

        def pick(name: str, candidates: list[str], known_paths: list[str], budget: int, fallback: bool = False) -> None:
            if name in plan.picks:  # picked before a restart: its labels are in the store or their folders
                label_pick(plan.picks[name])
                return
            candidates = [path for path in candidates if Path(path).exists()]
            if budget <= 0 or not candidates:
                plan.record_pick(name, {"path": None, "n_chosen": 0, "n_candidates": 0, "events": []})
                return

            def picked(summary: dict) -> None:
                plan.record_pick(name, summary)
                label_pick(summary)

            onsets = {t: md["first_bad_step"] for t, md in plan.md.items() if md.get("first_bad_step") is not None}
            pending.add(self.apps.select(candidates, known_paths, self.app_config, budget, threshold,
                                         str(state.dir / "select" / f"{name}.xyz"), fallback=fallback, onsets=onsets,
                                         select_fn=self.select_fn, model_xml=fitted["xml"]), picked)

        def after_md(task: ExploreTask, folder: Path, error: str | None = None) -> None:
            from alcgap.md.lammps import flagged_to_checkpoint

            if error is not None and not (folder / "result.json").exists():
                flagged_to_checkpoint(folder)  # killed: what its last checkpoint vouches for
            plan.record_md(task, md_summary(folder, task, error))
            self.board.md_ended(task.id, plan.md[task.id]["verdict"])
            # what it flagged before it failed is as selectable as any other run's
            pick(task.id, [flagged_of(folder)], known, plan.quotas[task.id])

        def md_failed(task: ExploreTask, folder: Path, error: BaseException) -> None:
            console.log(f"[yellow]MD task {task.id} failed[/]: {str(error)[:300]} (see {folder / 'md.err'})")
            after_md(task, folder, str(error)[:500])

        for task in tasks:
            folder = state.dir / "md" / task.id
            if task.id in plan.md and plan.md[task.id]["verdict"] != "failed":
                after_md(task, folder) if task.id not in plan.picks else label_pick(plan.picks[task.id])
                continue
            task_file = apps.write_md_task(self.app_config, fitted["xml"], task.seed, task.temperature, task.size,
                                           str(folder), str(iteration_dir(self.run_dir, 0) / "start.xyz"), monitor)
            self.board.md_started(task.id, folder, sum(s["steps"] for s in json.loads(Path(task_file).read_text())["protocol"]))
            pending.add(self.apps.explore(task_file), lambda _, task=task, folder=folder: after_md(task, folder),
                        lambda error, task=task, folder=folder: md_failed(task, folder, error))
        pending.drain()
        flagged = [flagged_of(state.dir / "md" / t.id) for t in tasks]
        pick(LEFTOVER, flagged, known + plan.pick_paths(), plan.left())
        pending.drain()
        if plan.chosen() == 0 and self._gate_fails(fitted, plan):
            trajectories = [str(state.dir / "md" / t.id / "trajectory.xyz") for t in tasks]
            pick(FALLBACK, trajectories, known, plan.budget, fallback=True)
            pending.drain()
        return {"tasks": [t.id for t in tasks], "selected": plan.chosen(), "driver_s": round(pending.driver_seconds, 3),
                "flag_distances": monitor["min_distance"], "variance_threshold": threshold,
                "labelled": statuses.count("ok"), "failed": len(statuses) - statuses.count("ok"),
                "picks": {name: {k: v for k, v in p.items() if k != "events"} for name, p in plan.picks.items()}}

    def _gate_fails(self, fitted: dict, plan: Exploration) -> bool:
        """Would this iteration fail to converge (errors over a gate, or a target run not clean)?"""
        errors = fitted["errors"][fitted.get("deployed", "composite")]
        judgement = Judgement(0, errors["energy_mae"], errors["force_rmse"], {t: s["verdict"] for t, s in plan.md.items()},
                              {t: s["size"] for t, s in plan.md.items()}, target_size=self.config.judge.target_size,
                              stress_rmse=errors.get("stress_rmse", float("nan")))
        # the survival test (judge.survival) runs at the judge, after exploration: not known here
        return not gates(judgement, self.config).before_survival_test()

    def _survival_due(self, judgement: Judgement) -> bool:
        """A judged iteration whose stress test is missing or was measured with other settings,
        though its other gates pass: today's judge.survival must measure it."""
        config = self.config
        return (config.judge.survival is not None and gates(judgement, config).before_survival_test()
                and (judgement.survival_held is None or judgement.survival_settings != survival_settings(config)))

    def _survival_test(self, state: IterationState, fitted: dict) -> dict:
        """judge.survival: the deployed model from the training cell (1x, the exploration's start),
        one serial app per temperature and seed in ``stress/runs/<name>/``; a run whose folder
        holds its finished ``record.json`` is read back. Then ``stress/survival.json`` and
        ``survival.png`` (:func:`alcgap.survival.write_sweep`); returns the metrics entry."""
        from dataclasses import fields

        from alcgap.survival import SurvivalRun, write_sweep

        config, stress = self.config, self.config.judge.survival
        out = state.dir / "stress"
        start = str(iteration_dir(self.run_dir, 0) / "start.xyz")
        runs = [(float(t), int(seed)) for t in stress.temperatures for seed in stress.seeds]
        names = {run: f"{config.potential}-T{run[0]:g}-s{run[1]}" for run in runs}
        records: dict[tuple[float, int], dict] = {}
        pending = Pending()
        self.board.set_stage(f"iteration {state.iteration}: judge: stress test ({len(runs)} runs)")

        def finished(record: dict, run: tuple[float, int]) -> None:
            records[run] = record
            self.board.md_ended(names[run], record["outcome"])
            console.log(f"iteration {state.iteration}: stress {names[run]}: {record['outcome']}; "
                        f"shortest over aux cutoff {record['cutoff_fractions']}")

        def failed(error: BaseException, run: tuple[float, int]) -> None:
            raise RuntimeError(f"survival run {names[run]} failed: {str(error)[:500]} (see {out / 'runs' / names[run]}); "
                               "a resume runs it again") from error

        for run in runs:
            folder = out / "runs" / names[run]
            done = apps.read_survival_record(folder, apps.survival_run_settings(self.app_config, *run))
            if done is not None:  # finished before a restart
                records[run] = done
                continue
            self.board.md_started(names[run], folder, stress.steps)
            pending.add(self.apps.survival_md(self.app_config, fitted["xml"], start, run[0], run[1], str(folder)),
                        lambda record, run=run: finished(record, run), lambda error, run=run: failed(error, run))
        pending.drain()
        known = {f.name for f in fields(SurvivalRun)}
        ordered = [records[run] for run in runs]
        write_sweep([SurvivalRun(**{k: v for k, v in r.items() if k in known}) for r in ordered], out, stress.steps,
                    survival_settings(config))
        entries = []
        for run, record in zip(runs, ordered):
            fractions = record.get("cutoff_fractions") or {}
            worst = min(fractions, key=fractions.get) if fractions else None
            entries.append({"name": names[run], "temperature": run[0], "seed": run[1], "outcome": record["outcome"],
                            "steps_done": record["steps_done"], "cutoff_fractions": fractions,
                            "first_inside_aux_step": record.get("first_inside_aux_step"),
                            "physical": record.get("physical"), "held": held(record, stress.held_fraction),
                            "worst_pair": worst, "worst_fraction": fractions.get(worst) if worst else None})
        n_held = sum(entry["held"] for entry in entries)
        return {"settings": survival_settings(config), "min_held": stress.min_held, "runs": len(entries), "held": n_held,
                "fraction_held": n_held / len(entries), "records": entries, "stress_json": str(out / "survival.json")}

    def _judge(self, state: IterationState, fitted: dict) -> dict:
        from alcgap.analysis.metrics import error_metrics, parity_data
        from alcgap.analysis.uncertainty import variance_error_plot, variance_vs_error
        from alcgap.calculator import GapCalculator

        config = self.config
        plan = Exploration.load(state.dir / "exploration.json", self._tasks(state.iteration), config.select.budget)
        verdicts = {task_id: summary["verdict"] for task_id, summary in plan.md.items()}
        sizes = {task_id: summary["size"] for task_id, summary in plan.md.items()}
        # prospective error: this iteration's model on the frames it chose, labelled after the fit
        new = self.store.labelled(iteration=state.iteration, origin="explore*", settings_hash=self.settings_hash)
        prospective, correlation = None, None
        if new:
            from alcgap.analysis.uncertainty import centre_force_errors

            calc = GapCalculator(fitted["xml"], variance=True)
            prospective = error_metrics(parity_data(calc, new)).as_dict()
            prospective.update(centre_force_errors(calc, new))
            if state.iteration > 1:
                # the previous model on the same frames: neither has seen them, so this is the
                # like-for-like figure of what the last refit learned about the hard part
                previous = GapCalculator(IterationState(self.run_dir, state.iteration - 1).get("fit")["xml"])
                before = error_metrics(parity_data(previous, new)).as_dict()
                before.update(centre_force_errors(previous, new))
                prospective["previous_model"] = before
            data = variance_vs_error(calc, new)
            correlation = {"spearman": data["spearman"], "n_atoms": data["n_atoms"]}
            variance_error_plot(data, fitted["variance"]["threshold"], state.dir / "plots" / "variance_vs_error.png",
                                title=f"iteration {state.iteration}: {len(new)} selected frames")
        errors = fitted["errors"][fitted.get("deployed", "composite")]
        n_labels = self.store.summary().by_status.get("ok", 0)  # failed rows are not labels
        explored = state.get("explore_select_label")
        judgement = Judgement(state.iteration, errors["energy_mae"], errors["force_rmse"], verdicts, sizes,
                              target_size=config.judge.target_size, n_labels=n_labels, n_selected=explored["selected"],
                              n_new_labels=len(new), stress_rmse=errors.get("stress_rmse", float("nan")))
        stress = None
        if config.judge.survival is not None and gates(judgement, config).before_survival_test():
            # the decision would be "converged": the survival test decides
            stress = self._survival_test(state, fitted)
            judgement.survival_held, judgement.survival_settings = stress["fraction_held"], stress["settings"]
            judgement.survival_runs = [{k: r[k] for k in ("name", "temperature", "seed", "outcome", "steps_done", "held",
                                                        "first_inside_aux_step", "worst_pair", "worst_fraction")}
                                     for r in stress["records"]]
        decision = decide(judgement, config)
        metrics = {"iteration": state.iteration, "labels": n_labels, "new_labels": len(new), "errors": errors,
                   "prospective_errors": prospective, "variance_vs_error": correlation,
                   "variance_threshold": fitted["variance"], "n_train": fitted["n_train"], "n_test": fitted["n_test"],
                   "clustering": verdicts, "runs": plan.md, "sizes": sizes, "target_size": config.judge.target_size,
                   "flags": {t: s.get("n_flagged", 0) for t, s in plan.md.items()}, "selected": explored["selected"],
                   "flagged_atom_fraction": {t: s.get("flagged_atom_fraction") for t, s in plan.md.items()},
                   "flag_distances": explored.get("flag_distances"),
                   "picks": {name: p.get("events", []) for name, p in plan.picks.items()},
                   "stress": stress, "decision": decision.as_dict()}
        write_json_atomic(state.dir / "metrics.json", relocatable(metrics, self.run_dir))
        for task_id, summary in plan.md.items():
            where = f" first at step {summary['first_bad_step']}" if summary.get("first_bad_step") is not None else ""
            console.log(f"iteration {state.iteration}: {task_id} {summary['verdict']}{where}; "
                        f"{summary.get('n_flagged', 0)} flagged frames; T reached {summary.get('temperature')}")
        if prospective:
            def figures(errors: dict) -> str:
                core = errors.get("core_force_rmse")
                return ((f"F {core:.3f} eV/A on the {errors['n_core']} atoms at the explored geometry "
                         f"({errors['core_force_relative']:.2f} of their reference RMS); " if core is not None else "")
                        + f"all atoms {errors['energy_mae']:.1f} meV/atom, F {errors['force_rmse']:.3f} eV/A")

            console.log(f"iteration {state.iteration}: prospective error on its {len(new)} new labels: "
                        + figures(prospective)
                        + (f"; the previous model on them: {figures(prospective['previous_model'])}"
                           if "previous_model" in prospective else "")
                        + f"; variance-error Spearman {correlation['spearman']}")
        return {"decision": decision.as_dict(), "verdicts": verdicts, "judgement": asdict(judgement)}

    def _summary(self, last: int, decision: StopDecision) -> dict:
        target = self.config.judge.target_size
        summary = {"run_dir": str(self.run_dir), "iterations": last, "stopped_by": decision.rule, "why": decision.why,
                   "target_size": target, "target_is_10x": target == 10,
                   "store": str(self.store.summary()), "settings_hash": self.settings_hash,
                   "metrics": [read_run_json(iteration_dir(self.run_dir, k) / "metrics.json", self.run_dir)
                               for k in range(1, last + 1) if (iteration_dir(self.run_dir, k) / "metrics.json").exists()]}
        write_json_atomic(self.run_dir / "summary.json", relocatable(summary, self.run_dir))
        return summary


def _exit_on_sigterm():
    """Make SIGTERM raise SystemExit in the driver (main thread only), so that ``finally`` blocks
    run; return the handler it replaced (None when not in the main thread)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    return signal.signal(signal.SIGTERM, handler)


def run_campaign(config, run_dir, *, site=None, reference=None, select_fn=None) -> dict:
    """Run (or resume) a campaign: the Python API behind ``alcgap run``."""
    return Campaign(config, run_dir, site=site, reference=reference, select_fn=select_fn).run()


def resume_campaign(run_dir, *, site=None, reference=None, select_fn=None, stop: dict | None = None) -> dict:
    """Continue a stopped or killed campaign from its checkpoints, with its frozen config.

    ``stop`` raises (or lowers) its limits, e.g. ``{"max_iterations": 8}``: a campaign that
    stopped at a limit goes on from its last finished iteration."""
    frozen = Path(run_dir) / "campaign.yaml"
    if not frozen.exists():
        raise ConfigError(f"{run_dir} holds no campaign (no campaign.yaml): start it with `alcgap run`")
    config = read_yaml(frozen, ConfigError) or {}
    if stop:
        config["stop"] = {**config.get("stop", {}), **stop}
    return run_campaign(load_campaign_config(config), run_dir, site=site, reference=reference, select_fn=select_fn)
