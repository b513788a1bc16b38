"""Learning rate from a fitted rule file, for sweeps: ``optim.lr: ${lr_from_rule:fit/lr_rule.json}``.

The file is the whole contract with the analysis side (``scaling-fit RUNS --lr-rule PATH`` or
``analysis.lr_rules.write_rule`` writes it; neither package imports the other)::

    {"form": "power", "hparam": "lr", "x": "params" | "compute", "convention": "non_embedding",
     "coef": c, "exponent": k, "fitted_from": "runs/lr_sweep", ...}

lr = coef * x^exponent, where x is the run's N under ``convention`` (non_embedding, with_head, total) for
``params``, or its training FLOPs C = FLOPs per token under ``convention`` x ``train.tokens`` for
``compute``. A relative path is taken from the current directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from scaling.errors import ConfigError
from scaling.conventions import CONVENTIONS, PARAM_CONVENTIONS
from scaling.io import read_json_object
from scaling.sweep.resolvers import flops_per_token_of, param_counts_of

X_CONVENTIONS = {"params": PARAM_CONVENTIONS, "compute": CONVENTIONS}
MAX_RULE_LR = 1.0  # an Adam lr of 1 or more trains no transformer: a rule giving one is extrapolated too far


def read_rule(path: str | Path, field: str = "optim.lr") -> dict[str, Any]:
    """The rule in ``path``, checked; ``field`` (the setting that uses it) names the error."""
    path = Path(str(path)).expanduser()
    where = f"{field}: lr rule file {str(path)!r}"
    if not path.is_file():
        raise ConfigError(f"{where} does not exist: write one with `scaling-fit RUNS --lr-rule {path}`")
    rule = read_json_object(path)
    if rule is None:
        raise ConfigError(f"{where} is not a JSON object: write it with `scaling-fit RUNS --lr-rule {path}`")
    checks = [("form", rule.get("form") == "power", "'power'"),
              ("hparam", rule.get("hparam", "lr") == "lr", "'lr'"),
              ("x", rule.get("x") in X_CONVENTIONS, "'params' or 'compute'")]
    for key, ok, allowed in checks:
        if not ok:
            raise ConfigError(f"{where}: {key}={rule.get(key)!r} is invalid: it must be {allowed}")
    allowed = X_CONVENTIONS[rule["x"]]
    if rule.get("convention") not in allowed:
        raise ConfigError(f"{where}: convention={rule.get('convention')!r} is invalid for x={rule['x']!r}: "
                          f"choose one of {', '.join(allowed)}")
    for key, positive in (("coef", True), ("exponent", False)):
        value = rule.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or (positive and value <= 0):
            raise ConfigError(f"{where}: {key}={value!r} is invalid: it must be a finite "
                              f"{'positive ' if positive else ''}number")
    return rule


def rule_value(rule: dict[str, Any], root: Any) -> float:
    """coef * x^exponent at the run's N (``params``) or C (``compute``)."""
    if rule["x"] == "params":
        x = float(param_counts_of(root)[rule["convention"]])
    else:
        x = flops_per_token_of(root)[rule["convention"]] * int(root.train.tokens)
    return float(rule["coef"]) * x ** float(rule["exponent"])


def lr_from_rule(path: Any = None, *, _root_: DictConfig, _node_: Any = None) -> float:
    """Resolver ``${lr_from_rule:PATH}``: the rule's learning rate for this run."""
    field = "optim.lr"
    try:
        field = _node_._get_full_key(None) or field
    except Exception:  # noqa: BLE001 - only the error message uses it
        pass
    if path is None or not str(path).strip():
        raise ConfigError(f"{field}='${{lr_from_rule:}}' names no rule file: write {field}='${{lr_from_rule:PATH}}' "
                          "with PATH a rule file of `scaling-fit RUNS --lr-rule PATH`")
    lr = rule_value(read_rule(path, field), _root_)
    if not lr < MAX_RULE_LR:
        raise ConfigError(f"{field}={lr:.3g} from the lr rule file {str(path)!r} is invalid: a rule's lr must be below "
                          f"{MAX_RULE_LR:g} (this run is far outside the sizes the rule was fitted on)")
    return lr


RESOLVERS = {"lr_from_rule": lr_from_rule}
