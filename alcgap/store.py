"""The labelled data set of a campaign: every reference calculation, with where it came from.

One ASE database (:func:`ase.db.connect`) holds it, by default an SQLite file (``<run>/data.db``).
The same code takes a PostgreSQL URL, ``LabelStore("postgresql://user:password@host:5432/db")``
(needs the ``ase-db-backends`` package); use it when writers run on several nodes.

One row per reference calculation, failed ones included:

- the structure and, for OK labels, energy (eV), forces (eV/A) and stress (eV/A^3) in ASE's own
  columns, so ``row.toatoms()`` (and ``ase db data.db``) shows them;
- key-value pairs, the searchable scalars: ``status`` (a :class:`LabelStatus` value),
  ``reference`` (its name), ``settings_hash``, ``fingerprint``, ``iteration``, ``origin``,
  ``variance``, ``min_distance`` and ``created``, ``started``, ``finished`` (Unix seconds; the
  last two bracket the reference calculation);
- ``data``, free text and dicts: ``label_reason`` (the program's own message),
  ``selection_reason``, ``label_info``.

The settings behind each settings hash are stored once, in the database metadata under
``reference_settings``. Hashes are stored as ``sha256:<hex>``: ASE refuses, and its queries
convert, text that reads as a number, which a hex digest made only of digits would be.

Rules
-----
- **Never label twice.** A structure's :func:`fingerprint` plus the reference settings hash
  identify a label. :meth:`LabelStore.label_with` skips every structure that has an OK row.
- **Failures are kept, never trained on.** A failed row keeps its status and reason. It is not
  retried with the same settings (a structure on which SCF did not converge will not converge
  the next time either) unless ``retry_failed=True``; time-outs are retried by default, as they
  say more about the queue than about the structure (:data:`RETRIED_BY_DEFAULT`).
- **The store does not split.** Frames 100 fs apart are correlated, so a per-frame split leaks:
  the campaign fixes its held-out set once, as contiguous blocks of the bootstrap trajectory
  (:func:`alcgap.workflow.fit.split`), and trains on every label the loop selects.
- **Writes are atomic.** Each label is a single ASE ``write``, one SQL transaction: a process
  killed mid-write leaves every finished row intact and no partial row. SQLite runs in WAL mode,
  so readers (``alcgap status``) never block the writer and see only committed rows; several
  processes may write at once, SQLite queues them (ASE's 20 s busy timeout). ASE's own lock file
  is off: a writer killed while holding it would leave it behind and block every later writer.
  WAL needs shared memory between processes, which network file systems may not give; there
  pass ``journal_mode="delete"`` or use PostgreSQL. Call the store from one MPI rank.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import ase.db
import ase.io
import numpy as np
from ase import Atoms
from ase.db.row import AtomsRow

from alcgap.fit.main import EmptyTrainingSet, training_frames
from alcgap.provenance import FINGERPRINT_TOLERANCE, HASH_PREFIX, Provenance, fingerprint
from alcgap.reference.base import Label, LabelStatus, Reference

#: failures that say nothing about the structure: run again when met on resume (an input error
#: stopped labelling; once the settings are fixed, the same structure must be labelled)
RETRIED_BY_DEFAULT = frozenset({LabelStatus.TIMED_OUT, LabelStatus.HUNG, LabelStatus.INPUT_ERROR})
JOURNAL_MODES = ("wal", "delete", "truncate", "persist")


@dataclass(frozen=True)
class StoredLabel:
    """One result of :meth:`LabelStore.label_with`; ``reused`` when it came from the store."""

    row_id: int
    label: Label
    reused: bool


@dataclass(frozen=True)
class StoreSummary:
    """Row counts for status displays (every row, failed ones included)."""

    total: int
    by_status: dict[str, int]
    by_origin: dict[str, int]
    by_iteration: dict[int, int]

    def __str__(self) -> str:
        statuses = ", ".join(f"{n} {status}" for status, n in sorted(self.by_status.items()))
        origins = ", ".join(f"{n} {origin}" for origin, n in sorted(self.by_origin.items()))
        return f"{self.total} labels ({statuses}); from {origins}" if self.total else "no labels"


class LabelStore:
    """Labelled structures with provenance in an ASE database (see the module docstring)."""

    def __init__(self, path_or_url: str | os.PathLike, *, journal_mode: str | None = "wal"):
        self.address = str(path_or_url)
        self.is_sqlite = "://" not in self.address
        if journal_mode is not None and journal_mode not in JOURNAL_MODES:
            raise ValueError(f"journal_mode: one of {JOURNAL_MODES} or None, got {journal_mode!r}")
        if self.is_sqlite:
            Path(self.address).parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._connect()
        except sqlite3.OperationalError:  # another process created the tables between ASE's check and its CREATE
            self._db = self._connect()
        if self.is_sqlite and journal_mode is not None:
            with contextlib.closing(sqlite3.connect(self._db.filename, timeout=20)) as con:
                con.execute(f"PRAGMA journal_mode={journal_mode}")
        self._registered: set[str] = set()

    def _connect(self, initialise: bool = True):
        """A fresh ASE connection; ``initialise`` creates the tables and reads the metadata,
        which ASE then caches for the life of the object."""
        db = ase.db.connect(self.address, type="db" if self.is_sqlite else "extract_from_name", use_lock_file=False)
        db.serial = True  # no MPI broadcast: with mpi4py imported, ASE would otherwise expect every rank
        if initialise:
            db.metadata
        return db

    # -- writing -------------------------------------------------------------------------------

    def add(
        self,
        atoms: Atoms,
        label: Label,
        reference_name: str,
        settings_hash: str,
        provenance: Provenance,
        *,
        settings: dict[str, Any] | None = None,
        started: float | None = None,
        finished: float | None = None,
    ) -> int:
        """Write one label (one transaction) and return its row id.

        ``settings`` (the reference's settings dict) is recorded once per settings hash;
        ``started``/``finished`` (Unix seconds) bracket the reference calculation.
        """
        if settings is not None:
            self.register_settings(reference_name, settings_hash, settings)
        record = label.attach(atoms) if label.ok else atoms.copy()  # a copy drops any calculator
        keys: dict[str, Any] = {
            "status": label.status.value,
            "reference": reference_name,
            "settings_hash": HASH_PREFIX + settings_hash,
            "fingerprint": fingerprint(atoms),
            "iteration": int(provenance.iteration),
            "origin": provenance.origin,
            "created": time.time(),
        }
        optional = {"variance": provenance.variance, "min_distance": provenance.min_distance, "started": started, "finished": finished}
        keys.update({key: float(value) for key, value in optional.items() if value is not None})
        data = {"label_reason": label.reason, "selection_reason": provenance.reason, "label_info": label.info,
                "details": provenance.details}
        return self._db.write(record, key_value_pairs=keys, data={key: value for key, value in data.items() if value})

    def register_settings(self, reference_name: str, settings_hash: str, settings: dict[str, Any]) -> None:
        """Record the settings behind a hash in the metadata, once."""
        if settings_hash in self._registered:
            return
        settings = json.loads(json.dumps(settings, default=str))
        db = self._connect(initialise=False)  # so the metadata is read inside the transaction
        with db:  # one connection: read-modify-write of the metadata as one transaction
            if self.is_sqlite:
                db.connection.execute("BEGIN IMMEDIATE")  # hold the write lock while reading
            metadata = db.metadata
            known = metadata.setdefault("reference_settings", {})
            if settings_hash not in known:
                known[settings_hash] = {"reference": reference_name, "settings": settings}
                db.metadata = metadata
        self._registered.add(settings_hash)

    def label_with(
        self,
        reference: Reference,
        structures: Sequence[Atoms],
        provenances: Provenance | Sequence[Provenance],
        *,
        retry_failed: bool = False,
    ) -> list[StoredLabel]:
        """Label the structures that have no usable row yet, writing each label as it returns.

        Results come in input order, reused rows included. ``provenances`` is one per structure
        or one for all. See the module docstring for which failures are retried.
        """
        structures = list(structures)
        if isinstance(provenances, Provenance):
            provenances = [provenances] * len(structures)
        if len(provenances) != len(structures):
            raise ValueError(f"provenances: {len(provenances)} given for {len(structures)} structures")
        settings_hash = reference.settings_hash()
        self.register_settings(reference.name, settings_hash, reference.settings())
        done_now: dict[str, StoredLabel] = {}  # a structure given twice is computed once
        results = []
        for atoms, provenance in zip(structures, provenances):
            key = fingerprint(atoms)
            row = None if key in done_now else self._reusable_row(key, settings_hash, retry_failed=retry_failed)
            if key in done_now:
                result = StoredLabel(done_now[key].row_id, done_now[key].label, reused=True)
            elif row is not None:
                result = StoredLabel(row.id, label_from_row(row), reused=True)
            else:
                started = time.time()
                label = reference.compute(atoms)
                row_id = self.add(atoms, label, reference.name, settings_hash, provenance, started=started, finished=time.time())
                result = done_now[key] = StoredLabel(row_id, label, reused=False)
            results.append(result)
        return results

    # -- reading -------------------------------------------------------------------------------

    def find(self, fingerprint: str, settings_hash: str) -> list[AtomsRow]:
        """Every row (any status) of one structure under one reference setting, oldest first."""
        return list(self._db.select(fingerprint=fingerprint, settings_hash=HASH_PREFIX + settings_hash, sort="id"))

    def has_label(self, atoms: Atoms, settings_hash: str) -> bool:
        """Whether ``atoms`` has an OK label under these reference settings."""
        return any(row.status == LabelStatus.OK.value for row in self.find(fingerprint(atoms), settings_hash))

    def reusable_row(self, atoms: Atoms, settings_hash: str, *, retry_failed: bool = False) -> AtomsRow | None:
        """The row that makes a new calculation of ``atoms`` unnecessary, if there is one."""
        return self._reusable_row(fingerprint(atoms), settings_hash, retry_failed=retry_failed)

    def _reusable_row(self, key: str, settings_hash: str, *, retry_failed: bool) -> AtomsRow | None:
        rows = self.find(key, settings_hash)
        ok = [row for row in rows if row.status == LabelStatus.OK.value]
        if ok or retry_failed:
            return ok[0] if ok else None
        final = [row for row in rows if LabelStatus(row.status) not in RETRIED_BY_DEFAULT]
        return final[-1] if final else None

    def reference_settings(self, settings_hash: str) -> dict[str, Any]:
        """The settings recorded for a hash: ``{"reference": name, "settings": {...}}``."""
        known = self._connect().metadata.get("reference_settings", {})
        if settings_hash not in known:
            raise KeyError(f"no reference settings recorded for hash {settings_hash}")
        return known[settings_hash]

    def rows(
        self,
        *,
        status: LabelStatus | str | None = LabelStatus.OK,
        iteration: int | None = None,
        up_to_iteration: int | None = None,
        origin: str | None = None,
        settings_hash: str | None = None,
    ) -> list[AtomsRow]:
        """Selected rows in id order. ``status=None`` takes every status; ``origin`` ending in
        "*" matches a prefix ("explore*"); ``up_to_iteration`` takes iterations 0..k."""
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = LabelStatus(status).value
        if iteration is not None:
            query["iteration"] = int(iteration)
        if settings_hash is not None:
            query["settings_hash"] = HASH_PREFIX + settings_hash
        prefix = origin[:-1] if origin is not None and origin.endswith("*") else None
        if origin is not None and prefix is None:
            query["origin"] = origin
        bounds = [("iteration", "<=", int(up_to_iteration))] if up_to_iteration is not None else None
        selected = self._db.select(bounds, sort="id", **query)
        return [row for row in selected if prefix is None or row.origin.startswith(prefix)]

    def labelled(self, **selection: Any) -> list[Atoms]:
        """Selected structures (OK labels unless ``status`` says otherwise) as Atoms carrying
        their label on a SinglePointCalculator and their provenance in ``atoms.info``."""
        return [atoms_from_row(row) for row in self.rows(**selection)]

    def __len__(self) -> int:
        """Number of rows, failed ones included."""
        return self._db.count()

    def summary(self) -> StoreSummary:
        keys = [row.key_value_pairs for row in self._db.select(include_data=False, columns=["id", "key_value_pairs"])]
        return StoreSummary(
            total=len(keys),
            by_status=dict(Counter(k["status"] for k in keys)),
            by_origin=dict(Counter(k["origin"] for k in keys)),
            by_iteration=dict(Counter(int(k["iteration"]) for k in keys)),
        )

    # -- training data -------------------------------------------------------------------------

    def export_extxyz(self, path: str | os.PathLike, *, use_forces: bool = True, use_virials: bool = True, **selection: Any) -> Path:
        """Write the selected OK labels as a gap_fit training file (see :func:`write_training_xyz`)."""
        if "status" in selection:
            raise TypeError("export_extxyz: only OK labels are training data; drop the status argument")
        return write_training_xyz(self.labelled(**selection), path, use_forces=use_forces, use_virials=use_virials)


def label_from_row(row: AtomsRow) -> Label:
    """The :class:`Label` a row stores."""
    def array(name):
        return None if row.get(name) is None else np.array(row.get(name))

    return Label(
        LabelStatus(row.status),
        energy=row.get("energy"),
        forces=array("forces"),
        stress=array("stress"),
        reason=row.data.get("label_reason", ""),
        info=dict(row.data.get("label_info", {})),
    )


def atoms_from_row(row: AtomsRow) -> Atoms:
    """The row's structure; OK labels on a SinglePointCalculator, provenance in ``atoms.info``."""
    atoms = row.toatoms()
    info = {key: row.get(key) for key in row.key_value_pairs}
    info["settings_hash"] = info["settings_hash"].removeprefix(HASH_PREFIX)  # as Reference.settings_hash() gives it
    info.update({key: row.data[key] for key in ("label_reason", "selection_reason") if key in row.data})
    info.update(row.data.get("details", {}))
    info["row_id"] = row.id
    atoms.info.update(info)
    return atoms


def config_type(origin: str) -> str:
    """gap_fit's config_type of a row: its origin without the task, "explore:3" -> "explore"."""
    return origin.split(":", 1)[0]


def write_training_xyz(labelled: Sequence[Atoms], path: str | os.PathLike, *, use_forces: bool = True, use_virials: bool = True) -> Path:
    """An extxyz file for gap_fit: labels under the keys ``alcgap.fit.main`` fits with
    (``ref_energy``, ``ref_forces``, ``ref_virial``), plus ``config_type``, ``iteration``,
    ``origin`` and ``row_id`` where the structures carry them."""
    if not labelled:
        raise EmptyTrainingSet(f"no labelled structures to write to {path}")
    frames = training_frames(labelled, use_forces=use_forces, use_virials=use_virials)
    for frame, atoms in zip(frames, labelled):
        if "origin" in atoms.info:
            frame.info["config_type"] = config_type(atoms.info["origin"])
        frame.info.update({key: atoms.info[key] for key in ("iteration", "origin", "row_id") if key in atoms.info})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")
    return path


__all__ = [
    "FINGERPRINT_TOLERANCE",
    "LabelStore",
    "Provenance",
    "RETRIED_BY_DEFAULT",
    "StoreSummary",
    "StoredLabel",
    "atoms_from_row",
    "config_type",
    "fingerprint",
    "label_from_row",
    "write_training_xyz",
]
