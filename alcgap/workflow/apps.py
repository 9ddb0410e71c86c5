"""The work of a campaign as plain functions, each one Parsl app (see :mod:`alcgap.workflow.campaign`).

Every function here takes and returns small picklable things (settings as dicts, paths, Atoms,
Labels) and writes its outputs into the folder it is given, so the same call runs inside a
Parsl worker on a compute node, or directly in a test. None of them touches the label store:
the campaign driver is its only writer.
"""

from __future__ import annotations

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


def fit_main(config: dict, train: list[Atoms], test: list[Atoms], atom_energies: dict, aux_xml: str, out_dir: str) -> dict:
    """Fit the main GAP on the residual of the training labels; held-out errors of the composite."""
    from alcgap.analysis.metrics import error_metrics, parity_data
    from alcgap.analysis.plots import parity_plot
    from alcgap.calculator import GapCalculator
    from alcgap.config import CampaignConfig
    from alcgap.fit.main import fit_main_gap

    settings = CampaignConfig.model_validate(config)
    out = Path(out_dir)
    started = time.time()
    xml = fit_main_gap(train, settings.main, atom_energies, out / "fit", aux_xml=aux_xml, name="composite.xml",
                       threads=settings.threads, seed=settings.seed)
    models = {"composite": xml}
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
    return {"xml": str(xml), "models": {k: str(v) for k, v in models.items()}, "errors": errors,
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


# -- selection and judging ----------------------------------------------------------------------

def select(flagged_path: str, known_path: str, species: list[str], budget: int, min_soap_distance: float,
           out_path: str, select_fn=None) -> str:
    """Choose frames to label among one MD task's flagged frames; write them to ``out_path``."""
    from alcgap.select import SelectionSettings, select_frames

    candidates = read_frames(flagged_path)
    known = read_frames(known_path)
    settings = SelectionSettings(budget=budget, min_distance=min_soap_distance)
    if select_fn is not None:
        chosen = list(select_fn(candidates, known, budget))[:budget]
    else:
        chosen = select_frames(candidates, species, settings, known=known).chosen
    write_frames_atomic(out_path, chosen)
    return out_path


def clustering_verdict(frame_path: str, species: list[str], criteria: dict | None = None) -> dict:
    """Clean or clustered: the final frame of an MD run, judged by the clustering detector
    (``criteria`` as :class:`~alcgap.analysis.clustering.ClusteringCriteria` fields; default: SiO2's
    for Si + O, otherwise from covalent radii)."""
    from alcgap.analysis.clustering import ClusteringCriteria, detect_clustering

    frames = read_frames(frame_path)
    if not frames:
        return {"verdict": "clustered", "why": f"no final frame in {frame_path}"}
    if criteria is not None:
        rules = ClusteringCriteria(**criteria)
    elif set(species) == {"Si", "O"}:
        rules = ClusteringCriteria.sio2()
    else:
        rules = ClusteringCriteria.from_covalent_radii(species)
    return detect_clustering(frames[-1], rules).as_dict()


# -- exploration MD --------------------------------------------------------------------------

def write_md_task(config: dict, xml: str, seed: int, temperature: float, size: int, folder: str,
                  start: str) -> str:
    """The task file of one exploration run: melt-and-quench of ``size`` x the training cell."""
    from alcgap.config import CampaignConfig
    from alcgap.md.protocols import melt_and_quench
    from alcgap.md.task import MDTask

    settings = CampaignConfig.model_validate(config)
    explore = settings.explore
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    task = MDTask(
        structure=str(Path(start).resolve()),
        size_factor=size,
        force_field={"xml": str(Path(xml).resolve()), "species": settings.species},
        protocol=melt_and_quench(explore.protocol_scale, t_melt=temperature),
        timestep=explore.timestep,
        seed=seed,
        sample_every=explore.monitor_every * 5,
        monitor={"every": explore.monitor_every, "min_distance": explore.min_distances,
                 "variance_threshold": explore.variance_threshold},
        output_dir=str(out.resolve()),
    )
    return str(task.write(out / "task.json"))


def md_command(task_file: str, launcher: str = "", threads: int = 1) -> str:
    """Shell line that runs one MD task file on the ranks the launcher starts."""
    return f"export OMP_NUM_THREADS={threads}; {launcher} {sys.executable} -m alcgap.md.task {task_file}"
