"""Settings of the judge and its stop rule (``judge``): the target size, the one force tolerance,
the three gates (clean, confidence, accuracy on the explored test set), the stall rule and the
survival test."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from alcgap.settings import Strict
from alcgap.survival_settings import SurvivalJudgeSettings


def parse_tolerance(value: float | str) -> tuple[float, bool]:
    """(value, relative) of a force tolerance: eV/A, or ``"N%"`` of the reference's force RMS."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r}: give eV/A (e.g. 0.5) or a share of the reference's force RMS (e.g. \"25%\")")
    if isinstance(value, (int, float)):
        if not 0.0 < float(value) < 100.0:
            raise ValueError(f"{value}: a force tolerance in eV/A must be > 0 (and a sane one under 100)")
        return float(value), False
    text = str(value).strip()
    try:
        share = float(text[:-1]) if text.endswith("%") else None
    except ValueError:
        share = None
    if share is None or not 0.0 < share <= 100.0:
        raise ValueError(f"{value!r}: give eV/A (e.g. 0.5) or a share of the reference's force RMS between 0 and "
                         "100%, e.g. \"25%\"")
    return share / 100.0, True


class JudgeSettings(Strict):
    """What an iteration must show for the campaign to stop."""

    target_size: int = Field(10, ge=1, description=(
        "the stop rule judges the runs at this cell size, in multiples of the training cell (the "
        "paper: 10). explore.sizes must include it. A smaller one is allowed, and the summary says so"))
    max_energy_mae: float = Field(10.0, gt=0.0, description="meV/atom on the held-out set")
    force_tolerance: float | str = Field("25%", description=(
        "the one force tolerance (eV/A per component, or \"N%\" of the reference's force RMS on the "
        "held-out bootstrap atoms). It flags an atom whose predicted force error (the variance, "
        "calibrated on held-out labels: alcgap.analysis.calibration) is over it, so selection ranks "
        "those first; and it gates convergence: the share of confident target-size frames and the "
        "error on the explored and held-out sets. Default 25%: just below the demo's first model, "
        "within reach of more data (docs/method.md)"))
    confident_fraction: float = Field(0.9, gt=0.0, le=1.0, description=(
        "the confidence gate: at least this share of the target-size runs' monitored frames has no "
        "atom over the force tolerance (DP-GEN's conv_accuracy anchor, 0.9)"))
    test_frames: int = Field(2, ge=0, description=(
        "frames each iteration draws at random from its exploration runs, regardless of flags, "
        "carves like any label, labels and never trains on: the explored test set, on which the "
        "accuracy gate measures the model where the loop goes"))
    calibration_level: float = Field(0.9, gt=0.0, lt=1.0, description=(
        "the share of atoms whose force error the calibrated band should hold; reported per "
        "iteration against the share it does hold"))
    gates: list[Literal["clean", "confidence", "accuracy"]] = Field(
        default_factory=lambda: ["clean", "confidence", "accuracy"], min_length=1, description=(
            "the gates that must all hold for \"converged\": clean (every target-size run free of "
            "clustering on every monitored frame, the paper's), confidence (confident_fraction), "
            "accuracy (force error on the explored test set, and on the held-out set, within the "
            "tolerance given its standard error; held-out energy and stress under their gates)"))
    stall_iterations: int = Field(2, ge=1, description=(
        "an iteration that adds labels while no failing gate's figure improved on its best for "
        "this many iterations in a row stops the campaign as \"stalled\", naming the gate"))
    max_stress_rmse: float | None = Field(None, gt=0.0, description=(
        "GPa on the held-out set, over the stress components of the held-out periodic frames; "
        "None: no stress gate"))
    clustering: dict | None = Field(None, description=(
        "clustering detector settings besides the short pairs (neighbour_cutoff, max_coordination, "
        "max_like_neighbours: alcgap.analysis.clustering.ClusteringCriteria fields); None: SiO2's "
        "for Si + O, covalent radii otherwise. Short pairs come from the ``distances`` table"))
    survival: SurvivalJudgeSettings | None = Field(None, description=(
        "the survival test, run once the other gates pass; the iteration converges only "
        "when ``min_held`` of its runs hold (see SurvivalJudgeSettings). None: no survival test"))

    @model_validator(mode="before")
    @classmethod
    def _one_tolerance(cls, data):
        if isinstance(data, dict) and "max_force_rmse" in data:
            raise ValueError("judge.max_force_rmse is now judge.force_tolerance (eV/A, or \"N%\" of the reference's "
                             "force RMS): one tolerance flags atoms, ranks selection and judges convergence")
        return data

    @field_validator("force_tolerance", mode="before")
    @classmethod
    def _tolerance(cls, value):
        parse_tolerance(value)  # before coercion: true is not 1 eV/A
        return value

    @field_validator("gates")
    @classmethod
    def _gates_once(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"{value}: name each gate once")
        return value

    @model_validator(mode="after")
    def _accuracy_has_a_test_set(self) -> "JudgeSettings":
        if "accuracy" in self.gates and self.test_frames == 0:
            raise ValueError("judge.test_frames is 0 with the accuracy gate on: there would be no explored test set to "
                             "measure it on; give test_frames >= 1, or drop \"accuracy\" from judge.gates")
        return self

    @field_validator("clustering")
    @classmethod
    def _no_second_table(cls, value):
        if value and "min_distance" in value:
            raise ValueError("judge.clustering.min_distance: short pairs come from the one distance table; "
                             "set distances.flag (and distances.cluster_margin) instead")
        return value
