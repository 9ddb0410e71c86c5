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

    ``component`` ("main" or "aux") selects one part of a composite xml, evaluated by QUIP.

    A whole composite is evaluated as its main GAP (QUIP) plus its auxiliary from exact tables
    (:class:`~alcgap.auxiliary.table.AuxTable`, the same tables MD uses,
    with the screened Coulomb core below the scan), not as the Sum potential gap_fit wrote:
    - QUIP's fixed cost per call (~11 ms of argument parsing) would otherwise be paid for the
      aux and for the Sum again, +10% over the main GAP on a 216-atom cell;
    - the variance cannot be asked of the Sum: QUIP would ask the aux too, whose prior variance
      (delta^2 ~ 1e10 eV^2, the scale of its targets) cancels catastrophically, and it aborts with
      "negative variance predicted" as soon as a pair comes inside an aux cutoff -- exactly the
      structures active learning must flag. The variance of a composite is its main GAP's.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies", VARIANCE]

    def __init__(self, xml: str | os.PathLike, *, component: str | None = None, variance: bool = False, **kwargs):
        super().__init__(**kwargs)
        from quippy.potential import Potential  # quippy: slow to import

        from alcgap.auxiliary.table import AuxTable  # loads quippy

        self.xml = Path(xml)
        if not self.xml.exists():
            raise FileNotFoundError(f"GAP xml not found: {self.xml}")
        labels = component_labels(self.xml)
        if component is not None and component not in labels:
            raise ValueError(f"component={component!r}: {self.xml.name} has only {sorted(labels)}")
        self.variance = variance
        self.is_composite = component is None and "aux" in labels
        label = labels[component] if component else (labels["main"] if self.is_composite else None)
        self._main = Potential(
            param_filename=str(self.xml),
            calc_args=VARIANCE if variance else None,
            **({"args_str": f"IP GAP label={label}"} if label else {}),
        )
        self._aux = AuxTable.from_xml(self.xml, labels["aux"]) if self.is_composite else None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        wanted = ["energy", "forces", "energies"] + (["stress"] if all(self.atoms.pbc) else [])
        self._main.calculate(self.atoms, wanted, system_changes)
        results = {key: np.array(self._main.results[key], dtype=float) for key in wanted}
        if self._aux is not None:
            aux = self._aux.calculate(self.atoms)
            for key in wanted:
                results[key] = results[key] + aux[key]
        results["energy"] = float(results["energy"])
        results["free_energy"] = results["energy"]
        if self.variance:
            results[VARIANCE] = np.array(self._main.extra_results["atoms"][VARIANCE])
        self.results = results

    def reset(self):
        super().reset()
        if hasattr(self, "_main"):
            self._main.reset()  # quippy's Potential keeps its own cache of the last results

    def get_variance(self, atoms) -> np.ndarray:
        """Per-atom predicted variance (eV^2)."""
        if not self.variance:
            raise ValueError("this calculator was built with variance=False")
        return self.get_property(VARIANCE, atoms)
