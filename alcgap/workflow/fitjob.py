"""``alcgap fit``: a campaign's iteration 0 and one fit, through the same stages, run inline.

The run directory is a campaign's: ``data.db`` (every label, with provenance), ``iter-000/``
(dimers, the auxiliary, the bootstrap frames, the held-out split) and ``iter-001/`` (train.xyz,
test.xyz, the composite and, with ``traditional``, the traditional GAP, parity and short-range
plots); ``fit.yaml`` the config and ``summary.json`` what came out.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import yaml

from alcgap.config import FitConfig
from alcgap.explore.distances import unguarded_warnings
from alcgap.fit.gapfit import find_gap_fit
from alcgap.reference import make_reference
from alcgap.store import LabelStore
from alcgap.workflow.apps import InlineApps
from alcgap.workflow.context import Run
from alcgap.workflow.progress import ProgressBoard
from alcgap.workflow.stages.bootstrap import run_bootstrap
from alcgap.workflow.stages.fit import fit
from alcgap.workflow.state import read_frames, relocatable


def run_fit(config: FitConfig, run_dir: str | os.PathLike) -> dict:
    """Run the whole composite fit in ``run_dir``; return (and write) the summary."""
    find_gap_fit()  # fail before any work if gap_fit is missing
    run_dir = Path(run_dir).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "fit.yaml").write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    reference = make_reference(config.reference, config.species)
    store = LabelStore(run_dir / "data.db")
    run = Run(config, run_dir, reference, store, InlineApps(), ProgressBoard(run_dir, live=False), threads=config.threads)
    store.register_settings(reference.name, run.settings_hash, reference.settings())
    run_bootstrap(run, distance_table=False)
    first = run.iteration(1)
    fitted = run.stage(first, "fit", lambda: fit(run, first))
    # a campaign flags and labels pairs in the unguarded range; a single fit can only say so
    for warning in unguarded_warnings(fitted.get("unguarded_range", {})):
        run.log(f"[yellow]{warning}[/]")
    return _summary(run, fitted)


def _summary(run: Run, fitted: dict) -> dict:
    boot, run_dir = run.iteration(0), run.run_dir
    dimers, aux = boot.get("dimers"), boot.get("aux")
    (run_dir / "dimers.json").write_text(json.dumps(dimers, indent=1))
    for name in ("train.xyz", "test.xyz"):  # the data of the fit, at the top for people
        shutil.copyfile(run.iteration(1).dir / name, run_dir / name)
    failed = [{"fingerprint": row.fingerprint, "status": row.status, "reason": row.data.get("label_reason", "")}
              for row in run.store.rows(origin="bootstrap", status=None) if row.status != "ok"]
    summary = {
        "run_dir": str(run_dir),
        "reference": {"name": run.reference.name, "settings_hash": run.settings_hash},
        "atom_energies_eV": dimers["atom_energies"],
        "n_frames": len(read_frames(boot.dir / "bootstrap.xyz")), "n_train": fitted["n_train"],
        "n_test": fitted["n_test"], "failed_labels": failed,
        "aux": aux["checks"], "aux_fit": aux["record"], "aux_xml": aux["aux_xml"], "aux_table": aux["aux_table"],
        "models": fitted["models"], "test_errors": fitted["errors"], "n_train_virials": fitted["n_train_virials"],
        # dimer energy relative to 2.5 A at 0.8 x the aux cutoff, per model: the composite must repel
        "short_range_eV": fitted.get("short_range_eV"),
        # per pair, the range neither the aux nor the training data covers (the main GAP's alone)
        "unguarded_range": fitted.get("unguarded_range"),
        "timings_s": {stage: entry.get("seconds") for k in (0, 1) for stage, entry in run.iteration(k).stages.items()},
        "plots": sorted(str(p) for p in run_dir.glob("iter-*/plots/*.png")),
    }
    # paths in the file relative to the run directory (read it back with read_run_json); the
    # caller gets them as they are
    (run_dir / "summary.json").write_text(json.dumps(relocatable(summary, run_dir), indent=1))
    return summary
