"""The fast scale, run here end to end: fits, MD runs (one at a time), measurements, report.

Folder layout of ``out``::

    settings.json               the scale (a resume must not change it)
    start.xyz                   the crystal every melt-and-quench starts from
    reference/md/<run>/         Vashishta melt-and-quench per seed (shared by both modes)
    <mode>/fit/                 alcgap's run_fit: aux, data, composite + traditional, summary.json
    <mode>/md/<run>/            composite and traditional per seed, composite at 10x
    <mode>/claims.json          every figure of the five claims for this mode
    figures/                    fig3-parity-, fig4e-rdf-, fig5a-vdos-<...>-<mode>.png
    report.md, report.json      the headline table and everything behind it
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import ase.io
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from alcgap.structures import beta_cristobalite, supercell_with_atoms
from alcgap.workflow.state import read_run_json

import tables
from claims import ReferenceCalculator
from mdruns import RunSpec, run_task_file, write_task
from measure import Stages, console, measure_mode
from scales import MODE_DIRS, TRAINING_MODES, Scale


class SettingsMismatch(RuntimeError):
    pass


def check_settings(out: Path, scale: Scale) -> None:
    """Refuse to resume a folder made with another scale: its runs would not be comparable."""
    from dataclasses import MISSING, fields

    path = out / "settings.json"
    current = json.loads(json.dumps(scale.as_dict()))
    if path.exists():
        saved = json.loads(path.read_text())["scale"]
        # a setting added to Scale since the folder was made counts as unchanged at its default
        defaults = json.loads(json.dumps({f.name: f.default for f in fields(Scale) if f.default is not MISSING}))
        changed = sorted(k for k in current if saved.get(k, defaults.get(k)) != current[k])
        if changed:
            raise SettingsMismatch(f"{out} holds a run with other settings ({', '.join(changed)}); use another --out")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"scale": current}, indent=1))


def run_fast_scale(scale: Scale, modes: list[str], n_seeds: int, out: Path) -> Path:
    from alcgap.reference import LammpsReference

    check_settings(out, scale)
    seeds = list(range(1, n_seeds + 1))
    start = out / "start.xyz"
    ase.io.write(start, supercell_with_atoms(beta_cristobalite(), scale.n_atoms), format="extxyz")
    per_mode = 1 + 2 * n_seeds + scale.big_seeds + 1 + 2 * n_seeds + 1  # fit, MD, 10x, held-out, VDOS, cost
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    started = time.perf_counter()
    vashishta = ReferenceCalculator(LammpsReference.vashishta_sio2())
    with Progress(*columns, console=console) as progress:
        stages = Stages(progress, len(modes) * per_mode + n_seeds + 1)
        fits = {mode: stages.run(f"fit {mode}", fit_mode, scale, mode, out) for mode in modes}
        reference = [stages.run(f"MD reference seed {s}", run_md, RunSpec("reference", s), scale, start, {},
                                out / "reference" / "md") for s in seeds]
        results = {}
        for mode in modes:
            base, models = out / MODE_DIRS[mode], fits[mode]["models"]
            runs = {p: [stages.run(f"MD {mode} {p} seed {s}", run_md, RunSpec(p, s), scale, start, models, base / "md")
                        for s in seeds] for p in ("composite", "traditional")}
            big = [stages.run(f"MD {mode} composite x{scale.big_factor} seed {s}", run_md,
                              RunSpec("composite", s, scale.big_factor), scale, start, models, base / "md")
                   for s in range(1, scale.big_seeds + 1)]
            results[mode] = measure_mode(stages, scale, mode, base, start, fit_data(fits[mode]), runs, big, reference,
                                         vashishta)
        report = stages.run("report", tables.write_report, out, scale, seeds, results, stages.seconds,
                            time.perf_counter() - started)
    return report


def rebuild_report(scale: Scale, modes: list[str], n_seeds: int, out: Path) -> Path:
    """The report again from the measurements on disk (``<mode>/claims.json``), nothing re-run."""
    results = {}
    for mode in modes:
        path = out / MODE_DIRS[mode] / "claims.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no measurements of mode {mode}; run the benchmark first")
        results[mode] = json.loads(path.read_text())
    previous = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return tables.write_report(out, scale, list(range(1, n_seeds + 1)), results, previous.get("stage_seconds", {}),
                               previous.get("run_time_s", 0.0), previous.get("load_average_at_end"))


def fit_mode(scale: Scale, mode: str, out: Path) -> dict:
    """alcgap's run_fit (aux, data, composite and traditional from the same data), once."""
    from alcgap.config import load_fit_config
    from alcgap.workflow.fitjob import run_fit

    run_dir = out / MODE_DIRS[mode] / "fit"
    summary = run_dir / "summary.json"
    if summary.exists():
        return read_run_json(summary)
    return run_fit(load_fit_config(scale.fit_config(TRAINING_MODES[mode])), run_dir)


def fit_data(summary: dict) -> dict:
    run_dir = Path(summary["run_dir"])
    return {"models": summary["models"], "summary_errors": summary["test_errors"],
            "test": ase.io.read(run_dir / "test.xyz", index=":"), "train": ase.io.read(run_dir / "train.xyz", index=":")}


def run_md(spec: RunSpec, scale: Scale, start: Path, models: dict, folder: Path) -> dict:
    run_dir = folder / spec.name
    result = run_task_file(write_task(spec, scale, start, models, run_dir))
    state = f"stopped early: {str(result.get('stop_reason'))[:160]}" if result.get("stopped_early") else "finished"
    shortest = ", ".join(f"{p} {d:.2f}" for p, d in sorted((result.get("min_distances") or {}).items()))
    console.log(f"{spec.name}: {state}; shortest pairs (A): {shortest}")
    return {"spec": spec, "folder": run_dir, "result": result}
