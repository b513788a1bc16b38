"""What every plot of the analysis shares: figures without pyplot state, the colour map by model size N,
the markers of WSD roles, legends and colour bars, atomic saving in each format asked for (PNG by default),
and input checks."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis import columns as col
from analysis.errors import AnalysisInputError
from analysis.files import atomic_write
from analysis.result import FitResult

FORMATS = ("png",)  # the default: one format; SVG (or PDF) on request (formats=..., scaling-fit --svg)
ALLOWED_FORMATS = ("png", "svg", "pdf")

CMAP = "viridis"

MARKERS = {col.RUN: "o", col.BRANCH_ROLE: "^", col.TRUNK: "s"}  # marker of each role of a run

LABELS = {col.RUN: "run", col.BRANCH_ROLE: "WSD branch (cooldown)", col.TRUNK: "WSD trunk (no cooldown)"}


def figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(7, 4.8), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def cmap():
    from matplotlib import colormaps

    return colormaps[CMAP]


def size_norm(N: pd.Series) -> LogNorm:
    """Log colour scale over the sizes N of the points."""
    return LogNorm(float(N.min()), float(N.max()) * 1.0001)


def roles_of(df: pd.DataFrame) -> pd.Series:
    """The ``role`` of each row (``run`` where there is none)."""
    if col.ROLE not in df.columns:
        return pd.Series(col.RUN, index=df.index)
    return df[col.ROLE].where(df[col.ROLE].isin(list(MARKERS)), col.RUN)


def scatter_roles(ax: Any, df: pd.DataFrame, x: str, y: str, norm: LogNorm, **kw: Any) -> list[Line2D]:
    """``df``'s points coloured by N, one marker per role; the legend entries of the roles when mixed."""
    roles = roles_of(df)
    for role in MARKERS:
        sel = (roles == role).to_numpy()
        if sel.any():
            sub = df[sel]
            ax.scatter(sub[x], sub[y], c=sub["N"], cmap=CMAP, norm=norm, marker=MARKERS[role], gid=f"{role}-points", **kw)
    return role_proxies(roles)


def role_proxies(roles: pd.Series) -> list[Line2D]:
    present = [r for r in MARKERS if (roles == r).any()]
    if present == [col.RUN]:
        return []
    return [Line2D([], [], ls="", marker=MARKERS[r], color="gray", label=LABELS[r]) for r in present]


def legend(ax: Any, extra: list[Line2D]) -> None:
    handles, _ = ax.get_legend_handles_labels()
    if handles or extra:
        ax.legend(handles=handles + extra, fontsize=8)


def colorbar(fig: Figure, ax: Any, norm: LogNorm, label: str) -> None:
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=CMAP), ax=ax, label=label)


def save(fig: Figure, path: str | Path, formats: Iterable[str]) -> list[Path]:
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix.lstrip(".") in ALLOWED_FORMATS else stem
    written = []
    for fmt in formats:
        if fmt not in ALLOWED_FORMATS:
            raise AnalysisInputError(f"formats: {fmt!r} is not one of 'png', 'svg', 'pdf'")
        target = stem.parent / f"{stem.name}.{fmt}"
        written.append(atomic_write(target, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=130)))
    return written


def need(res: FitResult, approach: str, fn: str) -> None:
    if res.approach != approach:
        raise AnalysisInputError(f"res: {fn} needs a fit of approach '{approach}', got '{res.approach}'")


def require_columns(df: pd.DataFrame, names: tuple[str, ...], what: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise AnalysisInputError(f"{what}: missing column(s) {', '.join(missing)}; load it with load_runs")


def fmt(res: FitResult, name: str) -> str:
    s = f"{res.estimates[name]:.3f}"
    if name in res.interval:
        lo, hi = res.interval[name]
        s += f" ({lo:.3f}, {hi:.3f})"
    return s
