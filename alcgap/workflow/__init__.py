"""Workflows: the composite fit job and (later) the active-learning campaign."""
