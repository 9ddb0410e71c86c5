"""Command line: ``alcgap fit CONFIG --run-dir DIR``. It only calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from alcgap.config import ConfigError


def _print_summary(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="held-out errors")
    for column in ("model", "energy MAE (meV/atom)", "energy RMSE (meV/atom)", "force RMSE (eV/A)", "test structures"):
        table.add_column(column)
    for name, m in summary["test_errors"].items():
        table.add_row(name, f"{m['energy_mae']:.2f}", f"{m['energy_rmse']:.2f}", f"{m['force_rmse']:.3f}", str(m["n_structures"]))
    console.print(table)
    aux = Table(title="auxiliary (repulsive 2-body GAP) checks on a 0.01 A grid")
    for column in ("pair", "r_cut (A)", "min below r_cut (eV)", "max |E| beyond (eV)", "monotone", "max rel. error (T>1 eV)", "max abs. error (T<1 eV)"):
        aux.add_column(column)
    for name, c in summary["aux"].items():
        aux.add_row(name, f"{c['r_cut']}", f"{c['min_below_cut']:.3g}", f"{c['max_beyond_cut']:.3g}", str(c["monotone"]),
                    f"{c['max_rel_error']:.2%}", f"{c['max_abs_error']:.3g}")
    console.print(aux)
    short = Table(title="dimer energy at 0.8 x aux cutoff, relative to 2.5 A (eV)")
    short.add_column("pair")
    models = list(summary["models"])
    for name in models:
        short.add_column(name)
    for pair, values in summary["short_range_eV"].items():
        short.add_row(pair, *[f"{values[name]:.2f}" for name in models])
    console.print(short)
    console.print(f"plots: {', '.join(summary['plots'])}\nsummary: {Path(summary['run_dir']) / 'summary.json'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alcgap", description="composite GAP force fields that stay physical")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="reference -> dimers -> aux -> data -> main GAP -> metrics and plots")
    fit.add_argument("config", help="fit config YAML (see configs/)")
    fit.add_argument("--run-dir", default=None, help="output folder (default: runs/<config name>)")
    args = parser.parse_args(argv)

    if args.command == "fit":
        from alcgap.config import load_fit_config
        from alcgap.fit.gapfit import GapFitError
        from alcgap.workflow.fit import run_fit

        try:
            config = load_fit_config(args.config)
            run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
            summary = run_fit(config, run_dir)
        except (ConfigError, GapFitError) as err:
            print(f"alcgap: {err}", file=sys.stderr)
            return 2
        _print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
