"""What ended an MD run early, and whose failure it was."""

from __future__ import annotations

#: what ended an MD task early, by the words of its stop reason or error (first match wins), and
#: whose failure it is: the potential's (it let atoms collapse, or brought a pair inside the aux
#: table's range), the integration's (a step too long for the forces: atoms lost, energies blown
#: up), the software's (LAMMPS, QUIP or the task itself), or nobody's (killed, timed out, node lost)
FAILURES = (
    ("collapse", "potential", ("collapse:",)),
    ("pair_inside_aux_table", "potential", ("table inner cutoff", "pair distance < table")),
    ("lost_atoms", "integration", ("lost atoms", "out of range atoms")),
    ("non_finite", "integration", ("non-finite", "non-numeric")),
    ("lammps_error", "software", ("lammps error",)),
    ("task_error", "software", ("traceback", "error")),
)


def classify_md_failure(reason: str | None, has_result: bool = True) -> tuple[str, str]:
    """(kind, whose) of an MD task's early stop or failure; ("interrupted", "none") when it left no
    ``result.json`` (killed, timed out, node lost)."""
    if not has_result:
        return "interrupted", "none"
    text = (reason or "").lower()
    for kind, whose, words in FAILURES:
        if any(word in text for word in words):
            return kind, whose
    return "unknown", "software"
