"""Writing a run's report: ``<run>/report/index.html``, ``report.json`` and the report's own PNGs,
from whatever the run has written so far (see :mod:`alcgap.report`); ``alcgap report RUN_DIR``."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import ase.io

from alcgap.report import campaign as parts
from alcgap.report import runs
from alcgap.report.checks import check_sections
from alcgap.report.learning_curve import learning_curve_plot
from alcgap.report.page import Section, page_html, relative
from alcgap.report.rdfs import iteration_rdfs, iteration_vdos, reference_file
from alcgap.report.records import IterationRecord, json_or_none, read_run

REPORT_DIR = "report"
#: the bootstrap's own plot of the aux against its target (alcgap.workflow.stages.bootstrap)
BOOTSTRAP_AUX_PNG = Path("iter-000") / "plots" / "aux_curves.png"
#: per iteration: its sections with their place on the page (1 parity, 2 calibration, 3 runs over
#: time, 4 clusters, 5 RDFs, 6 VDOS)
Placed = dict[int, list[tuple[int, Section]]]


def write_report(run_dir: str | os.PathLike, rdf_frames: int = 10) -> Path:
    """Render ``<run>/report/index.html`` and ``report.json`` from whatever the run has written.

    ``rdf_frames``: how many final frames of each exploration trajectory enter its RDF.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"no run directory at {run}")
    out = run / REPORT_DIR
    out.mkdir(exist_ok=True)
    for old in out.glob("*.png"):
        old.unlink()
    records = read_run(run)
    problems = [p for r in records for p in r.problems]
    # per iteration: its sections in page order, and the numbers behind them (report.json)
    placed: Placed = {r.iteration: [] for r in records}
    numbers: dict[int, dict] = {r.iteration: {} for r in records}
    # first: verdicts the trajectories give enter the learning curve
    _structure_sections(run, records, out, rdf_frames, problems, placed, numbers)
    is_campaign = (run / "iter-000" / "state.json").exists()
    campaign = _campaign_parts(run, records, out, problems) if is_campaign else {}
    _check_sections(run, records, campaign.get("labels"), is_campaign, problems, placed, numbers)
    _campaign_sections(run, campaign, placed)
    sections = _page_sections(run, out, records, campaign, placed)
    summary = json_or_none(run / "summary.json", problems)
    page = out / "index.html"
    page.write_text(page_html(run, records, summary, sections, problems, campaign))
    campaign_numbers = {key: value for key, value in campaign.items() if key not in ("aux_plot", "run_plots")}
    campaign_numbers["iterations"] = {k: v for k, v in numbers.items() if v}
    report = {
        "run_dir": str(run), "generated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "html": str(page),
        "iterations": [r.as_dict() for r in records],
        "latest_clustering": records[-1].clustering if records else {},
        "latest_all_clean": (all(v == "clean" for v in records[-1].clustering.values())
                             if records and records[-1].clustering else None),
        "plots": {section.title: [str(p) for p, _ in section.figures] for section in sections},
        "summary": summary, "problems": problems,
        "campaign": campaign_numbers,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return page


def _structure_sections(run: Path, records: list[IterationRecord], out: Path, rdf_frames: int, problems: list[str],
                        placed: Placed, numbers: dict[int, dict]) -> None:
    """Each iteration's RDF figure (verdicts it judges enter its record) and VDOS figure."""
    found = reference_file(run) if any(r.trajectories for r in records) else None
    reference = ase.io.read(found, index=":") if found else []
    for record in records:
        group = f"iteration {record.iteration}"
        try:
            rdf = iteration_rdfs(record, reference, rdf_frames, out, found and relative(found, run), problems)
            if rdf:
                numbers[record.iteration]["rdf"] = {k: v for k, v in rdf.items() if k not in ("plot", "caption")}
                placed[record.iteration].append((5, Section(f"{group}: RDF of each exploration run",
                                                            [(rdf["plot"], rdf["caption"])], group)))
        except Exception as err:  # noqa: BLE001  a broken trajectory must not cost the rest of the page
            problems.append(f"iteration {record.iteration}: RDFs failed ({type(err).__name__}: {err})")
        if record.vdos:
            try:
                image = iteration_vdos(record, out)
                placed[record.iteration].append((6, Section(f"{group}: VDOS", [(image, relative(image, run))], group)))
            except Exception as err:  # noqa: BLE001
                problems.append(f"iteration {record.iteration}: VDOS failed ({type(err).__name__}: {err})")


def _check_sections(run: Path, records: list[IterationRecord], labels: list[dict] | None, is_campaign: bool,
                    problems: list[str], placed: Placed, numbers: dict[int, dict]) -> None:
    """Each iteration's held-out parity and variance calibration."""
    for record in records:
        try:
            checks = check_sections(run, record, labels, is_campaign)
        except Exception as err:  # noqa: BLE001
            problems.append(f"iteration {record.iteration}: parity and calibration failed ({type(err).__name__}: {err})")
            continue
        for order, (key, section) in enumerate(checks.items()):
            numbers[record.iteration][key] = section.pop("numbers")
            placed[record.iteration].append((1 + order, Section(**section)))


def _campaign_sections(run: Path, campaign: dict, placed: Placed) -> None:
    """A campaign's exploration runs over time and the clusters they found, under their iteration."""
    for iteration, image in campaign.get("run_plots", {}).items():
        placed.setdefault(iteration, []).append((3, Section(
            f"iteration {iteration}: exploration runs over time", [(image, relative(image, run))], f"iteration {iteration}")))
    for cluster in campaign.get("clusters", []):
        k = cluster["iteration"]
        placed.setdefault(k, []).append((4, Section(
            f"iteration {k}: cluster in {cluster['run']} at step {cluster['md_step']}: groups {', '.join(cluster['formulas'][:6])}",
            [(cluster["picture"], f"The first clustered frame of {cluster['run']} judged again: {cluster.get('summary', '')}. "
                                  "Drawn: its largest group (large spheres) and every atom within 3 Å of it, in one "
                                  "periodic image, in the elements' jmol colours. "
                                  f"({relative(cluster['picture'], run)})")], f"iteration {k}")))


def _page_sections(run: Path, out: Path, records: list[IterationRecord], campaign: dict,
                   placed: Placed) -> list[Section]:
    """The page's sections in order: the learning curve, the aux, each iteration's, then every
    other PNG of the run."""
    sections: list[Section] = []
    if records:
        image = learning_curve_plot(records, out / "learning_curve.png")
        sections.append(Section("learning curve", [(image, relative(image, run))]))
    aux = [Path(p) for p in (campaign.get("aux_plot"), run / BOOTSTRAP_AUX_PNG) if p and Path(p).exists()]
    if aux:
        sections.append(Section("the auxiliary: dimer curves, target and aux", [(p, relative(p, run)) for p in aux]))
    for iteration in sorted(placed):
        sections += [section for _, section in sorted(placed[iteration], key=lambda item: item[0])]
    ours = {p.resolve() for section in sections for p, _ in section.figures}
    existing = sorted(p for p in run.rglob("*.png") if p.resolve() not in ours and out not in p.parents)
    if existing:
        sections.append(Section("plots of the run", [(p, relative(p, run)) for p in existing]))
    return sections


def _campaign_parts(run: Path, records: list[IterationRecord], out: Path, problems: list[str]) -> dict:
    """A campaign's status, aux curves, exploration time series and selected labels (each part
    on its own: one that fails is a problem on the page, not a missing page)."""
    found: dict[str, Any] = {"run_plots": {}, "series": {}}
    for name, make in (("status", lambda: parts.campaign_status(run)), ("aux_curves", lambda: parts.aux_curves(run)),
                       ("labels", lambda: parts.label_rows(run))):
        try:
            found[name] = make()
        except Exception as err:  # noqa: BLE001
            problems.append(f"campaign {name}: {type(err).__name__}: {err}")
    try:
        image = parts.aux_plot(found.get("aux_curves") or {}, out / "aux_dimers.png")
        if image:
            found["aux_plot"] = image
    except Exception as err:  # noqa: BLE001
        problems.append(f"aux plot: {type(err).__name__}: {err}")
    for record in records:
        if record.iteration < 1:
            continue
        try:
            series = found["series"][record.iteration] = runs.run_series(run, record.iteration)
            image = runs.run_plots(series, record.iteration, out / f"iter-{record.iteration:03d}_runs.png")
            if image:
                found["run_plots"][record.iteration] = image
            found.setdefault("clusters", []).extend(runs.cluster_pictures(run, record.iteration, series, out))
        except Exception as err:  # noqa: BLE001
            problems.append(f"iteration {record.iteration}: run plots failed ({type(err).__name__}: {err})")
    return found


def main_report(run_dir: str | os.PathLike) -> int:
    """``alcgap report RUN_DIR``: write the report and print where it is; 2 if there is no run."""
    try:
        page = write_report(run_dir)
    except FileNotFoundError as err:
        print(f"alcgap report: {err}", file=sys.stderr)
        return 2
    print(page)
    return 0
