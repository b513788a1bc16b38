"""How quantities are printed: SI prefixes for counts and one format for durations (every console
script and report uses these)."""

from __future__ import annotations

import math
from typing import Any, Optional


def si(x: float) -> str:
    """3 significant digits with an SI prefix: 1.23M, 45.6k, 7.89G."""
    x = float(f"{x:.3g}")  # rounded first, so 999,936 is 1M (not 1e+03k)
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def duration(seconds: Any) -> str:
    """``45s``, ``12m05s``, ``3h07m``, ``2.1d``; ``-`` for None or a non-finite value."""
    try:
        s: Optional[float] = float(seconds)
    except (TypeError, ValueError):
        s = None
    if s is None or not math.isfinite(s):
        return "-"
    if s < 90:
        return f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 86400:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{s / 86400:.1f}d"
