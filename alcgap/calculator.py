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

    ``component`` ("main" or "aux") selects one part of a composite xml.

    The variance of a composite is the main GAP's. It cannot be asked of the whole Sum potential:
    QUIP would ask the aux too, whose prior variance (delta^2 ~ 1e10 eV^2, the scale of its
    targets) cancels catastrophically, and QUIP aborts with "negative variance predicted" as soon
    as a pair comes inside an aux cutoff -- exactly the structures active learning must flag.
    So with ``variance=True`` a composite is evaluated as main (with variance) + aux (without),
    each once; without variance, as the single Sum potential gap_fit wrote.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", VARIANCE]

    def __init__(self, xml: str | os.PathLike, *, component: str | None = None, variance: bool = False, **kwargs):
        super().__init__(**kwargs)
        from quippy.potential import Potential

        self.xml = Path(xml)
        if not self.xml.exists():
            raise FileNotFoundError(f"GAP xml not found: {self.xml}")
        labels = component_labels(self.xml)
        if component is not None and component not in labels:
            raise ValueError(f"component={component!r}: {self.xml.name} has only {sorted(labels)}")
        self.variance = variance
        self.is_composite = component is None and "aux" in labels

        def load(label: str | None, with_variance: bool):
            extra = {"args_str": f"IP GAP label={label}"} if label else {}
            return Potential(param_filename=str(self.xml), calc_args=VARIANCE if with_variance else None, **extra)

        if self.is_composite and variance:
            self._parts = [load(labels["main"], True), load(labels["aux"], False)]
        else:
            self._parts = [load(labels[component] if component else None, variance)]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted = ["energy", "forces", "energies"] + (["stress"] if all(self.atoms.pbc) else [])
        total: dict = {}
        for pot in self._parts:
            pot.calculate(self.atoms, wanted, system_changes)
            for key in wanted:
                value = np.array(pot.results[key], dtype=float)
                total[key] = total[key] + value if key in total else value
        total["energy"] = float(total["energy"])
        total["free_energy"] = total["energy"]
        if self.variance:
            total[VARIANCE] = np.array(self._parts[0].extra_results["atoms"][VARIANCE])
        self.results = total

    def get_variance(self, atoms) -> np.ndarray:
        """Per-atom predicted variance (eV^2)."""
        if not self.variance:
            raise ValueError("this calculator was built with variance=False")
        return self.get_property(VARIANCE, atoms)
