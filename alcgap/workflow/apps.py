"""The work of a campaign as plain functions, each one Parsl app (see :mod:`alcgap.workflow.campaign`).

Every function here takes and returns small picklable things (settings as dicts, paths, Atoms,
Labels) and writes its outputs into the folder it is given, so the same call runs inside a
Parsl worker on a compute node, or directly in a test. None of them touches the label store:
the campaign driver is its only writer.
"""

from __future__ import annotations

import functools

import json
import os
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms

from alcgap.reference.base import Label, LabelStatus, Reference
from alcgap.workflow.state import read_frames, write_frames_atomic, write_json_atomic

LABEL_FILE = "label.json"


# -- labelling ---------------------------------------------------------------------------------

def label_to_dict(label: Label) -> dict[str, Any]:
    return {
        "status": label.status.value,
        "energy": label.energy,
        "forces": None if label.forces is None else np.asarray(label.forces).tolist(),
        "stress": None if label.stress is None else np.asarray(label.stress).tolist(),
        "reason": label.reason,
        "info": label.info,
    }


def label_from_dict(data: dict[str, Any]) -> Label:
    return Label(
        LabelStatus(data["status"]),
        energy=data["energy"],
        forces=None if data["forces"] is None else np.array(data["forces"]),
        stress=None if data["stress"] is None else np.array(data["stress"]),
        reason=data.get("reason", ""),
        info=data.get("info", {}),
    )


def label_structure(reference: Reference, atoms: Atoms, workdir: str, launcher: str | None = None,
                    threads: int | None = None, parsl_resource_specification: dict | None = None) -> tuple[Label, float, float]:
    """Label one structure in ``workdir``; return the label and when it started and finished.

    ``launcher`` (a shell prefix such as ``srun -n $PARSL_NUM_RANKS``, environment variables
    expanded here, on the worker that Parsl gave the task's ranks) and ``threads`` override the
    launch settings of a DFT reference; they do not change the label.

    The label is kept in ``workdir/label.json`` before it is returned: if the driver dies before
    it stores the label, a resumed campaign finds the file and never repeats the calculation.
    """
    cache = Path(workdir) / LABEL_FILE
    if cache.exists():
        saved = json.loads(cache.read_text())
        return label_from_dict(saved["label"]), saved["started"], saved["finished"]
    Path(workdir).mkdir(parents=True, exist_ok=True)
    if hasattr(reference, "workdir"):
        reference.workdir = Path(workdir)
    settings = getattr(reference, "config", None)
    if launcher is not None and hasattr(settings, "launch_prefix"):
        # "VAR=value ... mpiexec -n $PARSL_NUM_RANKS": assignments go to the environment
        words = shlex.split(os.path.expandvars(launcher))
        while words and "=" in words[0] and not words[0].startswith(("/", ".")):
            name, value = words.pop(0).split("=", 1)
            os.environ[name] = value
        update = {"launch_prefix": words}
        if threads is not None:
            update["omp_threads"] = threads
        reference.config = settings.model_copy(update=update)
    started = time.time()
    label = reference.compute(atoms)
    finished = time.time()
    # a time-out or a hang may pass on a quieter node, and an input error is the settings' fault,
    # not the structure's: none of them is kept as this structure's final answer
    if label.status not in (LabelStatus.TIMED_OUT, LabelStatus.HUNG, LabelStatus.INPUT_ERROR):
        write_json_atomic(cache, {"label": label_to_dict(label), "started": started, "finished": finished})
    return label, started, finished


def check_reference(reference: Reference, parsl_resource_specification: dict | None = None) -> str:
    """``check_on: compute``: the reference's machine checks where its labels run (the worker's
    node); what it found (the data directory)."""
    return reference.check_here()


# -- fitting ----------------------------------------------------------------------------------

def fit_aux(config: dict, curves: dict, out_dir: str) -> dict:
    """Fit and check the repulsive auxiliary from dimer curves; write its LAMMPS table too."""
    from alcgap.config import CampaignConfig
    from alcgap.dimers import DimerCurve
    from alcgap.auxiliary import fit_repulsive_aux
    from alcgap.workflow.fit import write_aux_exports
    from alcgap.structures import pair_key

    settings = CampaignConfig.model_validate(config)
    cutoffs = settings.aux.pair_cutoffs()
    dimer_curves = {}
    for name, curve in curves.items():
        pair = pair_key(*name.split("-"))
        dimer_curves[pair] = DimerCurve(pair, np.array(curve["r"]), np.array(curve["energy"]), curve.get("failed", {}))
    out = Path(out_dir)
    aux = fit_repulsive_aux(dimer_curves, cutoffs, settings.aux, out, threads=settings.threads)
    table = write_aux_exports(aux, out, settings.species)
    return {"aux_xml": str(aux.xml), "aux_table": str(table), "checks": {name: asdict(c) for name, c in aux.checks.items()},
            "record": aux.record()}


def fit_main(config: dict, train: list[Atoms], test: list[Atoms], atom_energies: dict, aux_xml: str | None,
             out_dir: str) -> dict:
    """Fit the main GAP on the residual of the training labels (on the labels themselves for a
    ``potential: plain`` campaign, which has no aux); held-out errors of the deployed model."""
    from alcgap.analysis.metrics import error_metrics, parity_data
    from alcgap.analysis.plots import parity_plot
    from alcgap.calculator import GapCalculator
    from alcgap.config import CampaignConfig
    from alcgap.fit.main import fit_main_gap

    settings = CampaignConfig.model_validate(config)
    out = Path(out_dir)
    started = time.time()
    deployed = settings.potential  # "composite" or "plain"
    xml = fit_main_gap(train, settings.main, atom_energies, out / "fit", aux_xml=aux_xml if deployed == "composite" else None,
                       name=f"{deployed}.xml", threads=settings.threads, seed=settings.seed)
    models = {deployed: xml}
    if settings.traditional:
        models["traditional"] = fit_main_gap(train, settings.main, atom_energies, out / "fit-traditional",
                                             name="traditional.xml", threads=settings.threads, seed=settings.seed)
    errors, evaluated = {}, {}
    for name, model in models.items():
        data = parity_data(GapCalculator(model), test)
        evaluated[name] = (data, error_metrics(data))
        errors[name] = evaluated[name][1].as_dict()
    (out / "plots").mkdir(parents=True, exist_ok=True)
    parity_plot(evaluated, out / "plots" / "parity.png")
    explore = settings.explore
    if explore.variance_threshold == "auto":
        from alcgap.analysis.uncertainty import calibrate_variance

        # on the held-out bootstrap atoms: the ordinary material, which the model has not seen
        # (at its own training atoms, often its sparse points, a GP's variance is ~0)
        variance = calibrate_variance(GapCalculator(xml, variance=True), test, explore.variance_quantile,
                                      explore.variance_factor)
    else:
        variance = {"threshold": float(explore.variance_threshold), "set_by": "explore.variance_threshold"}
    return {"xml": str(xml), "deployed": deployed, "models": {k: str(v) for k, v in models.items()}, "errors": errors,
            "variance": variance,
            "n_train": len(train), "n_test": len(test), "seconds": time.time() - started}


# -- bootstrap MD -------------------------------------------------------------------------------

def bootstrap_md(config: dict, out_path: str) -> str:
    """Classical melt-and-quench of the training cell, subsampled frames written to ``out_path``."""
    from alcgap.config import CampaignConfig
    from alcgap.reference import make_reference
    from alcgap.workflow.fit import bootstrap_frames

    settings = CampaignConfig.model_validate(config)
    classical = settings.reference if settings.reference.kind == "lammps" else None
    reference = make_reference(classical, settings.species) if classical else None
    frames = bootstrap_frames(settings, reference)
    write_frames_atomic(out_path, frames)
    return out_path


# -- selection --------------------------------------------------------------------------------

def select(candidate_paths: list[str], known_paths: list[str], config: dict, budget: int, variance_threshold: float | None,
           out_path: str, *, fallback: bool = False, onsets: dict[str, int] | None = None, select_fn=None,
           model_xml: str | None = None) -> dict:
    """Choose up to ``budget`` flagged local environments among the frames of ``candidate_paths``
    and write what is to be labelled to ``out_path``: whole frames up to ``label.max_atoms``,
    carved periodic sub-cells around each chosen environment of larger frames.

    ``known_paths``: frames whose environments are already known (the training set, and what
    was chosen before in this iteration); ``fallback``: when no atom is flagged, take the most
    informative atoms instead (highest variance, or farthest from the known ones). ``onsets``:
    task id -> the step its run first went wrong; later frames of that run follow from the
    model's error, not from the material, and are not candidates. ``model_xml``: the model that
    explored; it relaxes the boundary of each carved cell (``label.relax_boundary``).
    ``select_fn(candidates, known, budget) -> frames`` replaces the built-in choice."""
    from alcgap.explore.carve import CarveSettings
    from alcgap.config import CampaignConfig
    from alcgap.explore.select import SelectionSettings, select_environments

    settings = CampaignConfig.model_validate(config)
    candidates = []
    for path in candidate_paths:  # a task's frames live in its folder, named by the task id
        for frame in read_frames(path):
            frame.info.setdefault("task", Path(path).parent.name)
            onset = (onsets or {}).get(frame.info["task"])
            if onset is None or int(frame.info.get("md_step", 0)) <= onset:
                candidates.append(frame)
    known = [frame for path in known_paths for frame in read_frames(path)]
    if select_fn is not None:
        chosen = list(select_fn(candidates, known, budget))[:budget]
        write_frames_atomic(out_path, chosen)
        return {"path": out_path, "n_chosen": len(chosen), "n_candidates": len(candidates), "events": []}
    max_atoms = label_max_atoms(settings)
    soap = settings.main.soap
    # the selection's own SOAP (cutoff 4 A, n = l = 4): its duplicate threshold was measured with it
    choice = SelectionSettings(budget=budget, variance_threshold=variance_threshold, whole_frame_atoms=max_atoms,
                               fallback=fallback,
                               **({"min_distance": settings.select.min_soap_distance}
                                  if settings.select.min_soap_distance is not None else {}))
    selection = select_environments(candidates, settings.species, choice, known=known)
    carving = CarveSettings(radius=settings.label.carve_radius or soap.cutoff)
    relax = boundary_relaxer(settings, model_xml)
    by_frame: dict[int, list] = {}
    for event in selection.events:
        by_frame.setdefault(event.frame, []).append(event)
    out, events, skipped = [], [], []
    for index in sorted(by_frame):
        frame, chosen = candidates[index], by_frame[index]
        base = {k: frame.info[k] for k in ("task", "md_step", "max_variance", "min_distance", "flag_reasons") if k in frame.info}
        best = min(chosen, key=lambda e: (e.kind != "short_pair", e.score if e.kind == "short_pair" else -e.score))
        if len(frame) <= max_atoms:
            pieces = [_bare(frame)]
            pieces[0].info["centre_atoms"] = np.array([c for e in chosen for c in e.centres], dtype=int)
        else:
            pieces = _carve(frame, [_core(frame, e.centres) for e in chosen], carving, skipped, base, relax)
        for piece in pieces:
            piece.info.update(base, selection_kind=best.kind, selection_score=float(best.score))
            out.append(piece)
        events += [{"task": base.get("task"), "md_step": base.get("md_step"), "kind": e.kind, "score": float(e.score),
                    "centres": [int(c) for c in e.centres], "soap_distance": float(e.soap_distance),
                    "n_atoms": len(frame)} for e in chosen]
    write_frames_atomic(out_path, out)
    return {"path": out_path, "n_chosen": len(out), "n_candidates": selection.n_candidates,
            "n_duplicates": selection.n_duplicates, "n_over_budget": selection.n_over_budget, "events": events,
            "not_carved": skipped}


#: the atoms of an event a carved cell is centred on: its chosen atom and, within this distance,
#: its flagged partners (the other atom of its short pair). The event's other atoms lie
#: inside the carving radius around them anyway; centring on all of them made a 4-atom cluster
#: a 93-atom xTB cell (11.8 A) where the pair alone needs about 45 (9-10 A)
CORE_RADIUS = 2.0


def boundary_relaxer(settings, model_xml: str | None):
    """``cell, source -> cell`` relaxing a carved cell's boundary with the model that explored
    (alcgap.explore.carve.relax_boundary), or None when ``label.relax_boundary`` is off or no model is given."""
    if not settings.label.relax_boundary or model_xml is None:
        return None
    from alcgap.calculator import GapCalculator
    from alcgap.explore.carve import relax_boundary

    frozen = frozen_radius(settings)

    @functools.cache
    def model() -> GapCalculator:  # read once, and only when a frame is carved
        return GapCalculator(model_xml)

    return lambda cell, source: relax_boundary(source, cell, model(), frozen)


def frozen_radius(settings) -> float:
    """``label.carve_frozen_radius``, default the carving radius less 1 A (alcgap.explore.carve)."""
    radius = settings.label.carve_radius or settings.main.soap.cutoff
    return settings.label.carve_frozen_radius or max(radius - 1.0, 0.5 * radius)


def _carve(frame: Atoms, cores: list[list[int]], settings, skipped: list, base: dict, relax=None) -> list[Atoms]:
    """One carved cell per event of a frame. Events are never carved together: the selection
    keeps them at least ``merge_radius`` apart, and one cell around two of them is several
    times one around each (seen: 93 atoms for two xTB events against 42 each; DFT cost ~N^3).
    A frame too small to hold a cell of the carving radius (a 2x cell, say) costs no more whole
    than carved: it is labelled whole, once, and the reason recorded."""
    from alcgap.explore.carve import carve

    pieces = []
    for core in cores:
        try:
            cell = carve(frame, core, settings)
            pieces.append(relax(cell, frame) if relax is not None else cell)
        except ValueError as err:
            skipped.append({"task": base.get("task"), "md_step": base.get("md_step"), "why": str(err)[:300]})
    if pieces or not skipped:
        return pieces
    whole = _bare(frame)
    whole.info["centre_atoms"] = np.array([c for core in cores for c in core], dtype=int)
    whole.info["carve_failed"] = skipped[-1]["why"][:200]
    return [whole]


def _core(frame: Atoms, centres: list[int]) -> list[int]:
    first = centres[0]
    if len(centres) == 1:
        return [first]
    d = frame.get_distances(first, centres[1:], mic=True)
    return [first] + [c for c, r in zip(centres[1:], d) if r <= CORE_RADIUS]


def _bare(frame: Atoms) -> Atoms:
    copy = Atoms(frame.numbers, positions=frame.positions, cell=frame.cell, pbc=frame.pbc)
    copy.info.update(frame.info)
    for name in ("local_gap_variance", "short_pair_ratio"):
        if name in frame.arrays:
            copy.arrays[name] = frame.arrays[name].copy()
    return copy


def label_max_atoms(settings) -> int:
    """Frames with more atoms than this are carved (``label.max_atoms``, default the training cell)."""
    return settings.label.max_atoms or settings.data.n_atoms


# -- exploration MD --------------------------------------------------------------------------

def exploration_monitor(config: dict, table: dict, variance_threshold: float | None, training_path: str) -> dict:
    """The monitors of an exploration run: flags, clustering verdict and collapse, from one table
    (the flags for the model trained on the frames of ``training_path``)."""
    from alcgap.config import CampaignConfig
    from alcgap.explore.distances import DistanceTable, clustering_criteria

    settings = CampaignConfig.model_validate(config)
    distances = DistanceTable.from_dict(table)
    criteria = clustering_criteria(settings.species, distances, settings.judge.clustering)
    flags = distances.flags_for(read_frames(training_path), settings.distances.data_margin)
    return {"every": settings.explore.monitor_every, "min_distance": flags,
            "clustering": criteria.model_dump(), "collapse_fraction": distances.collapse_fraction,
            "variance_threshold": variance_threshold}


def write_md_task(config: dict, xml: str, seed: int, temperature: float, size: int, folder: str,
                  start: str, monitor: dict) -> str:
    """The task file of one exploration run: heat, hold and quench ``size`` x the training cell."""
    from alcgap.config import CampaignConfig
    from alcgap.md.protocols import exploration_protocol
    from alcgap.md.task import MDTask

    settings = CampaignConfig.model_validate(config)
    explore = settings.explore
    out = Path(folder).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # paths relative to the task file (load_task reads them so): a moved run directory still runs it
    here = lambda path: os.path.relpath(Path(path).resolve(), out)  # noqa: E731
    task = MDTask(
        structure=str(Path(start).resolve()),
        size_factor=size,
        force_field={"xml": str(Path(xml).resolve()), "species": settings.species},
        protocol=exploration_protocol(max(10, round(150_000 * explore.protocol_scale)), temperature,
                                      heat_fraction=explore.heat_fraction, hold_fraction=explore.hold_fraction),
        timestep=explore.timestep,
        seed=seed,
        sample_every=explore.monitor_every * 5,
        monitor=monitor,
        output_dir=str(out),
        checkpoint_every=explore.checkpoint_every,
        max_displacement=explore.max_displacement,
        max_energy_change=explore.max_energy_change,
    )
    task = task.model_copy(update={"structure": here(task.structure), "output_dir": ".",
                                   "force_field": task.force_field.model_copy(update={"xml": here(task.force_field.xml)})})
    return str(task.write(out / "task.json"))


def md_task_atoms(task_file: str) -> int:
    """Atoms of the cell an MD task file runs (its structure x ``size_factor``): what the site's
    ``tasks.md.ranks`` by size is keyed on."""
    import ase.io

    from alcgap.md.task import load_task

    task = load_task(task_file)
    return len(ase.io.read(task.structure, index=task.frame)) * task.size_factor


def md_command(task_file: str, launcher: str = "", threads: int = 1) -> str:
    """Shell line that runs one MD task file on the ranks the launcher starts."""
    return f"export OMP_NUM_THREADS={threads}; {launcher} {sys.executable} -m alcgap.md.task {task_file}"


# -- the judge's stress test ------------------------------------------------------------------

#: a finished survival run's record in its folder: read back on resume, not run again
SURVIVAL_RECORD = "record.json"


def survival_run_settings(config: dict, temperature: float, seed: int) -> dict:
    """What one survival run of ``judge.survival`` is, besides the model: a record made with other
    settings is not this run's (a resume with a changed judge.survival or explore step runs it again)."""
    from alcgap.config import CampaignConfig
    from alcgap.workflow.stop import survival_md_settings

    settings = CampaignConfig.model_validate(config)
    return {"potential": settings.potential, "temperature": float(temperature), "seed": int(seed),
            "steps": settings.judge.survival.steps, **survival_md_settings(settings)}


def read_survival_record(folder: str | os.PathLike, run_settings: dict) -> dict | None:
    """The finished record of a survival run in ``folder`` made with ``run_settings``, else None."""
    path = Path(folder) / SURVIVAL_RECORD
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("settings") == json.loads(json.dumps(run_settings)) else None


def survival_md(config: dict, xml: str, start_path: str, temperature: float, seed: int, folder: str) -> dict:
    """One run of the judge's stress test (:func:`alcgap.survival.survival_run`, serial MD in this
    process): ``xml`` from the training cell at ``temperature`` K. The record (its fields, and
    ``physical`` and the run's ``settings``) is written to ``folder/record.json`` when the run
    ends and returned; a folder that holds one for the same settings is read back, not run."""
    from alcgap.config import CampaignConfig
    from alcgap.survival import survival_run

    run = survival_run_settings(config, temperature, seed)
    done = read_survival_record(folder, run)
    if done is not None:
        return done
    settings = CampaignConfig.model_validate(config)
    start = read_frames(start_path)[0]
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    record = survival_run(settings.potential, xml, settings.species, start, temperature=float(temperature), density=1.0,
                        seed=int(seed), steps=run["steps"], timestep=run["timestep"], aux_cutoffs=run["aux_cutoffs"],
                        max_displacement=run["max_displacement"], max_energy_change=run["max_energy_change"],
                        monitor_every=run["monitor_every"], folder=out)
    data = {**asdict(record), "physical": record.physical, "settings": run}
    write_json_atomic(out / SURVIVAL_RECORD, data)
    return json.loads(json.dumps(data))
