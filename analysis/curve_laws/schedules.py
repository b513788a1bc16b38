"""Learning-rate schedules as arrays indexed by step, for the loss-curve laws.

Every builder returns a float array ``lrs`` of length ``steps + 1``: ``lrs[s]`` is the lr of step ``s``
(the step a curve logs its loss at), ``s = 0 .. steps``. The warmup convention is the one of the
Multi-Power Law data (Luo et al. 2025): ``linspace(0, peak, warmup)`` fills ``lrs[0 .. warmup-1]`` and
step ``warmup`` has the peak. After the warmup the decay is measured from step ``warmup`` (cosine,
linear) or from the cooldown start (WSD), so that these builders rebuild the published schedules
exactly:

    cosine(24000, 3e-4, final=0.1, warmup=2160)            # cosine_24000
    wsd(24000, 3e-4, cooldown=4000, shape="geometric", final=0.1, warmup=2160)   # wsd_20000_24000
    wsd(24000, 3e-4, cooldown=4000, shape="linear", final=0.1, warmup=2160)      # wsdld_20000_24000
    step_drops(16000, 3e-4, drops=[(8000, 0.3)], warmup=2160)                    # wsdcon_9

``final`` and the drop levels are fractions of ``peak``. ``schedule_from_config`` rebuilds the lr of a
run of this harness from its config (``optim.*``, ``train.tokens``, ``train.batch_size``,
``model.context``), with the harness's own formula (its ramp reaches the peak at step ``warmup``, one step
counted differently from the builders above). ``parse_schedule`` reads specs such as
``cosine:steps=72000,final=0.1``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np

from analysis.errors import AnalysisInputError

SHAPES = ("linear", "sqrt", "geometric", "cosine")  # WSD cooldown shapes
KINDS = ("constant", "cosine", "linear", "wsd", "step")


def _steps(steps: Any) -> int:
    try:
        n = int(steps)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"steps: {steps!r}; must be a whole number of steps > 0") from None
    if n != float(steps) or n <= 0:
        raise AnalysisInputError(f"steps: {steps!r}; must be a whole number of steps > 0")
    return n


def _peak(peak: Any) -> float:
    try:
        p = float(peak)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"peak: {peak!r}; must be a positive learning rate") from None
    if not (math.isfinite(p) and p > 0):
        raise AnalysisInputError(f"peak: {peak!r}; must be a positive learning rate")
    return p


def _fraction(name: str, value: Any, low: float = 0.0, high: float = 1.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"{name}: {value!r}; must be a number in [{low:g}, {high:g}]") from None
    if not (math.isfinite(v) and low <= v <= high):
        raise AnalysisInputError(f"{name}: {value!r}; must be a number in [{low:g}, {high:g}]")
    return v


def _warmup(warmup: Any, steps: int) -> int:
    """Warmup steps: a whole number, or a fraction of ``steps`` when below 1."""
    try:
        w = float(warmup)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"warmup: {warmup!r}; must be steps >= 0 or a fraction < 1") from None
    if not math.isfinite(w) or w < 0:
        raise AnalysisInputError(f"warmup: {warmup!r}; must be steps >= 0 or a fraction < 1")
    n = int(round(w * steps)) if 0 < w < 1 else int(round(w))
    if n >= steps:
        raise AnalysisInputError(f"warmup: {warmup!r} is {n} steps, not below the schedule's {steps} steps")
    return n


def _with_warmup(steps: int, peak: float, warmup: Any, body: Callable[[np.ndarray, int], np.ndarray]) -> np.ndarray:
    w = _warmup(warmup, steps)
    s = np.arange(steps + 1, dtype=float)
    lrs = peak * body(s, w)
    if w:
        lrs[:w] = np.linspace(0.0, peak, w)
    return lrs


def constant(steps: int, peak: float, *, warmup: Any = 0) -> np.ndarray:
    """Constant ``peak`` after the warmup."""
    steps, peak = _steps(steps), _peak(peak)
    return _with_warmup(steps, peak, warmup, lambda s, w: np.ones_like(s))


def cosine(steps: int, peak: float, *, final: float = 0.1, warmup: Any = 0) -> np.ndarray:
    """Half-cosine from ``peak`` at the end of warmup to ``final * peak`` at ``steps``."""
    steps, peak, final = _steps(steps), _peak(peak), _fraction("final", final)

    def body(s: np.ndarray, w: int) -> np.ndarray:
        p = np.clip((s - w) / max(1, steps - w), 0.0, 1.0)
        return final + (1.0 - final) * 0.5 * (1.0 + np.cos(np.pi * p))
    return _with_warmup(steps, peak, warmup, body)


def linear(steps: int, peak: float, *, final: float = 0.1, warmup: Any = 0) -> np.ndarray:
    """Linear decay from ``peak`` at the end of warmup to ``final * peak`` at ``steps``."""
    steps, peak, final = _steps(steps), _peak(peak), _fraction("final", final)

    def body(s: np.ndarray, w: int) -> np.ndarray:
        p = np.clip((s - w) / max(1, steps - w), 0.0, 1.0)
        return 1.0 - (1.0 - final) * p
    return _with_warmup(steps, peak, warmup, body)


def _cooldown_steps(cooldown: Any, steps: int) -> int:
    try:
        c = float(cooldown)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"cooldown: {cooldown!r}; must be a fraction in (0, 1) or steps >= 1") from None
    if not math.isfinite(c) or c <= 0:
        raise AnalysisInputError(f"cooldown: {cooldown!r}; must be a fraction in (0, 1) or steps >= 1")
    n = max(1, int(round(c * steps))) if c < 1 else int(round(c))
    if n > steps:
        raise AnalysisInputError(f"cooldown: {cooldown!r} is {n} steps, more than the schedule's {steps}")
    return n


def cooldown_shape(shape: str, progress: np.ndarray, final: float) -> np.ndarray:
    """Multiplier of the peak along a cooldown at ``progress`` in [0, 1] (0: peak, 1: ``final``)."""
    p = np.clip(progress, 0.0, 1.0)
    if shape == "linear":
        return 1.0 - (1.0 - final) * p
    if shape == "sqrt":  # the harness's "1 - sqrt" cooldown
        return 1.0 - (1.0 - final) * np.sqrt(p)
    if shape == "cosine":
        return final + (1.0 - final) * 0.5 * (1.0 + np.cos(np.pi * p))
    if shape == "geometric":
        if final <= 0:
            raise AnalysisInputError("final: 0 with shape 'geometric'; a geometric cooldown needs final > 0")
        return final ** p
    raise AnalysisInputError(f"shape: {shape!r} is not one of {', '.join(map(repr, SHAPES))}")


def wsd(steps: int, peak: float, *, cooldown: Any = 0.2, shape: str = "linear", final: float = 0.1,
        warmup: Any = 0) -> np.ndarray:
    """Warmup-stable-decay: ``peak`` until ``steps - cooldown``, then a cooldown of ``shape`` to ``final * peak``.

    cooldown: a fraction of ``steps`` (below 1) or a number of steps. shape: ``linear``, ``sqrt``
    (1 - sqrt, as the harness), ``geometric`` (exponential, as the Multi-Power Law's ``wsd``) or ``cosine``.
    """
    steps, peak, final = _steps(steps), _peak(peak), _fraction("final", final)
    cool = _cooldown_steps(cooldown, steps)
    if shape not in SHAPES:
        raise AnalysisInputError(f"shape: {shape!r} is not one of {', '.join(map(repr, SHAPES))}")
    start = steps - cool

    def body(s: np.ndarray, w: int) -> np.ndarray:
        if start < w:
            raise AnalysisInputError(f"cooldown: {cool} steps start at step {start}, inside the {w}-step warmup")
        return np.where(s < start, 1.0, cooldown_shape(shape, (s - start) / cool, final))
    return _with_warmup(steps, peak, warmup, body)


def step_drops(steps: int, peak: float, *, drops: Any = ((0.5, 0.1),), warmup: Any = 0) -> np.ndarray:
    """Piecewise constant: ``peak``, then from each drop's step on the drop's fraction of ``peak``.

    drops: pairs (step, fraction); a step below 1 is a fraction of ``steps``. ``[(8000, 0.3)]`` with
    ``steps=16000`` is the Multi-Power Law's ``wsdcon_9`` (3e-4 to 9e-5 at step 8000).
    """
    steps, peak = _steps(steps), _peak(peak)
    pairs = []
    try:
        for at, level in drops:
            at = float(at)
            pairs.append((int(round(at * steps)) if 0 < at < 1 else int(round(at)), float(level)))
    except (TypeError, ValueError):
        raise AnalysisInputError(f"drops: {drops!r}; must be pairs (step, fraction of peak)") from None
    for at, level in pairs:
        if not 0 < at <= steps:
            raise AnalysisInputError(f"drops: step {at} is outside 1..{steps}")
        _fraction("drops: level", level, 0.0, 1.0)

    def body(s: np.ndarray, w: int) -> np.ndarray:
        out = np.ones_like(s)
        for at, level in sorted(pairs):
            if at < w:
                raise AnalysisInputError(f"drops: step {at} is inside the {w}-step warmup")
            out[s >= at] = level
        return out
    return _with_warmup(steps, peak, warmup, body)


BUILDERS: dict[str, Callable[..., np.ndarray]] = {
    "constant": constant, "cosine": cosine, "linear": linear, "wsd": wsd, "step": step_drops,
}


def build(kind: str, **kwargs: Any) -> np.ndarray:
    """The schedule ``kind`` (constant, cosine, linear, wsd, step) with the builder's keyword arguments."""
    if kind not in BUILDERS:
        raise AnalysisInputError(f"schedule: {kind!r} is not one of {', '.join(map(repr, KINDS))}")
    try:
        return BUILDERS[kind](**kwargs)
    except TypeError as err:
        raise AnalysisInputError(f"schedule {kind}: {err}") from None


# ----------------------------------------------------------------------------- specs


_SPEC_KEYS = {"steps": "steps", "peak": "peak", "lr": "peak", "final": "final", "warmup": "warmup",
              "cooldown": "cooldown", "shape": "shape", "at": "at", "to": "to"}


def parse_schedule(spec: str, defaults: Mapping[str, Any] | None = None) -> tuple[str, np.ndarray]:
    """A schedule from a spec ``KIND:key=value,...``; returns (a label, the lr array).

    Keys: ``steps`` (needed), ``peak`` (or ``lr``), ``final`` (fraction of peak), ``warmup`` (steps or a
    fraction), ``cooldown`` (wsd: fraction or steps), ``shape`` (wsd: linear, sqrt, geometric, cosine),
    ``at`` and ``to`` (step: drop steps and levels, several separated by ``/``). ``defaults`` fills
    ``peak`` and ``warmup`` when the spec leaves them out (the fit passes its runs' peak and warmup).

        parse_schedule("cosine:steps=72000,final=0.1", {"peak": 3e-4, "warmup": 2160})
        parse_schedule("wsd:steps=24000,cooldown=4000,shape=geometric")
        parse_schedule("step:steps=16000,at=8000,to=0.3")
    """
    if not isinstance(spec, str) or not spec.strip():
        raise AnalysisInputError(f"schedule: {spec!r}; expected KIND:key=value,... e.g. cosine:steps=72000,final=0.1")
    kind, _, rest = spec.strip().partition(":")
    kind = kind.strip().lower()
    if kind not in BUILDERS:
        raise AnalysisInputError(f"schedule {spec!r}: {kind!r} is not one of {', '.join(map(repr, KINDS))}")
    values: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or key not in _SPEC_KEYS:
            raise AnalysisInputError(f"schedule {spec!r}: {item!r} is not key=value with a key of "
                                     f"{', '.join(sorted(set(_SPEC_KEYS)))}")
        values[_SPEC_KEYS[key]] = value.strip()
    if "steps" not in values:
        raise AnalysisInputError(f"schedule {spec!r}: give steps=N (the schedule's length)")
    kwargs: dict[str, Any] = {}
    for key in ("peak", "warmup"):
        if key in values:
            kwargs[key] = _number(spec, key, values.pop(key))
        elif defaults and defaults.get(key) is not None:
            kwargs[key] = defaults[key]
    if "peak" not in kwargs:
        raise AnalysisInputError(f"schedule {spec!r}: give peak=LR (no fitted runs to take it from)")
    kwargs["steps"] = _number(spec, "steps", values.pop("steps"))
    if "final" in values:
        if kind in ("constant", "step"):
            raise AnalysisInputError(f"schedule {spec!r}: final= does not apply to {kind}")
        kwargs["final"] = _number(spec, "final", values.pop("final"))
    if kind == "wsd":
        if "cooldown" in values:
            kwargs["cooldown"] = _number(spec, "cooldown", values.pop("cooldown"))
        if "shape" in values:
            kwargs["shape"] = values.pop("shape")
    if kind == "step":
        at = [_number(spec, "at", v) for v in values.pop("at", "0.5").split("/")]
        to = [_number(spec, "to", v) for v in values.pop("to", "0.1").split("/")]
        if len(to) == 1:
            to = to * len(at)
        if len(at) != len(to):
            raise AnalysisInputError(f"schedule {spec!r}: at= and to= give {len(at)} and {len(to)} values")
        kwargs["drops"] = list(zip(at, to))
    if values:
        verb = "does" if len(values) == 1 else "do"
        raise AnalysisInputError(f"schedule {spec!r}: {', '.join(values)} {verb} not apply to {kind}")
    return spec.strip(), build(kind, **kwargs)


def _number(spec: str, key: str, text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        raise AnalysisInputError(f"schedule {spec!r}: {key}={text!r} is not a number") from None


# ----------------------------------------------------------------------------- the harness's runs


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def schedule_from_config(config: Mapping[str, Any], steps: int | None = None) -> np.ndarray:
    """The lr at every step of a run of this harness, from its resolved config (``config.yaml``).

    Mirrors the training loop: ``steps = max(1, round(train.tokens / (train.batch_size * model.context)))``
    (or ``steps`` when given, e.g. the record's ``steps``); 0-based optimizer step ``i`` uses
    ``optim.lr * multiplier(i)`` with a warmup ramp ``(i + 1) / warmup`` and then ``optim.schedule``
    (cosine, linear, constant, wsd with ``cooldown_fraction`` and ``cooldown_shape`` linear or sqrt) down
    to ``final_lr_fraction``. The curve logs step ``s`` after ``s`` optimizer steps, with the lr of step
    ``i = s - 1``; so the array is ``lrs[s] = optim.lr * multiplier(s - 1)`` and ``lrs[0] = 0``.
    """
    if not isinstance(config, Mapping):
        raise AnalysisInputError(f"config: expected a mapping (the run's config.yaml), got {type(config).__name__}")
    optim = _get(config, "optim")
    if not isinstance(optim, Mapping):
        raise AnalysisInputError("config: no optim section; schedule_from_config needs the run's resolved config")
    peak = _peak(optim.get("lr", 3e-3))
    kind = str(optim.get("schedule", "cosine"))
    if kind not in ("cosine", "linear", "constant", "wsd"):
        raise AnalysisInputError(f"optim.schedule: {kind!r} is not one of 'cosine', 'linear', 'constant', 'wsd'")
    if steps is None:
        tokens, batch, context = (_get(config, k) for k in ("train.tokens", "train.batch_size", "model.context"))
        if not all(isinstance(v, (int, float)) and v > 0 for v in (tokens, batch, context)):
            raise AnalysisInputError("config: train.tokens, train.batch_size and model.context are needed to count "
                                     "the steps (or pass steps=)")
        steps = max(1, round(tokens / (batch * context)))
    total = _steps(steps)
    if optim.get("warmup_steps") is not None:
        warm = min(int(optim["warmup_steps"]), total)
    else:
        warm = min(int(round(float(optim.get("warmup_fraction", 0.05)) * total)), total)
    final = _fraction("optim.final_lr_fraction", optim.get("final_lr_fraction", 0.1))
    i = np.arange(total, dtype=float)  # 0-based optimizer steps
    if kind == "constant":
        mult = np.ones(total)
    elif kind == "wsd":
        cool = max(1, int(round(float(optim.get("cooldown_fraction", 0.2)) * total)))
        start = total - cool
        shape = str(optim.get("cooldown_shape", "linear"))
        if shape not in ("linear", "sqrt"):
            raise AnalysisInputError(f"optim.cooldown_shape: {shape!r} is not one of 'linear', 'sqrt'")
        progress = (i - start + 1) / cool
        mult = np.where(i < start, 1.0, cooldown_shape(shape, progress, final))
    else:
        progress = np.clip((i - warm + 1) / max(1, total - warm), 0.0, 1.0)
        mult = 1.0 - (1.0 - final) * progress if kind == "linear" else \
            final + (1.0 - final) * 0.5 * (1.0 + np.cos(np.pi * progress))
    if warm:
        mult = np.where(i < warm, (i + 1) / warm, mult)
    return np.concatenate([[0.0], peak * mult])


def warmup_argument(lrs: np.ndarray) -> int:
    """The ``warmup=`` of the builders above that rebuilds this schedule's ramp: a ramp from lr 0 reaches the
    peak at step ``warmup - 1`` (``linspace(0, peak, warmup)``), so one more than ``warmup_of``."""
    w = warmup_of(lrs)
    return w + 1 if w and float(np.asarray(lrs, dtype=float)[0]) == 0.0 else w


def warmup_of(lrs: np.ndarray) -> int:
    """Warmup length of a schedule: the first step at the peak of its initial rise (0 when it starts flat)."""
    lrs = np.asarray(lrs, dtype=float)
    if lrs.size < 2:
        return 0
    falls = np.flatnonzero(np.diff(lrs) < 0)
    end = int(falls[0]) + 1 if falls.size else lrs.size
    head = lrs[:end]
    w = int(np.argmax(head >= head.max() * (1 - 1e-12)))
    return w if w > 1 or lrs[0] < lrs[w] else 0
