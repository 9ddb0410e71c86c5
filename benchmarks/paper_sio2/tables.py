"""The benchmark's report: the headline table (markdown + JSON), the verdict on each claim by an
explicit rule, and the paper's figures (Fig. 3 parity, Fig. 4e partial RDFs, Fig. 5a VDOS)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from alcgap.analysis.plots import parity_plot, rdf_plot, vdos_plot
from alcgap.analysis.rdf import PartialRDF, average_rdfs
from alcgap.analysis.vdos import vdos

from scales import MODE_DIRS, PAPER

#: the rules by which a claim counts as reproduced (also printed in the report)
RULES = {
    "1": "|MAE(composite) - MAE(traditional)| <= max(10% of MAE(traditional), 2 x its bootstrap SE)",
    "2": "the traditional GAP clusters in at least one seed (final quenched frame) and the composite in none; "
         "RDF agreement: composite's RDF distance <= 2 x the reference's own seed-to-seed distance",
    "3": "mean VDOS overlap of composite and reference below the low-energy window >= 0.9",
    "4": "every 10x run of the composite clean: final frame and every sampled frame",
    "5": "composite/traditional CPU time of a force call on the largest timed cell <= 1.10 (paper: ~1.05)",
}


# ---------------------------------------------------------------- figures


def parity_figure(data: dict, path: Path) -> Path:
    """Fig. 3: predicted against reference energies of the held-out structures."""
    return parity_plot(data, path)


def rdf_figure(figures: dict, path: Path) -> Path | None:
    """Fig. 4e: partial RDFs of the quenched structures, pooled over seeds, against the reference."""
    curves = {}
    for name in ("reference", "composite", "traditional"):
        rdfs = [PartialRDF.from_dict(e["rdf"]) for e in figures["runs"][name] if e.get("rdf")]
        if rdfs:
            curves[name] = average_rdfs(rdfs)
    if "reference" not in curves:
        return None
    return rdf_plot(curves, path, reference="reference", title=f"({figures['mode']})")


def vdos_figures(figures: dict, sigma: float, e_max: float, out: Path) -> list[Path]:
    """Fig. 5a: VDOS of each model against the reference at the model's quenched structures,
    modes pooled over seeds."""
    paths = []
    for potential, entries in figures["vdos"].items():
        done = [e for e in entries if "model" in e]
        if not done:
            continue
        pooled = {side: vdos(np.concatenate([e[side]["modes_meV"] for e in done]), sigma)
                  for side in ("reference", "model")}
        curves = {"reference": pooled["reference"], potential: pooled["model"]}
        path = out / f"fig5a-vdos-{potential}-{MODE_DIRS[figures['mode']]}.png"
        paths.append(vdos_plot(curves, path, reference="reference", e_max=e_max))
    return paths


# ---------------------------------------------------------------- the figures of the table


def _pm(s: dict | None, digits: int = 2) -> str:
    if not s or s.get("mean") is None:
        return "n/a"
    if s["n"] > 1:
        return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"
    return f"{s['mean']:.{digits}f}"


def _vdos_spread(entries: list[dict], key: str) -> dict:
    from claims import spread

    return spread([e[key] for e in entries if key in e])


def headline(figures: dict, scale) -> dict:
    """The figures of one training mode that the table shows, as plain numbers."""
    errors = figures["held_out"]["errors"]
    structure = figures["structure"]
    cost = figures["cost"]
    largest = str(max(int(n) for n in cost["force_call"]))
    big = figures["big"]["figures"]
    return {
        "mae": {p: (errors[p]["energy_mae"], errors[p]["energy_mae_se"]) for p in ("composite", "traditional")},
        "mae_difference": (errors["difference"]["mean"], errors["difference"]["se"]),
        "aux_active_structures": figures["held_out"]["aux_reach"]["structures_inside_aux_cutoffs"],
        "clustered_final": {p: (s["clustered_final"], s["n_seeds"]) for p, s in structure.items()},
        "clustered_trajectory": {p: (s["clustered_trajectory"], s["n_seeds"]) for p, s in structure.items()},
        "stopped_early": {p: s["stopped_early"] for p, s in structure.items()},
        "rdf_distance": {p: s.get("rdf_distance") for p, s in structure.items()},
        "min_distances": {p: {pair: v["min"] for pair, v in s["min_distances"].items()} for p, s in structure.items()},
        "vdos_low": {p: _vdos_spread(e, "similarity_low") for p, e in figures["vdos"].items()},
        "vdos_all": {p: _vdos_spread(e, "similarity_all") for p, e in figures["vdos"].items()},
        "vdos_low_modes": _vdos_spread(figures["vdos"].get("composite", []), "reference_modes_below_window")["mean"],
        "n_atoms": scale.n_atoms,
        "big": {"n_atoms": scale.n_atoms * figures["big"]["factor"], "clustered_final": big["clustered_final"],
                "clustered_trajectory": big["clustered_trajectory"], "n_runs": big["n_seeds"],
                "min_distances": {pair: v["min"] for pair, v in big["min_distances"].items()}},
        "aux_engaged": {p: (sum(bool(x) for x in v), len(v)) for p, v in figures.get("aux_engaged", {}).items()},
        "trajectory_difference": figures.get("composite_vs_traditional_max_position_difference_A"),
        "cost_cell": int(largest),
        "cost_force_call": cost["force_call"][largest]["ratio_cpu"],
        "cost_force_call_rounds": cost["force_call"][largest]["round_ratios_cpu"],
        "cost_force_call_all": {n: c["ratio_cpu"] for n, c in cost["force_call"].items()},
        "cost_md_step": cost["md_step"]["ratio"],
        "stress": (figures.get("stress") or {}).get("by_potential", {}),
    }


def verdicts(h: dict) -> dict[str, tuple[bool, str]]:
    """Claim -> (reproduced, why), by the RULES."""
    (mc, sc), (mt, st) = h["mae"]["composite"], h["mae"]["traditional"]
    diff, diff_se = h["mae_difference"]
    trivially = " (trivially: no data structure brings a pair inside an aux cutoff, so the aux is zero on all of " \
                "them and both main GAPs learn identical targets)" if h["aux_active_structures"] == 0 else ""
    ok1 = abs(diff) <= max(0.1 * mt, 2 * diff_se)
    out = {"1": (ok1, f"MAE {mc:.2f} vs {mt:.2f} meV/atom, difference {diff:+.2f} ± {diff_se:.2f}{trivially}")}
    cf, tf = h["clustered_final"]["composite"], h["clustered_final"]["traditional"]
    floor = (h["rdf_distance"].get("reference") or {}).get("mean")
    comp_rdf = (h["rdf_distance"].get("composite") or {}).get("mean")
    rdf_ok = floor is not None and comp_rdf is not None and comp_rdf <= 2 * floor
    ok2 = tf[0] >= 1 and cf[0] == 0
    why2 = (f"clustered (final frame): traditional {tf[0]}/{tf[1]}, composite {cf[0]}/{cf[1]}; composite RDF "
            f"distance {comp_rdf if comp_rdf is None else round(comp_rdf, 3)} vs reference floor "
            f"{floor if floor is None else round(floor, 3)} ({'agrees' if rdf_ok else 'does not agree'})")
    engaged = h["aux_engaged"].get("traditional")
    if tf[0] == 0 and engaged is not None and engaged[0] == 0:
        diffs = [d for d in (h["trajectory_difference"] or []) if d is not None]
        shortest = ", ".join(f"{p} {d:.2f}" for p, d in sorted(h["min_distances"]["traditional"].items()))
        why2 += (f". Why the traditional GAP does not cluster here: in no seed did a pair come inside an aux cutoff "
                 f"(shortest reached: {shortest} A; cutoffs Si-Si 1.6, Si-O 1.1, O-O 0.8 A), so the aux never acted "
                 f"and both GAPs integrated the same trajectory (largest position difference "
                 f"{max(diffs) if diffs else float('nan'):.1e} A): the runs are too short and too small to find the "
                 f"traditional GAP's missing repulsion")
    stress = h.get("stress") or {}
    for t in sorted({t for by_t in stress.values() for t in by_t}, key=float):
        held = {p: stress[p][t] for p in ("composite", "traditional", "reference") if t in stress.get(p, {})}
        why2 += (f". Stress test at {t} K: runs held (no failure, every pair at >= 0.9 of its aux cutoff) "
                 + ", ".join(f"{p} {e['held']}/{e['runs']}" for p, e in held.items())
                 + "; deepest pair over its cutoff " + ", ".join(f"{p} {e['deepest_fraction']['min']:.2f}"
                                                                  for p, e in held.items()))
    out["2"] = (ok2 and rdf_ok, why2)
    low = h["vdos_low"].get("composite", {}).get("mean")
    n_low = h.get("vdos_low_modes")
    out["3"] = (low is not None and low >= 0.9, f"composite overlap below the window {low if low is None else round(low, 3)}"
                + (f" (the reference has {n_low:.0f} modes there per structure, of {3 * h['n_atoms'] - 3})" if n_low else ""))
    big = h["big"]
    ok4 = big["n_runs"] > 0 and big["clustered_final"] == 0 and big["clustered_trajectory"] == 0
    out["4"] = (ok4, f"{big['n_atoms']}-atom cell: {big['clustered_final']}/{big['n_runs']} clustered at the end, "
                     f"{big['clustered_trajectory']}/{big['n_runs']} in some frame")
    out["5"] = (h["cost_force_call"] <= 1.10, f"force call on {h['cost_cell']} atoms: {h['cost_force_call']:.3f}")
    return out


def markdown_table(results: dict, scale, seeds: list[int]) -> str:
    modes = list(results)
    heads = {m: headline(results[m], scale) for m in modes}
    n = len(seeds)
    cols = ["claim", "figure", "paper"] + [f"{m}: {p}" for m in modes for p in ("composite", "traditional")] + ["reference (control)"]
    rows = []

    def row(claim, figure, paper, per_model, control=""):
        cells = [claim, figure, paper] + [per_model(heads[m], p) for m in modes for p in ("composite", "traditional")] + [control]
        rows.append("| " + " | ".join(cells) + " |")

    ref = heads[modes[0]]
    row("1", "held-out energy MAE (meV/atom, ± bootstrap SE)", f"{PAPER['mae_composite_meV_atom']} / {PAPER['mae_traditional_meV_atom']}",
        lambda h, p: f"{h['mae'][p][0]:.2f} ± {h['mae'][p][1]:.2f}")
    row("2", f"seeds clustered, final quenched frame (of {n})", "composite 0, traditional > 0",
        lambda h, p: f"{h['clustered_final'][p][0]}/{h['clustered_final'][p][1]}",
        f"{ref['clustered_final']['reference'][0]}/{ref['clustered_final']['reference'][1]}")
    row("2", f"seeds clustered, any sampled frame of the run (of {n})", "-",
        lambda h, p: f"{h['clustered_trajectory'][p][0]}/{h['clustered_trajectory'][p][1]}",
        f"{ref['clustered_trajectory']['reference'][0]}/{ref['clustered_trajectory']['reference'][1]}")
    row("2", "RDF distance of the quenched structure to the reference (mean ± std over seeds)", "composite agrees",
        lambda h, p: _pm(h["rdf_distance"].get(p), 3), _pm(ref["rdf_distance"].get("reference"), 3) + " (seed-to-seed)")
    row("2", f"seeds in which a pair came inside an aux cutoff (of {n})", "-",
        lambda h, p: "{}/{}".format(*h["aux_engaged"].get(p, ("n/a", n))))
    row("2", "largest composite-traditional position difference over the run, same seed (A)", "-",
        lambda h, p: (f"{max(d for d in h['trajectory_difference'] if d is not None):.1e}"
                      if p == "composite" and h["trajectory_difference"] and any(d is not None for d in h["trajectory_difference"])
                      else ("n/a" if p == "composite" else "")))
    for pair in ("Si-O", "O-O", "Si-Si"):
        row("2", f"shortest {pair} distance reached in any seed (A)", "-",
            lambda h, p, pair=pair: f"{h['min_distances'][p].get(pair, float('nan')):.2f}",
            f"{ref['min_distances']['reference'].get(pair, float('nan')):.2f}")
    for t in (f"{t:g}" for t in scale.stress_temperatures):
        if not any(t in h["stress"].get(p, {}) for h in heads.values() for p in ("composite", "traditional")):
            continue  # measured before the stress rows existed

        def stress(show, t=t):
            def cell(h, p):
                entry = h["stress"].get(p, {}).get(t)
                return show(entry) if entry else "n/a"
            control = ref["stress"].get("reference", {}).get(t)
            return cell, (show(control) if control else "")

        for figure, show in (
                ("runs physical to the end: no pair inside an aux cutoff, no failure",
                 lambda e: f"{e['physical']}/{e['runs']}"),
                (f"runs held: no failure, every pair at >= {0.9:g} of its aux cutoff",
                 lambda e: f"{e['held']}/{e['runs']}"),
                ("deepest pair over its aux cutoff (min over seeds; mean ± std)",
                 lambda e: f"{e['deepest_fraction']['min']:.2f} ({_pm(e['deepest_fraction'])})"),
                ("first step not held (runs that had one: mean ± std)",
                 lambda e: _pm(e["first_unheld_step"], 0) + f" ({e['first_unheld_step']['n']} runs)"
                 if (e.get("first_unheld_step") or {}).get("n") else "none"),
                ("runs ended by a failure: potential / integration",
                 lambda e: f"{e['failures']['potential']} / {e['failures']['integration']}")):
            cell, control = stress(show)
            row("2", f"stress test {t} K, {scale.stress_steps} steps NVT from the crystal: {figure} (of {n})",
                "traditional breaks, composite holds" if figure.startswith("runs held") else "-", cell, control)
    row("3", f"VDOS overlap with the reference below {scale.vdos_e_max:g} meV (mean ± std)", "composite agrees",
        lambda h, p: _pm(h["vdos_low"].get(p), 3))
    row("3", "VDOS overlap with the reference, whole range", "differs at high energy",
        lambda h, p: _pm(h["vdos_all"].get(p), 3))
    row("4", f"{scale.big_factor}x cell ({ref['big']['n_atoms']} atoms), runs clustered (final / any frame)", "0 (clean)",
        lambda h, p: f"{h['big']['clustered_final']}/{h['big']['n_runs']} / {h['big']['clustered_trajectory']}/{h['big']['n_runs']}"
        if p == "composite" else "not run")
    row("5", f"cost composite / traditional, force call CPU ({ref['cost_cell']} atoms; median of interleaved calls)",
        f"~{PAPER['cost_ratio']}", lambda h, p: (f"{h['cost_force_call']:.3f} (rounds {h['cost_force_call_rounds']['min']:.2f}-"
                                                  f"{h['cost_force_call_rounds']['max']:.2f})") if p == "composite" else "1")
    row("5", "cost composite / traditional, MD step CPU (same seed; mean ± std)", f"~{PAPER['cost_ratio']}",
        lambda h, p: _pm(h["cost_md_step"], 3) if p == "composite" else "1")
    table = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + rows
    return "\n".join(table)


def verdict_lines(results: dict, scale) -> list[str]:
    lines = []
    for mode, figures in results.items():
        for claim, (ok, why) in verdicts(headline(figures, scale)).items():
            lines.append(f"- claim {claim} ({mode}): **{'reproduced' if ok else 'NOT reproduced'}** -- {why}")
    return lines


def write_report(out: Path, scale, seeds: list[int], results: dict, stage_seconds: dict, total_seconds: float,
                 load_average: tuple[float, ...] | None = None) -> Path:
    load_average = tuple(load_average or os.getloadavg())
    figures_dir = out / "figures"
    plots = []
    for figures in results.values():
        rdf = rdf_figure(figures, figures_dir / f"fig4e-rdf-{MODE_DIRS[figures['mode']]}.png")
        plots += ([rdf] if rdf else []) + vdos_figures(figures, scale.vdos_sigma, scale.vdos_e_max, figures_dir)
    plots += sorted(figures_dir.glob("fig3-parity-*.png"))
    table = markdown_table(results, scale, seeds)
    lines = [
        f"# Paper benchmark (Milardovich et al. 2022), scale `{scale.name}`",
        "",
        f"{len(seeds)} seeds; training modes: {', '.join(results)}; reference: {scale.reference_note}; "
        f"{scale.n_atoms}-atom training cell; run time {total_seconds / 60:.1f} min on {platform.node()} "
        f"({os.cpu_count()} cores, load average at the end {', '.join(f'{x:.1f}' for x in load_average)} "
        "over 1, 5, 15 min: the machine is shared).",
        "",
        table,
        "",
        "## Verdicts (rules below)",
        *verdict_lines(results, scale),
        "",
        "## Rules",
        *[f"- claim {k}: {v}" for k, v in RULES.items()],
        "",
        "## Figures",
        *[f"- `{p.relative_to(out)}`" for p in sorted(set(plots))],
        "",
        "## Stage times (s)",
        ", ".join(f"{k}: {v:.0f}" for k, v in stage_seconds.items()),
    ]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    (out / "report.json").write_text(json.dumps({
        "scale": scale.as_dict(), "seeds": seeds, "modes": list(results), "run_time_s": round(total_seconds, 1),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"), "load_average_at_end": load_average, "stage_seconds": stage_seconds, "rules": RULES,
        "headline": {m: headline(f, scale) for m, f in results.items()},
        "verdicts": {m: {k: {"reproduced": ok, "why": why} for k, (ok, why) in verdicts(headline(f, scale)).items()}
                     for m, f in results.items()},
        "claims": results,
    }, indent=1, default=str))
    return report
