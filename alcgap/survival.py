"""The survival test (robustness): push potentials towards their short-range hole, the same way for each.

    alcgap survival composite.xml traditional.xml --start start.xyz --cutoffs Si-Si=1.6,Si-O=1.1,O-O=0.8 \
        --temperatures 6000 9000 --seeds 1 2 3 --steps 2000 --out survival/

Every potential runs the same protocol from the same start: NVT at each melt temperature, at each
density (a multiple of the start's), for each seed, with the package's own MD driver and
monitors. Per run it records

- the outcome: ``survived``, or what ended it (``classify_md_failure``: a collapse or a pair
  inside the aux table are the potential's failures; lost atoms and non-finite energies the
  integration's);
- the first unphysical event: the first monitored step with a pair inside its aux cutoff, and
  the step the run stopped at, whichever came first;
- the shortest distance per pair over the run and over its aux cutoff (``cutoff_fractions``),
  the steps done and the simulated time, the smallest timestep taken (with an adaptive
  timestep), the temperature reached and the drift of the thermostat's conserved energy.

A run is *held* (:func:`held`) when it survived with every pair at 0.9 of its aux cutoff or more:
the composite's aux may be touched, a GAP with a hole lets pairs far below it.

:func:`survival_table` turns the records into the fraction of runs still physical against the step,
per potential and temperature; :func:`write_sweep` writes ``survival.json`` (every record and the
survival table) and ``survival.png``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from ase import Atoms

from alcgap.md.failures import classify_md_failure
from alcgap.md.forces import ForceField
from alcgap.md.lammps import run_md
from alcgap.md.monitors import MonitorSettings
from alcgap.md.protocols import npt, nvt
from alcgap.structures import pair_key, pair_name


@dataclass
class SurvivalRun:
    """One run of the sweep."""

    potential: str
    temperature: float
    density: float
    seed: int
    #: bar for an NPT run (the density is then where it starts); None: NVT
    pressure_bar: float | None
    steps_requested: int
    steps_done: int = 0
    outcome: str = "survived"
    outcome_of: str = "none"
    stop_reason: str | None = None
    #: first monitored step with a pair inside its aux cutoff (None: never)
    first_inside_aux_step: int | None = None
    first_inside_aux_pair: str | None = None
    #: the first unphysical event: inside the aux cutoff, or the run's end by a failure
    first_unphysical_step: int | None = None
    #: the first step the run stopped holding (:func:`held`): a pair below HELD_FRACTION of its
    #: aux cutoff, or the run's end by a failure. Composite and traditional GAP share their
    #: trajectory until a pair enters the aux, so the first unphysical step cannot tell them
    #: apart; this one does
    first_unheld_step: int | None = None
    #: simulated time (fs) of those two events: with an adaptive timestep a step is not a fixed time
    first_unphysical_fs: float | None = None
    first_unheld_fs: float | None = None
    min_distances: dict[str, float] = field(default_factory=dict)
    peak_temperature: float | None = None
    smallest_timestep_fs: float | None = None
    #: simulated time of the steps done (fs): the steps' sum with an adaptive timestep
    elapsed_fs: float | None = None
    #: shortest distance per pair over its aux cutoff (1: at the cutoff; the composite's aux holds
    #: it near 1, a GAP with a hole lets it fall far below)
    cutoff_fractions: dict[str, float] = field(default_factory=dict)
    #: drift of the thermostat's conserved energy (LAMMPS econserve) over the run, a least-squares
    #: slope against simulated time: the integration error (meV/atom/ps)
    energy_drift_meV_atom_ps: float | None = None
    #: density at the end over the start structure's (NPT moves it; NVT keeps ``density``)
    final_density: float | None = None

    @property
    def physical(self) -> bool:
        return self.first_unphysical_step is None

    @property
    def condition(self) -> str:
        """What the potential was pushed with, one survival curve per potential each:
        "6000 K", "6000 K, x1.2", "6000 K, x1.2, 10000 bar"."""
        parts = [f"{self.temperature:g} K"]
        if self.density != 1.0:
            parts.append(f"x{self.density:g}")
        if self.pressure_bar is not None:
            parts.append(f"{self.pressure_bar:g} bar")
        return ", ".join(parts)


#: a run is held when it survived and no pair came closer than this fraction of its aux cutoff
#: (the composite's aux touched, not crossed far; ``judge.stress.held_fraction``)
HELD_FRACTION = 0.9


def held(run: SurvivalRun | Mapping, fraction: float = HELD_FRACTION) -> bool:
    """A run (a :class:`SurvivalRun` or its dict in ``survival.json``) that survived with every pair at
    ``fraction`` of its aux cutoff or more: where a GAP without repulsion there lets pairs fall far
    below, the composite's aux holds them near 1."""
    record = asdict(run) if isinstance(run, SurvivalRun) else run
    return record.get("outcome") == "survived" and all(
        value >= fraction for value in (record.get("cutoff_fractions") or {}).values())


def survival_run(name: str, xml_or_commands: str | list[str], species: Sequence[str], start: Atoms, *,
                 temperature: float, density: float, seed: int, steps: int, timestep: float, aux_cutoffs: Mapping[str, float],
                 max_displacement: float | None, max_energy_change: float | None = 0.5, monitor_every: int = 10,
                 folder: Path, pressure: float | None = None) -> SurvivalRun:
    """One NVT run of the sweep (NPT at ``pressure`` bar if given), serial, in this process."""
    atoms = start.copy()
    atoms.set_cell(atoms.cell.array * density ** (-1.0 / 3.0), scale_atoms=True)
    force_field = (ForceField.classical(xml_or_commands, list(species)) if isinstance(xml_or_commands, list)
                   else ForceField(xml=str(xml_or_commands), species=list(species)))
    cutoffs = {pair_key(*n.split("-")): r for n, r in aux_cutoffs.items()}
    # flagged inside the aux cutoff; a collapse is a pair at half of it (the monitors' abort)
    monitor = MonitorSettings(every=monitor_every, min_distance={pair_name(p): r for p, r in cutoffs.items()},
                              collapse_fraction=0.5, collapse_max_pairs=0)
    segment = nvt(steps, temperature) if pressure is None else npt(steps, temperature, pressure)
    result = run_md(atoms, force_field, [segment], timestep=timestep, seed=seed,
                    sample_every=steps, monitor=monitor, output_dir=folder, max_displacement=max_displacement,
                    max_energy_change=max_energy_change)
    record = SurvivalRun(name, temperature, density, seed, pressure, steps, steps_done=result.steps_done,
                       min_distances=dict(result.min_distances), peak_temperature=result.peak_temperature,
                       smallest_timestep_fs=result.smallest_timestep_fs,
                       elapsed_fs=result.elapsed_fs if result.elapsed_fs is not None else result.steps_done * timestep)
    record.cutoff_fractions = cutoff_fractions(record.min_distances, cutoffs)
    entries = [json.loads(line) for line in (folder / "monitor.jsonl").read_text().splitlines()] \
        if (folder / "monitor.jsonl").exists() else []
    record.first_inside_aux_step, record.first_inside_aux_pair = first_below(entries, cutoffs, 1.0)
    record.energy_drift_meV_atom_ps = energy_drift(entries, len(atoms))
    volume = (result.final_thermo or {}).get("vol")
    if volume:
        record.final_density = float(start.get_volume() / volume)
    if result.stopped_early:
        record.outcome, record.outcome_of = classify_md_failure(result.stop_reason)
        record.stop_reason = result.stop_reason
    end = result.steps_done if result.stopped_early else None
    record.first_unphysical_step = _first(record.first_inside_aux_step, end)
    record.first_unheld_step = first_unheld(entries, cutoffs, end)
    times = {e["step"]: e.get("time_fs") for e in entries}
    for step_field, time_field in (("first_unphysical_step", "first_unphysical_fs"), ("first_unheld_step", "first_unheld_fs")):
        step = getattr(record, step_field)
        if step is not None:
            setattr(record, time_field, record.elapsed_fs if step == end else times.get(step))
    return record


def cutoff_fractions(min_distances: Mapping[str, float], cutoffs: Mapping) -> dict[str, float]:
    """Shortest distance per pair ("Si-O") over its aux cutoff (keys: :func:`pair_key` tuples)."""
    return {p: round(d / cutoffs[pair_key(*p.split("-"))], 4) for p, d in min_distances.items()
            if pair_key(*p.split("-")) in cutoffs}


def first_below(entries: Sequence[dict], cutoffs: Mapping, fraction: float) -> tuple[int | None, str | None]:
    """The first monitored step (``monitor.jsonl`` entries) with a pair closer than ``fraction``
    of its aux cutoff, and that pair; (None, None) if none came so close."""
    for entry in entries:
        below = [p for p, r in entry["min_distances"].items() if r < fraction * cutoffs.get(pair_key(*p.split("-")), 0.0)]
        if below:
            return entry["step"], below[0]
    return None, None


def first_unheld(entries: Sequence[dict], cutoffs: Mapping, end: int | None) -> int | None:
    """The first step a run stopped holding: a pair below HELD_FRACTION of its aux cutoff in the
    ``monitor.jsonl`` entries, or ``end``, the step a failure ended it at (None: it survived)."""
    return _first(first_below(entries, cutoffs, HELD_FRACTION)[0], end)


def _first(*steps: int | None) -> int | None:
    known = [s for s in steps if s is not None]
    return min(known) if known else None


def energy_drift(entries: Sequence[dict], n_atoms: int) -> float | None:
    """meV/atom/ps: the least-squares slope of the conserved energy against simulated time, over
    the monitored steps of ``monitor.jsonl`` (None with fewer than 3 finite points)."""
    points = [(e["time_fs"], e["conserved_eV"]) for e in entries
              if e.get("time_fs") is not None and e.get("conserved_eV") is not None and np.isfinite(e["conserved_eV"])]
    if len(points) < 3:
        return None
    time_fs, energy = np.array(points).T
    if np.ptp(time_fs) <= 0:
        return None
    slope = np.polyfit(time_fs, energy, 1)[0]  # eV/fs
    return float(slope * 1000.0 * 1000.0 / n_atoms)  # meV/atom/ps


def survival_sweep(potentials: Mapping[str, str | list[str]], species: Sequence[str], start: Atoms, out: Path, *,
                 temperatures: Sequence[float], seeds: Sequence[int], densities: Sequence[float] = (1.0,),
                 steps: int = 2000, timestep: float = 1.0, aux_cutoffs: Mapping[str, float],
                 max_displacement: float | None = 0.1, max_energy_change: float | None = 0.5, monitor_every: int = 10,
                 pressures: Sequence[float | None] = (None,), progress=print) -> list[SurvivalRun]:
    """Every potential x temperature x density x pressure (None: NVT) x seed, the same protocol
    for each."""
    records = []
    for temperature in temperatures:
        for density in densities:
            for pressure in pressures:
                for seed in seeds:
                    for name, model in potentials.items():
                        folder = run_folder(out, name, temperature, density, pressure, seed)
                        record = survival_run(name, model, species, start, temperature=temperature, density=density,
                                            seed=seed, steps=steps, timestep=timestep, aux_cutoffs=aux_cutoffs,
                                            max_displacement=max_displacement, max_energy_change=max_energy_change,
                                            monitor_every=monitor_every,
                                            folder=folder, pressure=pressure)
                        records.append(record)
                        if progress:
                            progress(f"{name} {record.condition} seed {seed}: {record.outcome}"
                                 f"{'' if record.physical else f', unphysical from step {record.first_unphysical_step}'}; "
                                     f"shortest {record.min_distances}; drift {record.energy_drift_meV_atom_ps} meV/atom/ps")
    return records


def run_folder(out: Path, name: str, temperature: float, density: float, pressure: float | None, seed: int) -> Path:
    """Where :func:`survival_sweep` runs one potential x condition x seed."""
    ensemble = "" if pressure is None else f"-p{pressure:g}"
    return Path(out) / "runs" / f"{name}-T{temperature:g}-d{density:g}{ensemble}-s{seed}".replace("/", "_")


def read_sweep(out: Path) -> list[SurvivalRun]:
    """The records of ``out/survival.json``; a record written before ``first_unheld_step`` existed
    gets it from its run's ``monitor.jsonl`` (the aux cutoffs of the sweep's settings)."""

    data = json.loads((Path(out) / "survival.json").read_text())
    known = {f.name for f in fields(SurvivalRun)}
    cutoffs = {pair_key(*n.split("-")): r for n, r in (data.get("settings") or {}).get("aux_cutoffs", {}).items()}
    records = []
    for saved in data["records"]:
        record = SurvivalRun(**{k: v for k, v in saved.items() if k in known})
        if not saved.get("cutoff_fractions"):
            record.cutoff_fractions = cutoff_fractions(record.min_distances, cutoffs)
        if "first_unheld_step" not in saved:
            monitor = run_folder(out, record.potential, record.temperature, record.density, record.pressure_bar,
                                 record.seed) / "monitor.jsonl"
            entries = [json.loads(line) for line in monitor.read_text().splitlines()] if monitor.exists() else []
            record.first_unheld_step = first_unheld(entries, cutoffs,
                                                    record.steps_done if record.outcome != "survived" else None)
        records.append(record)
    return records


def survival_table(records: Sequence[SurvivalRun], steps: int, points: int = 21) -> dict:
    """Per potential and condition (:attr:`SurvivalRun.condition`; the temperature alone for NVT at
    the start's density): the fraction of runs still physical (no pair inside an aux cutoff, no
    failure) and still held (no pair below HELD_FRACTION of it, no failure) at each step of a grid."""
    grid = np.linspace(0, steps, points).round().astype(int).tolist()
    table = {}
    for run in records:
        key = f"{run.temperature:g}" if run.condition == f"{run.temperature:g} K" else run.condition
        table.setdefault(run.potential, {}).setdefault(key, []).append(run)

    def fraction(attribute: str) -> dict:
        return {potential: {t: [float(np.mean([getattr(r, attribute) is None or getattr(r, attribute) > s for r in runs]))
                                for s in grid] for t, runs in by_t.items()} for potential, by_t in table.items()}

    return {"steps": grid, "fraction_physical": fraction("first_unphysical_step"),
            "fraction_held": fraction("first_unheld_step"), "held_fraction": HELD_FRACTION,
            "runs": {potential: {t: len(runs) for t, runs in by_t.items()} for potential, by_t in table.items()}}


def write_sweep(records: Sequence[SurvivalRun], out: Path, steps: int, settings: dict | None = None) -> dict:
    """``survival.json`` (settings, every record, the survival table) and ``survival.png``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    table = survival_table(records, steps)
    data = {"settings": settings or {}, "records": [{**asdict(r), "physical": r.physical} for r in records],
            "survival": table}
    (out / "survival.json").write_text(json.dumps(data, indent=1))
    plot_survival(table, out / "survival.png")
    return data


def plot_survival(table: dict, path: Path) -> None:
    """One column per temperature (condition), two rows: the fraction of runs still physical (no
    pair inside an aux cutoff) and still held (no pair below ``held_fraction`` of it); a step curve
    per potential (styles differ, so curves that coincide stay visible), the legend below."""
    from alcgap.analysis.plots import plt  # matplotlib (Agg): loaded only when a plot is drawn

    temperatures = sorted({t for by_t in table["fraction_physical"].values() for t in by_t},
                          key=lambda key: (float(key.split()[0]), key))
    rows = [("fraction_physical", "still physical\n(no pair inside an aux cutoff)")]
    if "fraction_held" in table:
        rows.append(("fraction_held", f"still held (no pair below\n{table.get('held_fraction', HELD_FRACTION):g} of its aux cutoff)"))
    fig, axes = plt.subplots(len(rows), len(temperatures), figsize=(max(4.4 * len(temperatures), 7.5), 3.6 * len(rows) + 0.9),
                             squeeze=False)
    styles = [("-", 3.0), ("--", 2.0), (":", 2.0), ("-.", 1.5)]
    for row, (key, label) in enumerate(rows):
        for ax, t in zip(axes[row], temperatures):
            for k, (potential, by_t) in enumerate(table[key].items()):
                if t in by_t:
                    style, width = styles[k % len(styles)]
                    ax.step(table["steps"], by_t[t], where="post", linestyle=style, linewidth=width,
                            label=f"{potential} ({table['runs'][potential][t]} runs)")
            ax.set(title=t if " " in t else f"{t} K", xlabel="MD step", ylabel=f"fraction of runs {label}", ylim=(-0.05, 1.05))
    legend = {}  # every potential once, from whichever panel has it
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label.split(" (")[0], (handle, label))
    handles, labels = [h for h, _ in legend.values()], [label for _, label in legend.values()]
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.9 / fig.get_figheight() * (1 + (len(labels) - 1) // 2) / 2, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
