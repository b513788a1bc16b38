"""The model layer: torch-free shape facts and counts (``shape``, ``counts``), the GPT (``gpt``) and its
parametrisations (``parametrization``). Import ``scaling.model.gpt`` for the network itself; this
package's own import pulls in no torch, so counting and pricing stay light.
"""

from typing import Any


def __getattr__(name: str) -> Any:  # ``scaling.model.GPT``, loaded (with torch) only when asked for
    if name == "GPT":
        from scaling.model.gpt import GPT

        return GPT
    raise AttributeError(f"module 'scaling.model' has no attribute {name!r}")
