"""Exploration science: the one distance table, selection of flagged environments, carving."""
