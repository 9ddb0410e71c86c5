"""The paper scale: CP2K PBE, 216-atom cell, the full melt-and-quench, 2160-atom 10x cells.

Meant for a cluster, through a site (``--site sites/<cluster>.yaml``); nothing of it runs on a
2-core machine. Four phases, each resumable (re-run the same command after a failure):

1. one alcgap campaign per training mode (``<out>/<mode>/campaign.yaml``), stopped after its
   first fit: dimers and isolated atoms -> aux; classical melt-and-quench -> CP2K labels
   (streamed to the site's MPI executor) -> composite AND traditional main GAP from the same
   data (``traditional: true``) with held-out errors. The energies+forces campaign shares the
   first one's label cache (``labels/`` is a link): CP2K computes forces with every energy,
   so the second mode costs no new DFT. Its exploration is reduced to one short 1x run
   (the benchmark runs its own MD, below).
2. the benchmark's MD task files (reference = the classical potential that made the training
   data, composite and traditional per seed at 1x, composite at 10x), all submitted at once to
   the site's MPI executor (``python -m alcgap.md.task``, the site's md ranks).
3. VDOS (claim 3): GAP relaxations and finite differences in this process; the DFT side relaxes
   with BFGS on CP2K labels (one at a time) and hands the 6N displaced structures to the site at
   once. Every label is cached in its folder: a restart repeats no CP2K call.
4. the same measurements and report as the fast scale.

The driver itself does the GAP work of phases 3 and 4 (216-atom force calls, ~0.3 s each): run it
inside an allocation (an interactive job or a batch script on a compute node), not on a login node.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import yaml
from ase import Atoms

from alcgap.analysis.vdos import dynamical_matrix, mode_energies
from alcgap.config import load_campaign_config
from alcgap.reference import make_reference
from alcgap.sites import load_site

import tables
from claims import ReferenceCalculator
from mdruns import RunSpec, write_task
from measure import Stages, console, measure_mode
from scales import MODE_DIRS, TRAINING_MODES, Scale

ROOT = Path(__file__).resolve().parents[2]
#: the project's paper campaign: CP2K settings, aux cutoffs, SOAP, data protocol
BASE_CONFIG = ROOT / "configs" / "sio2.yaml"


def campaign_config(scale: Scale, mode: str, base: dict | None = None) -> dict:
    """The campaign of one training mode: the project's paper config, one iteration, both models."""
    config = dict(base or yaml.safe_load(BASE_CONFIG.read_text()))
    fit = scale.fit_config(TRAINING_MODES[mode])
    config.update(
        name=f"paper-sio2-{MODE_DIRS[mode]}",
        traditional=True,  # the same main GAP without aux, same data, same settings
        main={**config.get("main", {}), **fit["main"]},
        data=fit["data"],
        # the benchmark runs its own MD (phase 2): the campaign's exploration is one short 1x run
        explore={**config.get("explore", {}), "seeds": [1], "sizes": [1], "protocol_scale": 0.001},
        judge={**config.get("judge", {}), "target_size": 1},
        select={**config.get("select", {}), "budget": 1},
        stop={**config.get("stop", {}), "max_iterations": 1, "max_labels": 10_000},
    )
    return config


def write_configs(scale: Scale, modes: list[str], out: Path, base: dict | None = None) -> dict[str, Path]:
    """Write and validate one campaign config per mode; returns their paths."""
    paths = {}
    for mode in modes:
        folder = out / MODE_DIRS[mode]
        folder.mkdir(parents=True, exist_ok=True)
        config = campaign_config(scale, mode, base)
        load_campaign_config(config)  # fails here, naming the field, before anything is submitted
        paths[mode] = folder / "campaign.yaml"
        paths[mode].write_text(yaml.safe_dump(config, sort_keys=False))
    return paths


def plan_text(scale: Scale, modes: list[str], seeds: list[int], site: str | None, configs: dict[str, Path]) -> str:
    big = scale.n_atoms * scale.big_factor
    steps = sum(s.steps for s in scale.md_protocol())
    lines = [
        f"# paper-scale plan ({scale.n_atoms}-atom cell, CP2K PBE), site {site}",
        "",
        "1. campaigns (one fit each, composite + traditional from the same data):",
        *[f"   alcgap run {configs[m]} --site {site} --run-dir {configs[m].parent / 'campaign'}" for m in modes],
        f"2. MD through the site: reference, composite, traditional x {len(seeds)} seeds at {scale.n_atoms} atoms "
        f"({steps} steps each), composite x {scale.big_seeds} at {big} atoms, per mode",
        f"3. VDOS: {scale.vdos_seeds or len(seeds)} seed(s) x 2 models per mode; DFT relaxation + "
        f"{6 * scale.n_atoms} displaced CP2K single points per structure",
        "4. measurements and report: <out>/report.md",
    ]
    return "\n".join(lines) + "\n"


def launch_paper_scale(scale: Scale, modes: list[str], n_seeds: int, out: Path, *, site: str | None,
                       dry_run: bool = False, base_config: dict | None = None) -> int:
    seeds = list(range(1, n_seeds + 1))
    out.mkdir(parents=True, exist_ok=True)
    configs = write_configs(scale, modes, out, base_config)
    plan = plan_text(scale, modes, seeds, site, configs)
    (out / "plan.md").write_text(plan)
    if site:
        load_site(site, out)  # a bad site fails here, naming the field
    print(plan)
    if dry_run:
        print(f"dry run: configs and plan written to {out}; nothing launched")
        return 0
    started = time.perf_counter()
    stages = Stages(None, 0)
    fits = stages.run("campaigns", run_campaigns, configs, modes, site)
    results = measure_through_site(stages, scale, modes, seeds, out, site, configs, fits)
    report = tables.write_report(out, scale, seeds, results, stages.seconds, time.perf_counter() - started)
    print(report.read_text())
    return 0


# ---------------------------------------------------------------- phase 1: campaigns


def run_campaigns(configs: dict[str, Path], modes: list[str], site: str) -> dict[str, dict]:
    from alcgap.workflow.campaign import run_campaign

    fits, first = {}, None
    for mode in modes:
        run_dir = configs[mode].parent / "campaign"
        run_dir.mkdir(parents=True, exist_ok=True)
        if first is not None and not (run_dir / "labels").exists():
            # same reference settings, same frames: the cached CP2K labels (forces included) serve both
            (run_dir / "labels").symlink_to((first / "labels").resolve(), target_is_directory=True)
        console.log(f"campaign {mode}: {run_dir}")
        run_campaign(configs[mode], run_dir, site=site)
        first = first or run_dir
        fits[mode] = campaign_fit(configs[mode], run_dir)
    return fits


def campaign_fit(config_path: Path, run_dir: Path) -> dict:
    """Models and held-out data of a campaign's first fit, as the fast scale's fit_data()."""
    from alcgap.store import LabelStore
    from alcgap.workflow.state import IterationState

    config = load_campaign_config(config_path)
    fitted = IterationState(run_dir, 1).get("fit")
    # the campaign's own split of its bootstrap labels (store.split by seed and fingerprint)
    train, test = LabelStore(run_dir / "data.db").split(config.seed, config.data.test_fraction, origin="bootstrap")
    return {"models": fitted["models"], "summary_errors": fitted["errors"], "train": train, "test": test}


# ---------------------------------------------------------------- phases 2-4 through the site


class SiteLabels:
    """A reference evaluated through the site (CP2K on the MPI executor), labels cached per
    structure in ``folder/<fingerprint>``. ``compute`` makes it usable wherever a Reference is."""

    def __init__(self, apps, reference, folder: Path):
        self.apps, self.reference, self.folder = apps, reference, folder

    def submit(self, atoms: Atoms):
        from alcgap.store import fingerprint

        return self.apps.label(self.reference, atoms, str(self.folder / fingerprint(atoms)))

    def compute(self, atoms: Atoms):
        return self.submit(atoms).result()[0]

    def forces(self, structures: list[Atoms]) -> list[np.ndarray]:
        futures = [self.submit(a) for a in structures]  # all at once: the site runs them side by side
        labels = [f.result()[0] for f in futures]
        failed = [(k, lab.status.value, lab.reason[:200]) for k, lab in enumerate(labels) if not lab.ok]
        if failed:
            raise RuntimeError(f"{len(failed)} displaced-structure labels failed, first: {failed[0]}")
        return [np.asarray(lab.forces) for lab in labels]

    def phonons(self, atoms: Atoms, delta: float) -> np.ndarray:
        """Phonon energies (meV) by central differences, the 6N displaced structures labelled at once
        (the same scheme as alcgap.analysis.vdos.force_constants)."""
        n = len(atoms)
        displaced = []
        for i in range(n):
            for k in range(3):
                for sign in (1.0, -1.0):
                    moved = atoms.copy()
                    moved.positions[i, k] += sign * delta
                    displaced.append(moved)
        forces = self.forces(displaced)
        phi = np.array([-(forces[2 * r].ravel() - forces[2 * r + 1].ravel()) / (2.0 * delta) for r in range(3 * n)])
        return mode_energies(dynamical_matrix(0.5 * (phi + phi.T), atoms.get_masses()))


def measure_through_site(stages: Stages, scale: Scale, modes: list[str], seeds: list[int], out: Path, site: str,
                         configs: dict[str, Path], fits: dict[str, dict]) -> dict:
    import ase.io
    import parsl

    from alcgap.structures import beta_cristobalite, supercell_with_atoms
    from alcgap.workflow.apps import CampaignApps

    first = load_campaign_config(configs[modes[0]])
    dft = make_reference(first.reference, first.species)
    loaded = load_site(site, out)
    parsl.clear()
    dfk = parsl.load(loaded.config)
    try:
        apps = CampaignApps(loaded, dft)
        start = out / "start.xyz"
        ase.io.write(start, supercell_with_atoms(beta_cristobalite(), scale.n_atoms), format="extxyz")
        runs = stages.run("MD through the site", run_md_through_site, apps, scale, modes, seeds, out, start, fits)
        labels = SiteLabels(apps, dft, out / "vdos-labels")
        results = {}
        for mode in modes:
            results[mode] = measure_mode(stages, scale, mode, out / MODE_DIRS[mode], start, fits[mode],
                                         runs[mode]["runs"], runs[mode]["big"], runs["reference"],
                                         ReferenceCalculator(labels), labels.phonons)
    finally:
        dfk.cleanup()
        parsl.clear()
    return results


def run_md_through_site(apps, scale: Scale, modes: list[str], seeds: list[int], out: Path, start: Path,
                        fits: dict[str, dict]) -> dict:
    """Write every task file, submit those without a result.json at once, wait for all."""
    planned = [("reference", RunSpec("reference", s), {}, out / "reference" / "md") for s in seeds]
    for mode in modes:
        models, md = fits[mode]["models"], out / MODE_DIRS[mode] / "md"
        planned += [(mode, RunSpec(p, s), models, md) for p in ("composite", "traditional") for s in seeds]
        planned += [(mode, RunSpec("composite", s, scale.big_factor), models, md) for s in range(1, scale.big_seeds + 1)]
    futures = []
    for group, spec, models, folder in planned:
        task_file = write_task(spec, scale, start, models, folder / spec.name)
        if not (task_file.parent / "result.json").exists():
            futures.append((spec, apps.explore(str(task_file))))
    console.log(f"{len(futures)} MD tasks submitted to the site ({len(planned) - len(futures)} already done)")
    for spec, future in futures:
        try:
            future.result()
        except Exception as err:  # the task's result.json says why (exit 3: LAMMPS stopped on one rank)
            console.log(f"[yellow]{spec.name}[/]: {err}")
    runs: dict = {"reference": []}
    for group, spec, _, folder in planned:
        result_file = folder / spec.name / "result.json"
        result = json.loads(result_file.read_text()) if result_file.exists() else {"failed": True, "stopped_early": True,
                                                                                  "stop_reason": "no result.json"}
        entry = {"spec": spec, "folder": folder / spec.name, "result": result}
        if group == "reference":
            runs["reference"].append(entry)
        elif spec.size_factor > 1:
            runs.setdefault(group, {"runs": {"composite": [], "traditional": []}, "big": []})["big"].append(entry)
        else:
            runs.setdefault(group, {"runs": {"composite": [], "traditional": []}, "big": []})["runs"][spec.potential].append(entry)
    return runs

