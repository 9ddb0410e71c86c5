"""The main SOAP GAP: fitted on the residual of the reference over the auxiliary (composite),
or on the reference alone (traditional), from the same data and settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import ase.io
import numpy as np
from ase import Atoms
from ase.stress import voigt_6_to_full_3x3_stress

from alcgap.fit.settings import MainSettings, SoapSettings
from alcgap.fit.gapfit import descriptor, format_params, gap_label, run_gap_fit

# Keys of the labels in gap_fit's training file. Distinct from ASE's own "energy"/"forces" so
# that reading the file back never confuses a label with a calculator result.
ENERGY_KEY, FORCES_KEY, VIRIAL_KEY = "ref_energy", "ref_forces", "ref_virial"


class EmptyTrainingSet(ValueError):
    pass


def training_frames(labelled: Sequence[Atoms], *, use_forces: bool, use_virials: bool | None,
                    sigmas: tuple[float, float, float] | None = None, force_scale: float | None = None) -> list[Atoms]:
    """Plain Atoms with the labels under gap_fit keys; virial = -stress * volume (eV).

    gap_fit's virial is -dE/d(strain), 3x3 in eV: the negative of ASE's stress (eV/A^3) times the
    volume. ``use_virials`` None or True: the virial of every periodic frame whose label carries
    a stress; isolated atoms, dimers and frames without stress get none. False: no virials.

    With ``sigmas`` (energy, force, virial) and ``force_scale`` (eV/A), a frame whose RMS reference
    force exceeds ``force_scale`` gets per-frame sigmas (gap_fit's ``energy_sigma``,
    ``force_sigma``, ``virial_sigma`` keys) scaled by RMS force / ``force_scale``."""
    frames = []
    for atoms in labelled:
        results = atoms.calc.results if atoms.calc is not None else {}
        if "energy" not in results:
            raise ValueError("every training structure needs a reference energy (a SinglePointCalculator)")
        frame = Atoms(atoms.get_chemical_symbols(), positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        frame.info[ENERGY_KEY] = float(results["energy"])
        if use_forces and "forces" in results:
            frame.arrays[FORCES_KEY] = np.array(results["forces"])
        if use_virials is not False and results.get("stress") is not None and all(atoms.pbc):
            virial = -voigt_6_to_full_3x3_stress(results["stress"]) * atoms.get_volume()
            frame.info[VIRIAL_KEY] = " ".join(f"{v:.10f}" for v in virial.flatten())
        if sigmas is not None and force_scale and "forces" in results:
            scale = float(np.sqrt(np.mean(np.asarray(results["forces"]) ** 2))) / force_scale
            if scale > 1.0:
                # per-frame values are absolute in gap_fit: per-atom energy and virial sigmas times
                # sqrt(N), as gap_fit scales its defaults (sigma_per_atom)
                for key, sigma in zip(("energy_sigma", "force_sigma", "virial_sigma"), sigmas):
                    frame.info[key] = sigma * scale * (np.sqrt(len(atoms)) if key != "force_sigma" else 1.0)
        frames.append(frame)
    return frames


def write_training_file(labelled: Sequence[Atoms], path: str | os.PathLike, *, use_forces: bool, use_virials: bool | None,
                        sigmas: tuple[float, float, float] | None = None, force_scale: float | None = None) -> Path:
    if not labelled:
        raise EmptyTrainingSet("the training set is empty: label at least one structure before fitting")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = training_frames(labelled, use_forces=use_forces, use_virials=use_virials, sigmas=sigmas, force_scale=force_scale)
    ase.io.write(path, frames, format="extxyz")
    return path


def soap_descriptor(soap: SoapSettings) -> str:
    return descriptor(
        "soap",
        n_max=soap.n_max,
        l_max=soap.l_max,
        cutoff=soap.cutoff,
        cutoff_transition_width=soap.cutoff_transition_width,
        atom_sigma=soap.atom_sigma,
        zeta=soap.zeta,
        delta=soap.delta,
        n_sparse=soap.n_sparse,
        sparse_method=soap.sparse_method,
        covariance_type="dot_product",
        add_species=True,
    )


def fit_main_gap(
    labelled: Sequence[Atoms],
    settings: MainSettings,
    atom_energies: dict[str, float],
    workdir: str | os.PathLike,
    *,
    aux_xml: str | os.PathLike | None = None,
    name: str = "composite.xml",
    threads: int | None = None,
    seed: int = 1,
) -> Path:
    """Fit the SOAP GAP on ``labelled`` structures; with ``aux_xml`` the result is the composite.

    With an auxiliary, gap_fit subtracts its prediction from every label (core_param_file), so
    the main GAP learns the residual, and writes one xml whose top potential is the Sum of both.
    ``atom_energies`` (eV) are the isolated-atom energies used as e0.
    """
    workdir = Path(workdir)
    train = write_training_file(labelled, workdir / "train.xyz", use_forces=settings.use_forces, use_virials=settings.use_virials,
                                sigmas=(settings.energy_sigma, settings.force_sigma, settings.virial_sigma),
                                force_scale=settings.sigma_force_scale)
    n_atoms = sum(len(a) for a in labelled)
    soap = settings.soap
    if soap.n_sparse > n_atoms:
        soap = soap.model_copy(update={"n_sparse": n_atoms})
    options: dict[str, object] = {
        "e0": "{" + ":".join(f"{s}:{e:.10f}" for s, e in atom_energies.items()) + "}",
        "default_sigma": [settings.energy_sigma, settings.force_sigma, settings.virial_sigma, 0.0],
        "energy_parameter_name": ENERGY_KEY,
        "force_parameter_name": FORCES_KEY,
        "virial_parameter_name": VIRIAL_KEY,
        "sparse_jitter": settings.sparse_jitter,
        "export_covariance": True,
        "sparse_separate_file": False,
        "rnd_seed": seed,
    }
    if aux_xml is not None:
        aux_xml = Path(aux_xml).resolve()
        options["core_param_file"] = str(aux_xml)
        options["core_ip_args"] = "{IP GAP label=" + gap_label(aux_xml) + "}"
    return run_gap_fit(
        workdir, at_file=train.name, gp_file=name, descriptors=[soap_descriptor(soap)], options=options, threads=threads
    )


__all__ = ["EmptyTrainingSet", "fit_main_gap", "format_params", "soap_descriptor", "training_frames", "write_training_file"]
