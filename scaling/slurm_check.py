"""Compatibility alias of ``scaling.sweep.launch_check`` for one release (launcher presets name it)."""

from scaling.sweep.launch_check import LaunchCheck  # noqa: F401
