"""Command line: ``alcgap fit CONFIG --run-dir DIR``. It only calls the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from alcgap.config import ConfigError
from alcgap.report.status import print_status
from alcgap.structures import beta_cristobalite


def _print_summary(summary: dict) -> None:
    console = Console()
    table = Table(title="held-out errors")
    for column in ("model", "energy MAE (meV/atom)", "energy RMSE (meV/atom)", "force RMSE (eV/A)", "test structures"):
        table.add_column(column)
    for name, m in summary["test_errors"].items():
        table.add_row(name, f"{m['energy_mae']:.2f}", f"{m['energy_rmse']:.2f}", f"{m['force_rmse']:.3f}", str(m["n_structures"]))
    console.print(table)
    aux = Table(title="auxiliary (repulsive 2-body GAP) checks from the core floor to past r_cut")
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


def _status(run_dir: Path, width: int | None = None) -> int:
    """Iteration, stage, labels, last errors and run verdicts of a campaign, in 80 columns; and,
    while a driver runs, its live progress (``progress.json``): :mod:`alcgap.report.status`."""
    return print_status(run_dir, width)


def _survival(args) -> int:
    from alcgap.survival import HELD_FRACTION, held, survival_sweep, write_sweep  # each command loads what it runs (LAMMPS, quippy, Parsl: seconds)

    try:
        cutoffs = {name.strip(): float(value) for name, value in (item.split("=") for item in args.cutoffs.split(","))}
    except ValueError:
        raise ConfigError(f"--cutoffs {args.cutoffs!r}: give pair=distance pairs, e.g. Si-Si=1.6,Si-O=1.1,O-O=0.8") from None
    missing = [m for m in args.models if not Path(m).exists()]
    if missing:
        raise ConfigError(f"models: not found: {missing}")
    if args.start:
        import ase.io

        start = ase.io.read(args.start)
    else:

        start = beta_cristobalite()
    potentials = {Path(m).stem: m for m in args.models}
    if len(potentials) < len(args.models):
        potentials = {f"{Path(m).parent.name}/{Path(m).stem}": m for m in args.models}
    if args.reference:
        from alcgap.reference import vashishta_sio2_commands

        potentials["Vashishta (reference)"] = vashishta_sio2_commands()
    settings = {k: v for k, v in vars(args).items() if k != "command"}
    records = survival_sweep(potentials, args.species, start, Path(args.out), temperatures=args.temperatures,
                           seeds=args.seeds, densities=args.densities, steps=args.steps, timestep=args.timestep,
                           aux_cutoffs=cutoffs, max_displacement=args.max_displacement or None,
                           max_energy_change=args.max_energy_change or None,
                           pressures=[None] if not args.pressures else [None if p < 0 else p for p in args.pressures])
    write_sweep(records, Path(args.out), args.steps, settings=settings)
    groups: dict[tuple[str, str], list] = {}
    for record in records:
        groups.setdefault((record.potential, record.condition), []).append(record)
    for (potential, condition), runs in groups.items():
        deepest = min(min(r.cutoff_fractions.values(), default=float("inf")) for r in runs)
        print(f"{potential} @ {condition}: physical {sum(r.physical for r in runs)}/{len(runs)}, held "
              f"{sum(held(r) for r in runs)}/{len(runs)} (survived, every pair >= {HELD_FRACTION} of its aux cutoff); "
              f"deepest pair {deepest:.2f} of its cutoff")
    print(f"wrote {Path(args.out) / 'survival.json'} and {Path(args.out) / 'survival.png'}")
    return 0


def _campaign(args) -> None:
    """``alcgap run`` and ``alcgap resume``: the campaign, then its status and report."""
    from alcgap.report.write import write_report  # matplotlib and the aux fit: seconds to import
    from alcgap.workflow.campaign import resume_campaign, run_campaign

    if args.command == "run":
        run_dir = Path(args.run_dir or Path("runs") / Path(args.config).stem)
        run_campaign(args.config, run_dir, site=args.site)
    else:
        run_dir = Path(args.run_dir)
        stop = {key: value for key, value in (("max_iterations", args.max_iterations),
                                              ("max_labels", args.max_labels)) if value is not None}
        resume_campaign(run_dir, site=args.site, stop=stop)
    _status(run_dir)
    print(f"report: {write_report(run_dir)}")


def _add_survival_parser(commands) -> None:
    survival = commands.add_parser("survival", help="push potentials towards their short-range hole: survival vs time")
    survival.add_argument("models", nargs="+", help="GAP xml files (composite or plain), each run the same way")
    survival.add_argument("--species", nargs="+", default=["Si", "O"], help="LAMMPS type order (default: Si O)")
    survival.add_argument("--start", default=None, help="start structure, any file ASE reads (default: beta-cristobalite)")
    survival.add_argument("--cutoffs", default="Si-Si=1.6,Si-O=1.1,O-O=0.8",
                        help="aux cutoffs per pair, A: a pair inside one is the first unphysical event")
    survival.add_argument("--temperatures", type=float, nargs="+", default=[3000.0, 6000.0, 9000.0])
    survival.add_argument("--densities", type=float, nargs="+", default=[1.0], help="multiples of the start's density")
    survival.add_argument("--pressures", type=float, nargs="+", default=None,
                        help="bar: also NPT runs at these pressures (-1: an NVT run beside them); default NVT only")
    survival.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    survival.add_argument("--steps", type=int, default=2000)
    survival.add_argument("--timestep", type=float, default=1.0, help="fs (the largest, with --max-displacement)")
    survival.add_argument("--max-displacement", type=float, default=0.1,
                        help="adaptive timestep: A per step at most (0: a fixed timestep)")
    survival.add_argument("--max-energy-change", type=float, default=0.5,
                        help="adaptive timestep: eV of kinetic energy any atom gains or loses in one step at most "
                             "(0: the displacement bound alone)")
    survival.add_argument("--reference", action="store_true", help="also run the shipped Vashishta SiO2, the control")
    survival.add_argument("--out", default="survival", help="output folder (survival.json, survival.png, runs/)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alcgap", description="composite GAP force fields that stay physical")
    commands = parser.add_subparsers(dest="command", required=True)
    fit = commands.add_parser("fit", help="reference -> dimers -> aux -> data -> main GAP -> metrics and plots")
    fit.add_argument("config", help="fit config YAML (see configs/)")
    fit.add_argument("--run-dir", default=None, help="output folder (default: runs/<config name>)")
    run = commands.add_parser("run", help="run an active-learning campaign to its stopping rule")
    run.add_argument("config", help="campaign config YAML (see configs/)")
    run.add_argument("--site", default="local", help="site YAML or a name in sites/ (default: local)")
    run.add_argument("--run-dir", default=None, help="output folder (default: runs/<config name>)")
    resume = commands.add_parser("resume", help="continue a stopped or killed campaign from its checkpoints")
    resume.add_argument("run_dir")
    resume.add_argument("--site", default="local", help="site YAML or a name in sites/ (default: local)")
    resume.add_argument("--max-iterations", type=int, default=None,
                        help="raise stop.max_iterations: a campaign stopped at its limit goes on")
    resume.add_argument("--max-labels", type=int, default=None,
                        help="raise stop.max_labels: a campaign stopped at its limit goes on")
    status = commands.add_parser("status", help="iteration, stage, labels, errors and clustering verdicts")
    status.add_argument("run_dir")
    report = commands.add_parser("report", help="write the HTML report and JSON summary of a run directory")
    report.add_argument("run_dir")
    _add_survival_parser(commands)
    args = parser.parse_args(argv)

    from alcgap.fit.gapfit import GapFitError  # each command's errors, loaded with it
    from alcgap.sites import SiteError

    try:
        if args.command == "fit":
            from alcgap.config import load_fit_config  # each command loads what it runs
            from alcgap.workflow.fitjob import run_fit

            config = load_fit_config(args.config)
            run_dir = args.run_dir or str(Path("runs") / Path(args.config).stem)
            _print_summary(run_fit(config, run_dir))
        elif args.command in ("run", "resume"):
            _campaign(args)
        elif args.command == "status":
            return _status(Path(args.run_dir))
        elif args.command == "survival":
            return _survival(args)
        elif args.command == "report":
            from alcgap.report.write import main_report  # matplotlib and the aux fit: seconds to import

            return main_report(args.run_dir)
    except (ConfigError, GapFitError, SiteError) as err:
        print(f"alcgap: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
