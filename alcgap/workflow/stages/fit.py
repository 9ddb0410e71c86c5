"""The fit stage: the main SOAP GAP on the residual of the training labels (on the labels
themselves for a plain potential), the traditional GAP beside it when asked, the held-out errors
and parity plot of each, and the variance threshold of the deployed model."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
from ase import Atoms

from alcgap.analysis.metrics import error_metrics, parity_data
from alcgap.analysis.plots import parity_plot, short_range_plot
from alcgap.analysis.calibration import calibration_plot, coverage, fit_error_model, variance_and_errors
from alcgap.analysis.uncertainty import calibrate_variance
from alcgap.explore.distances import unguarded_ranges
from alcgap.calculator import GapCalculator
from alcgap.config import AuxSettings, ExploreSettings, JudgeSettings, MainSettings, parse_tolerance
from alcgap.provenance import exact_atoms
from alcgap.dimers import short_range_curves
from alcgap.fit.main import VIRIAL_KEY, fit_main_gap, training_frames
from alcgap.structures import pair_key
from alcgap.workflow.context import Run
from alcgap.workflow.stages.bootstrap import bootstrap_split
from alcgap.workflow.state import IterationState, write_frames_atomic


#: eV^2: the flag threshold when the model's error floor is over the tolerance (every atom flagged;
#: the monitors take a positive threshold)
MIN_THRESHOLD = 1e-12


def force_tolerance(judge: JudgeSettings, held_out: list[Atoms]) -> dict:
    """``judge.force_tolerance`` in eV/A: as given, or its share of the reference's force RMS (per
    component) on the held-out bootstrap atoms (the same frames every iteration: one figure per campaign)."""
    value, relative = parse_tolerance(judge.force_tolerance)
    if not relative:
        return {"value": value, "set_by": f"judge.force_tolerance {judge.force_tolerance} eV/A"}
    forces = [np.asarray(a.calc.results["forces"]) for a in held_out if a.calc is not None and "forces" in a.calc.results]
    if not forces:
        raise RuntimeError(f"judge.force_tolerance {judge.force_tolerance!r} is relative to the reference's force RMS, but "
                           "no held-out label carries forces; give it in eV/A")
    rms = float(np.sqrt(np.mean(np.concatenate(forces) ** 2)))
    return {"value": value * rms, "set_by": f"judge.force_tolerance {judge.force_tolerance} of the reference's force RMS "
            f"{rms:.3f} eV/A on {sum(len(f) for f in forces)} held-out atoms", "reference_rms": rms}


def _variance(calc: GapCalculator, test: list[Atoms], explored: list[Atoms], explore: ExploreSettings | None,
              judge: JudgeSettings | None, plots: Path) -> dict | None:
    """The deployed model's flag threshold (a campaign's), the force tolerance and the model's error
    calibration (:mod:`alcgap.analysis.calibration`); None for a single fit.

    The calibration uses labels the model never trained on: every held-out bootstrap atom, and the
    explored test set's atoms at the explored geometry (the core of a carved cell)."""
    if explore is None or judge is None:
        return None
    tolerance = force_tolerance(judge, test)
    held = variance_and_errors(calc, test)
    far = variance_and_errors(calc, explored, exact_atoms)
    variance, errors = np.concatenate([held[0], far[0]]), np.concatenate([held[1], far[1]])
    model = fit_error_model(variance, errors, levels=(judge.calibration_level,))
    level = judge.calibration_level
    calibration = {"error_model": model.as_dict(), "level": level, "on": {"held_out": int(len(held[0])),
                                                                          "explored": int(len(far[0]))},
                   "in_sample": coverage(model, variance, errors, level),
                   "plot": str(calibration_plot(model, {"held-out": held, "explored test": far}, level, tolerance["value"],
                                                plots / "calibration.png", title="error calibration at the fit"))}
    if explore.variance_threshold == "percentile":
        # on the held-out bootstrap atoms: the ordinary material, which the model has not seen
        # (at its own training atoms, often its sparse points, a GP's variance is ~0)
        found = calibrate_variance(calc, test, explore.variance_quantile, explore.variance_factor)
        found["set_by"] = "explore.variance_threshold percentile"
    elif explore.variance_threshold == "tolerance":
        at = model.variance_at(tolerance["value"])
        found = {"threshold": None if math.isinf(at) else max(at, MIN_THRESHOLD),
                 "set_by": f"the calibrated predicted force error reaches the tolerance {tolerance['value']:.3f} eV/A"
                 + (f"; the error floor {model.beta:.3f} eV/A is over it: every atom is flagged" if at == 0.0 else "")
                 + ("; the variance predicts no error: no atom is flagged by it" if math.isinf(at) else "")}
    else:
        found = {"threshold": float(explore.variance_threshold), "set_by": "explore.variance_threshold"}
    return {**found, "tolerance": tolerance, "calibration": calibration}


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
               traditional: bool, threads: int | None, seed: int, judge: JudgeSettings | None = None,
               explored: list[Atoms] = ()) -> dict:
    """The app: fit the deployed model (``potential``: composite on the residual of ``aux_xml``, or
    plain) and, with ``traditional``, a GAP without aux from the same data; the held-out errors and
    parity plot of each; with ``explore`` and ``judge`` (a campaign), the force tolerance, the
    error calibration on ``test`` and the ``explored`` test set, and the flag threshold; for a composite, the range per
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
              "variance": _variance(GapCalculator(xml, variance=True), test, list(explored), explore, judge, out / "plots"),
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


def explored_test_set(run: Run, up_to_iteration: int) -> list[Atoms]:
    """The explored test set: frames drawn at random from the exploration runs of iterations up to
    ``up_to_iteration`` (origin ``test:<task>``), labelled and never trained on."""
    if up_to_iteration < 1:
        return []
    frames = run.store.labelled(origin="test:*", settings_hash=run.settings_hash, up_to_iteration=up_to_iteration)
    return sorted(frames, key=lambda a: (int(a.info["iteration"]), a.info["fingerprint"]))


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
    judge = getattr(config, "judge", None)
    explored = explored_test_set(run, state.iteration - 1) if judge is not None else []
    fitted = run.apps.fit_main(config.main, config.aux, getattr(config, "explore", None), train, test,
                               boot.get("dimers")["atom_energies"], boot.get("aux")["aux_xml"], str(state.dir),
                               potential=run.potential, traditional=config.traditional, threads=run.threads,
                               seed=config.seed, judge=judge, explored=explored).result()
    variance = fitted["variance"]
    held = fitted["errors"][fitted["deployed"]]
    run.log(f"iteration {state.iteration}: {len(train)} training frames; held-out ({held['n_structures']} frames, "
            f"{held['n_atoms']} atoms): energy MAE {held['energy_mae']:.2f} meV/atom, force RMSE {held['force_rmse']:.3f} eV/A"
            + (f"; force tolerance {variance['tolerance']['value']:.3f} eV/A ({variance['tolerance']['set_by']}); "
               f"flag threshold {variance['threshold'] if variance['threshold'] is None else format(variance['threshold'], '.3g')} "
               f"eV^2 ({variance['set_by']}); calibration on "
               f"{variance['calibration']['in_sample']['n_atoms']} unseen atoms: "
               f"{variance['calibration']['in_sample']['inside']:.0%} inside the {variance['calibration']['level']:.0%} band, "
               f"error floor {variance['calibration']['error_model']['beta']:.3f} eV/A" if variance else ""))
    return fitted
