"""``alcgap status``: where a campaign is, readable in 80 columns (a log's width).

A row per iteration (the first stage not finished, labels, held-out errors, clean runs and the
stopping rule's decision) under short two-line headers with a legend below the table, so that no
header or decision is ever cut; then the store's counts, the driver's live progress (its
``progress.json``) or how to resume a driver that is gone, and how the campaign finished. A cell
too long for its column wraps, it is never cut.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alcgap.report.records import read_json, stage_order
from alcgap.store import LabelStore
from alcgap.workflow.freeze import is_run
from alcgap.workflow.lock import driver_of, driver_running
from alcgap.workflow.progress import ProgressBoard
from alcgap.workflow.state import IterationState, read_run_json

#: header (two short lines) and justification of each column
COLUMNS = (("iter", "right"), ("stage", "left"), ("labels\nok/fail", "right"), ("E MAE\nmeV/at", "right"),
           ("F RMSE\neV/A", "right"), ("runs\nclean", "right"), ("decision", "left"))
LEGEND = ("stage: the first stage not finished; labels: labelled ok / failed; E MAE, F RMSE: held-out "
          "energy MAE (meV/atom) and force RMSE (eV/A); runs clean: exploration runs judged clean, of all; "
          "decision: the stopping rule's verdict (its reason below the table)")


def _figure(value, digits: int) -> str:
    """A held-out error to ``digits`` places; "-" where the iteration has none (yet)."""
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else "-"


def iteration_row(run_dir: Path, iteration: int) -> tuple[str, ...]:
    """The cells of one iteration's row of the status table."""
    state = IterationState(run_dir, iteration)
    metrics = read_json(state.dir / "metrics.json") or {}
    errors = metrics.get("errors", {})
    labelled = [stage.get("labelled") for stage in state.stages.values() if "labelled" in stage]
    failed = [stage.get("failed") for stage in state.stages.values() if "failed" in stage]
    missing = [name for name in stage_order(iteration) if name not in state.stages]
    verdicts = list(metrics.get("clustering", {}).values())
    return (str(iteration), "done" if not missing else f"at {missing[0].split('_')[0]}",
            f"{sum(labelled)}/{sum(failed)}" if labelled else "-",
            _figure(errors.get("energy_mae"), 2), _figure(errors.get("force_rmse"), 3),
            f"{verdicts.count('clean')}/{len(verdicts)}" if verdicts else "-",
            str(metrics.get("decision", {}).get("rule", "-")))


def status_table(run_dir: Path) -> Table:
    """A row per iteration of the campaign in ``run_dir`` (:data:`LEGEND` explains its headers)."""
    table = Table(title=f"campaign {run_dir.name}", title_justify="left", pad_edge=False)
    for header, justify in COLUMNS:
        # wrapped, never cut: a cell that does not fit goes on to the next line
        table.add_column(header, justify=justify, overflow="fold")
    for folder in sorted(run_dir.glob("iter-[0-9][0-9][0-9]")):
        table.add_row(*(escape(text) for text in iteration_row(run_dir, int(folder.name[5:]))))
    return table


def print_status(run_dir: Path, width: int | None = None, console: Console | None = None) -> int:
    """Print the status of the campaign in ``run_dir`` (``width`` columns; default: the terminal's,
    at most 100); 2 (and say why) where there is none."""
    if not is_run(run_dir):
        print(f"alcgap: {run_dir} holds no campaign (no campaign.yaml)", file=sys.stderr)
        return 2
    console = console or Console(width=width or min(Console().width, 100))
    console.print(status_table(run_dir))
    console.print(LEGEND, style="dim", highlight=False)
    if (run_dir / "data.db").exists():
        console.print(f"store: {escape(str(LabelStore(run_dir / 'data.db').summary()))}")
    owner = driver_of(run_dir)
    progress = run_dir / "progress.json"
    if driver_running(owner) and progress.exists():
        for line in ProgressBoard.lines(json.loads(progress.read_text())):
            console.print(escape(line), highlight=False)
    elif owner:
        console.print(f"not running: its driver (pid {owner.get('pid')} on {owner.get('host')}) is gone; "
                      f"`alcgap resume {escape(str(run_dir))}` continues it")
    if (run_dir / "summary.json").exists():
        summary = read_run_json(run_dir / "summary.json")
        console.print(f"finished: stopped by [bold]{escape(str(summary['stopped_by']))}[/]: "
                      f"{escape(str(summary['why']))}")
    return 0
