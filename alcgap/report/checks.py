"""An iteration's held-out parity and variance calibration in the report: the numbers behind the
plots the campaign wrote (:func:`iteration_checks`) and the page sections that show them
(:func:`check_sections`)."""

from __future__ import annotations

import html
from pathlib import Path

from alcgap.report.page import cell, relative
from alcgap.report.records import ERROR_KEYS, IterationRecord, iteration_stages, read_json
from alcgap.workflow.state import iteration_dir

#: the campaign's per-iteration plots (alcgap.workflow.apps.fit_main, Campaign._judge)
PARITY_PNG = Path("plots") / "parity.png"
CALIBRATION_PNG = Path("plots") / "variance_vs_error.png"
#: what each gate's figure is (alcgap.workflow.stages.stop.Judgement.figures)
GATE_FIGURES = {"clean": "clean: share of target-size frames free of clustering",
                "confidence": "confidence: share of target-size frames with no atom over the tolerance",
                "accuracy": "accuracy: explored-set force RMSE + its standard error (eV/Å)"}
#: the fit's error calibration, and the same model on the iteration's new labels (alcgap.analysis.calibration)
ERROR_MODEL_PNGS = (Path("plots") / "calibration.png", Path("plots") / "calibration_out_of_sample.png")


def iteration_checks(run: Path, iteration: int, labels: list[dict] | None = None) -> dict:
    """The numbers behind an iteration's held-out parity plot and its variance calibration plot.

    ``parity``: the held-out errors of every model the iteration fitted (the fit stage's, else
    metrics.json's for the deployed one), on how many held-out frames. ``calibration``: the
    variance threshold and how it was set (factor x quantile of the per-atom variance over the
    held-out atoms), the Spearman correlation of predicted variance with the per-atom force error
    on the iteration's new labels, how many of those labels were over the threshold when picked
    (their largest per-atom variance, from ``labels``: :func:`alcgap.report.campaign.label_rows`),
    and their prospective force error against the held-out one. A plot's entry is None when the
    iteration has not written it (yet); a figure the run has not written is None."""
    folder = iteration_dir(run, iteration)
    metrics = read_json(folder / "metrics.json") or {}
    fit = iteration_stages(run, iteration).get("fit") or {}
    deployed = fit.get("deployed")
    errors = {name: e for name, e in (fit.get("errors") or {}).items() if isinstance(e, dict)}
    if not errors and isinstance(metrics.get("errors"), dict) and metrics["errors"]:
        given = metrics["errors"]  # the deployed model's, or (a hand-written file) per model
        errors = given if all(isinstance(v, dict) for v in given.values()) else {deployed or "model": given}
    parity_png = folder / PARITY_PNG
    parity = None
    if errors or parity_png.exists():
        parity = {"plot": str(parity_png) if parity_png.exists() else None, "deployed": deployed, "errors": errors,
                  "n_test": metrics.get("n_test", fit.get("n_test")), "n_train": metrics.get("n_train", fit.get("n_train"))}
    variance = metrics.get("variance_threshold") or fit.get("variance") or {}
    correlation = metrics.get("variance_vs_error") or {}
    calibration = None
    if variance or correlation or (folder / CALIBRATION_PNG).exists():
        held_out = (errors.get(deployed) if deployed else next(iter(errors.values()), None)) or {}
        calibration = _calibration(folder, iteration, metrics, variance, correlation, held_out, labels)
    return {"parity": parity, "calibration": calibration, "gates": _gates(folder, metrics, variance)}


def _gates(folder: Path, metrics: dict, variance: dict) -> dict | None:
    """The stop rule's three gates with their figures, the force tolerance and the error calibration
    (in sample and on the iteration's new labels); None before the iteration was judged with them."""
    if "gate_figures" not in metrics:
        return None
    calibration = metrics.get("calibration") or {}
    return {"gates": metrics.get("gates"), "deciding": metrics.get("deciding_gates", list(metrics["gate_figures"])),
            "figures": metrics["gate_figures"], "tolerance": metrics.get("tolerance"),
            "confidence": metrics.get("confidence"), "explored_test_set": metrics.get("explored_test_set"),
            "held_out": metrics.get("held_out_with_error"), "decision": metrics.get("decision"),
            "error_model": calibration.get("error_model") or (variance.get("calibration") or {}).get("error_model"),
            "level": calibration.get("level"), "in_sample": calibration.get("in_sample"),
            "out_of_sample": calibration.get("out_of_sample"),
            "plots": [str(folder / p) for p in ERROR_MODEL_PNGS if (folder / p).exists()]}


def _calibration(folder: Path, iteration: int, metrics: dict, variance: dict, correlation: dict, held_out: dict,
                 labels: list[dict] | None) -> dict:
    """The calibration numbers of :func:`iteration_checks`."""
    calibration_png = folder / CALIBRATION_PNG
    threshold = variance.get("threshold")
    new = [r for r in labels or [] if r["iteration"] == iteration and r["status"] == "ok"]
    known = [r["variance"] for r in new if r.get("variance") is not None]
    over = sum(v > threshold for v in known) if threshold is not None else None
    prospective = metrics.get("prospective_errors") or {}
    ratio = None
    if prospective.get("force_rmse") is not None and held_out.get("force_rmse"):
        ratio = prospective["force_rmse"] / held_out["force_rmse"]
    return {
        "plot": str(calibration_png) if calibration_png.exists() else None,
        "threshold": threshold,
        "set_by": variance.get("set_by") or ("calibrated" if "quantile" in variance else None),
        "quantile": variance.get("quantile"), "factor": variance.get("factor"),
        "quantile_value": variance.get("quantile_value"), "held_out_median": variance.get("median"),
        "held_out_max": variance.get("max"), "held_out_atoms": variance.get("n_atoms"),
        "spearman": correlation.get("spearman"), "n_atoms": correlation.get("n_atoms"),
        "new_labels": metrics.get("new_labels", len(new) if labels is not None else None),
        "labels_with_variance": len(known),
        "labels_over_threshold": over,
        "fraction_over_threshold": over / len(known) if known and over is not None else None,
        "label_max_variance": max(known) if known else None,
        "prospective_force_rmse": prospective.get("force_rmse"),
        "held_out_force_rmse": held_out.get("force_rmse"),
        "prospective_over_held_out": ratio,
    }


def check_sections(run: Path, record: IterationRecord, labels: list[dict] | None, is_campaign: bool) -> dict:
    """The held-out parity and the variance calibration of one iteration, as page sections (their
    figure where the run wrote it, a table of the numbers behind it) with their numbers: per check
    the keyword arguments of a :class:`alcgap.report.page.Section` and its ``numbers``."""
    checks = iteration_checks(run, record.iteration, labels)
    found = {}
    parity = checks["parity"]
    if parity and (parity["plot"] or is_campaign):
        found["parity"] = _parity_section(run, record.iteration, parity)
    calibration = checks["calibration"]
    if calibration and (calibration["plot"] or is_campaign):
        found["calibration"] = _calibration_section(run, record.iteration, calibration)
    if checks["gates"]:
        found["gates"] = _gates_section(run, record.iteration, checks["gates"])
    return found


def _gates_section(run: Path, iteration: int, gates: dict) -> dict:
    tolerance = (gates.get("tolerance") or {}).get("value")
    captions = ("the fit's error calibration: per-atom |force error| against predicted variance on the labels it "
                "calibrated on (held-out bootstrap atoms and the explored test set), with the predicted error and its band",
                "the same calibration on this iteration's new labels, which did not exist when it was fitted")
    figures = [(Path(p), f"Iteration {iteration}, {c} ({relative(p, run)})") for p, c in zip(gates["plots"], captions)]
    rows = [("force tolerance (eV/Å)", f"{cell(tolerance, 3)}: {html.escape(str((gates.get('tolerance') or {}).get('set_by', '')))}")]
    for name, figure in (gates["figures"] or {}).items():
        held = (gates.get("gates") or {}).get(name)
        verdict = ("holds" if held else "fails") if name in gates["deciding"] else "measured, not deciding (judge.gates)"
        rows.append((f"gate {GATE_FIGURES.get(name, name)}", f"{cell(figure, 3)} ({verdict})"))
    model = gates.get("error_model") or {}
    if model:
        rows.append(("error model s(v) = sqrt(alpha v + beta²)", f"alpha {cell(model.get('alpha'), 3)}, beta "
                     f"{cell(model.get('beta'), 3)} eV/Å, on {cell(model.get('n_atoms'))} atoms"))
    level = gates.get("level")
    for name, c in [("where fitted", gates.get("in_sample"))] + list((gates.get("out_of_sample") or {}).items()):
        if c and c.get("inside") is not None:
            rows.append((f"inside the {100 * level:.0f}% band, {html.escape(name)}", f"{100 * c['inside']:.0f}% of {c['n_atoms']} atoms"))
    table = "<table class='kv'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
    return {"title": f"iteration {iteration}: gates and error calibration", "figures": figures,
            "group": f"iteration {iteration}", "table": table, "numbers": gates}


def _parity_section(run: Path, iteration: int, parity: dict) -> dict:
    models = ", ".join(parity["errors"]) or "its model"
    caption = (f"Held-out parity of iteration {iteration}'s fit ({models}): predicted against reference "
               "energy per atom (left) and force components (right)"
               + (f" on the {parity['n_test']} held-out bootstrap frames no fit trains on" if parity["n_test"] else "")
               + "; dashed: y = x; each model's errors in the legend.")
    figures = [(Path(parity["plot"]), f"{caption} ({relative(parity['plot'], run)})")] if parity["plot"] else []
    return {"title": f"iteration {iteration}: held-out parity", "figures": figures, "group": f"iteration {iteration}",
            "table": _parity_table(parity) + ("" if figures else "<p>(the run has written no parity plot)</p>"),
            "numbers": parity}


def _calibration_section(run: Path, iteration: int, calibration: dict) -> dict:
    threshold = calibration["threshold"]
    caption = (f"Variance calibration of iteration {iteration}'s model: each atom's force error "
               "|F_model - F_reference| (eV/Å) against the variance the model predicted for it (eV²), log-log, on "
               f"the {cell(calibration['new_labels'])} frames this iteration selected and then labelled"
               + (f"; dashed red: the selection (flag) threshold {threshold:.3g} eV²" if threshold else "")
               + ". A calibrated variance puts the large errors right of the threshold.")
    figures = [(Path(calibration["plot"]), f"{caption} ({relative(calibration['plot'], run)})")] \
        if calibration["plot"] else []
    missing = "" if figures else ("<p>(no plot: the iteration selected no new labels to check the variance on)</p>"
                                  if not calibration["new_labels"] else "<p>(the run has written no calibration plot, or not yet)</p>")
    return {"title": f"iteration {iteration}: variance calibration", "figures": figures,
            "group": f"iteration {iteration}", "table": _calibration_table(calibration) + missing,
            "numbers": calibration}


def _parity_table(parity: dict) -> str:
    head = ["model", "held-out frames", "atoms", "E MAE (meV/atom)", "E RMSE (meV/atom)", "F RMSE (eV/Å)",
            "F MAE (eV/Å)", "S RMSE (GPa)"]
    rows = []
    for name, e in parity["errors"].items():
        deployed = " (deployed)" if name == parity.get("deployed") and len(parity["errors"]) > 1 else ""
        cells = [html.escape(name) + deployed, cell(e.get("n_structures", parity.get("n_test"))), cell(e.get("n_atoms")),
                 cell(_num(e, "energy_mae")), cell(_num(e, "energy_rmse")), cell(_num(e, "force_rmse"), 3),
                 cell(_num(e, "force_mae"), 3), cell(_num(e, "stress_rmse"), 2)]
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    if not rows:
        return "<p>(no held-out errors recorded)</p>"
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>")


def _num(errors: dict, name: str) -> float | None:
    """An error by its ErrorMetrics name or its canonical report name."""
    value = errors.get(name, errors.get({v: k for k, v in ERROR_KEYS.items()}.get(name, ""), None))
    return float(value) if isinstance(value, (int, float)) else None


def _calibration_table(c: dict) -> str:
    how = (f"{c['factor']:g} x the {100 * c['quantile']:g}th percentile ({cell(c['quantile_value'], 5)} eV²) "
           f"of the per-atom variance over {cell(c['held_out_atoms'])} held-out atoms (median {cell(c['held_out_median'], 5)}, "
           f"max {cell(c['held_out_max'], 5)})" if c.get("quantile") is not None and c.get("factor") is not None
           else html.escape(str(c.get("set_by") or "not recorded")))
    over = (f"{c['labels_over_threshold']} of {c['labels_with_variance']} ({100 * c['fraction_over_threshold']:.0f}%)"
            if c.get("fraction_over_threshold") is not None else "&ndash;")
    ratio = (f"{cell(c['prospective_force_rmse'], 3)} against {cell(c['held_out_force_rmse'], 3)} held out "
             f"({c['prospective_over_held_out']:.1f}x)" if c.get("prospective_over_held_out") is not None else "&ndash;")
    rows = [("selection threshold (eV²)", cell(c["threshold"], 5)), ("set as", how),
            ("variance-error Spearman (atoms)", f"{cell(c['spearman'], 2)} ({cell(c['n_atoms'])})"),
            ("new labels; over the threshold when picked", f"{cell(c['new_labels'])}; {over}"),
            ("their force RMSE (eV/Å), this model", ratio)]
    return "<table class='kv'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"
