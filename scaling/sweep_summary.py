"""Compatibility alias of ``scaling.sweep.summary`` for one release (sweep files name its callback)."""

from scaling.sweep.summary import SweepSummary  # noqa: F401
