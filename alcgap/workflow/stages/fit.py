"""The fit stage: the main SOAP GAP on the residual of the training labels (on the labels
themselves for a plain potential), the traditional GAP beside it when asked, the held-out errors
and parity plot of each, and the variance threshold of the deployed model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ase import Atoms

from alcgap.analysis.metrics import error_metrics, parity_data
from alcgap.analysis.plots import parity_plot, short_range_plot
from alcgap.analysis.uncertainty import calibrate_variance
from alcgap.explore.distances import unguarded_ranges
from alcgap.calculator import GapCalculator
from alcgap.config import AuxSettings, ExploreSettings, MainSettings
from alcgap.dimers import short_range_curves
from alcgap.fit.main import VIRIAL_KEY, fit_main_gap, training_frames
from alcgap.structures import pair_key
from alcgap.workflow.context import Run
from alcgap.workflow.stages.bootstrap import bootstrap_split
from alcgap.workflow.state import IterationState, write_frames_atomic


def _variance(calc: GapCalculator, test: list[Atoms], explore: ExploreSettings | None) -> dict | None:
    """The deployed model's variance threshold (a campaign's flags); None for a single fit."""
    if explore is None:
        return None
    if explore.variance_threshold == "auto":
        # on the held-out bootstrap atoms: the ordinary material, which the model has not seen
        # (at its own training atoms, often its sparse points, a GP's variance is ~0)
        return calibrate_variance(calc, test, explore.variance_quantile, explore.variance_factor)
    return {"threshold": float(explore.variance_threshold), "set_by": "explore.variance_threshold"}


def _short_range(models: dict[str, Path], aux: AuxSettings, out: Path) -> dict:
    """Dimer energy of each model at 0.8 x each aux cutoff, relative to 2.5 A (the composite must
    repel there), and their curves plotted (``plots/short_range.png``)."""
    cutoffs = aux.pair_cutoffs()
    short = short_range_curves({name: GapCalculator(xml) for name, xml in models.items()}, cutoffs, aux.scan.r_min)
    short_range_plot(short, out / "plots" / "short_range.png")
    return {pair: {name: float(np.interp(0.8 * cutoffs[pair_key(*pair.split("-"))], c["r"], e))
                   for name, e in c.items() if name != "r"} for pair, c in short.items()}


def fit_models(main: MainSettings, aux: AuxSettings, explore: ExploreSettings | None, train: list[Atoms],
               test: list[Atoms], atom_energies: dict, aux_xml: str | None, out_dir: str, *, potential: str,
               traditional: bool, threads: int | None, seed: int) -> dict:
    """The app: fit the deployed model (``potential``: composite on the residual of ``aux_xml``, or
    plain) and, with ``traditional``, a GAP without aux from the same data; the held-out errors and
    parity plot of each; the variance threshold (with ``explore``); for a composite, the range per
    pair that neither the aux nor the data covers, and with a traditional GAP beside it, both
    models' short-range dimer energies."""
    out, started = Path(out_dir), time.time()
    xml = fit_main_gap(train, main, atom_energies, out / "fit", aux_xml=aux_xml if potential == "composite" else None,
                       name=f"{potential}.xml", threads=threads, seed=seed)
    models = {potential: xml}
    if traditional:
        models["traditional"] = fit_main_gap(train, main, atom_energies, out / "fit-traditional",
                                             name="traditional.xml", threads=threads, seed=seed)
    evaluated = {}
    for name, model in models.items():
        data = parity_data(GapCalculator(model), test)
        evaluated[name] = (data, error_metrics(data))
    parity_plot(evaluated, out / "plots" / "parity.png")
    result = {"xml": str(xml), "deployed": potential, "models": {k: str(v) for k, v in models.items()},
              "errors": {name: metrics.as_dict() for name, (_, metrics) in evaluated.items()},
              "variance": _variance(GapCalculator(xml, variance=True), test, explore) if explore else None,
              "n_train": len(train), "n_test": len(test),
              # training frames whose virial went into the fits (main.use_virials, periodic frames with a stress)
              "n_train_virials": sum(VIRIAL_KEY in f.info for f in training_frames(train, use_forces=False,
                                                                                     use_virials=main.use_virials))}
    if potential == "composite":
        result["unguarded_range"] = unguarded_ranges(aux.pair_cutoffs(), train)
        if traditional:
            result["short_range_eV"] = _short_range(models, aux, out)
    result["seconds"] = time.time() - started
    return result


def training_data(run: Run, iteration: int) -> tuple[list[Atoms], list[Atoms]]:
    """(train, test): the fixed held-out bootstrap blocks are the test set; every other OK
    bootstrap label and every label the loop selected trains, in a fixed order (bootstrap
    trajectory order, then by iteration and fingerprint), whatever order they were stored in."""
    train, test = bootstrap_split(run)
    explored = run.store.labelled(origin="explore*", settings_hash=run.settings_hash, up_to_iteration=iteration - 1)
    return train + sorted(explored, key=lambda a: (int(a.info["iteration"]), a.info["fingerprint"])), test


def fit(run: Run, state: IterationState) -> dict:
    """The fit stage of iteration ``state.iteration``: train.xyz, the models, their errors."""
    config, boot = run.config, run.iteration(0)
    # dimers and isolated atoms defined the aux; the main GAP learns condensed structures
    train, test = training_data(run, state.iteration)
    if not test:
        raise RuntimeError("no held-out labels: label more bootstrap frames (data.sample_every) or raise data.test_fraction")
    write_frames_atomic(state.dir / "train.xyz", train)
    write_frames_atomic(state.dir / "test.xyz", test)
    fitted = run.apps.fit_main(config.main, config.aux, getattr(config, "explore", None), train, test,
                               boot.get("dimers")["atom_energies"], boot.get("aux")["aux_xml"], str(state.dir),
                               potential=run.potential, traditional=config.traditional, threads=run.threads,
                               seed=config.seed).result()
    variance = fitted["variance"]
    held = fitted["errors"][fitted["deployed"]]
    run.log(f"iteration {state.iteration}: {len(train)} training frames; held-out ({held['n_structures']} frames, "
            f"{held['n_atoms']} atoms): energy MAE {held['energy_mae']:.2f} meV/atom, force RMSE {held['force_rmse']:.3f} eV/A"
            + (f"; variance threshold {variance['threshold']:.3g} eV^2" if variance else ""))
    return fitted
