"""GAP xml files as ASE calculators, with per-atom predicted variance.

``GapCalculator("composite.xml")`` is the composite (aux + main); ``component="main"`` or
``"aux"`` selects one part of a composite xml by its GAP label, for analysis and benchmarks.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from alcgap.fit.gapfit import gap_label

VARIANCE = "local_gap_variance"


def component_labels(xml: str | os.PathLike) -> dict[str, str]:
    """GAP labels inside a gap_fit xml: {"main": ..., "aux": ...} for a composite, {"main": ...} otherwise."""
    root = ET.parse(xml).getroot()
    top = root.find("Potential")
    labels = {"main": gap_label(xml)}
    init_args = top.attrib.get("init_args", "")
    if init_args.startswith("Sum"):
        # gap_fit writes "Sum init_args_pot1={IP GAP label=<core>} init_args_pot2={IP GAP label=<main>}"
        core = init_args.split("init_args_pot1={", 1)[1].split("}", 1)[0]
        labels["aux"] = core.split("label=", 1)[1].strip()
    return labels


class GapCalculator(Calculator):
    """A gap_fit xml as an ASE calculator: energy, forces, stress, per-atom energies and, with
    ``variance=True``, the per-atom predicted variance ``local_gap_variance`` (eV^2).

    The xml must have been fitted with ``export_covariance=T`` for the variance (alcgap always does).
    In a composite, the variance is the main GAP's: the auxiliary has no covariance.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", VARIANCE]

    def __init__(self, xml: str | os.PathLike, *, component: str | None = None, variance: bool = False, **kwargs):
        super().__init__(**kwargs)
        from quippy.potential import Potential

        self.xml = Path(xml)
        if not self.xml.exists():
            raise FileNotFoundError(f"GAP xml not found: {self.xml}")
        args = {}
        if component is not None:
            labels = component_labels(self.xml)
            if component not in labels:
                raise ValueError(f"component={component!r}: {self.xml.name} has only {sorted(labels)}")
            args["args_str"] = f"IP GAP label={labels[component]}"
        self.variance = variance
        calc_args = "local_gap_variance" if variance else None
        self._pot = Potential(param_filename=str(self.xml), calc_args=calc_args, **args)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted = ["energy", "forces", "energies"] + (["stress"] if all(self.atoms.pbc) else [])
        self._pot.calculate(self.atoms, wanted, system_changes)
        self.results = dict(self._pot.results)
        self.results["free_energy"] = self.results["energy"]
        if self.variance:
            self.results[VARIANCE] = np.array(self._pot.extra_results["atoms"][VARIANCE])

    def get_variance(self, atoms) -> np.ndarray:
        """Per-atom predicted variance (eV^2)."""
        if not self.variance:
            raise ValueError("this calculator was built with variance=False")
        return self.get_property(VARIANCE, atoms)
