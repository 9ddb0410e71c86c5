"""Molecular dynamics: protocols as data and their drivers."""
