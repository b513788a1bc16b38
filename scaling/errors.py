"""User-facing errors of the training side: one line naming the field, the value and what is allowed."""

import sys
from typing import Optional


class ConfigError(ValueError):
    """A bad configuration value, caught before any work starts.

    Entry points print ``error: <message>`` to stderr and exit with status 2, without a traceback.
    """


class DataError(ValueError):
    """Missing, empty or corrupt data, or data that cannot serve the configured model."""


USER_ERRORS = (ConfigError, DataError)  # what a console script reports as one line, not a traceback


def config_error_in(exc: BaseException) -> Optional[BaseException]:
    """The ConfigError or DataError that caused ``exc`` (itself, or one in its chain), else None."""
    seen: Optional[BaseException] = exc
    while seen is not None:  # a resolver's ConfigError arrives wrapped in OmegaConf's errors
        if isinstance(seen, USER_ERRORS):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def user_error_message(exc: BaseException) -> Optional[str]:
    """One line for an error caused by the user's input, or None for a bug."""
    from omegaconf.errors import OmegaConfBaseException

    found = config_error_in(exc)
    if found is not None:
        return str(found)
    if isinstance(exc, OmegaConfBaseException) or _is_hydra_error(exc):
        short = _hydra_message(exc)
        if short is not None:
            return short
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("full_key")]
        cause = exc.__cause__
        if cause is not None and str(cause).strip():
            first = str(cause).strip().splitlines()[0]
            if first not in lines:
                lines.append(first)
        return "; ".join(lines) or type(exc).__name__


def _hydra_message(exc: BaseException) -> Optional[str]:
    """The short form of Hydra's and OmegaConf's usual errors (an unknown choice, key or value, an override
    that does not parse), with the closest valid choice or key; None for any other."""
    missing, options = getattr(exc, "missing_cfg_file", None), getattr(exc, "options", None)
    if missing and options is not None and "/" in missing:
        group, _, name = missing.rpartition("/")
        choices = [o for o in options if not o.endswith("_schema")]
        return f"{group}={name!r} is unknown{did_you_mean(name, choices) or ''}; choose one of {', '.join(choices)}"
    if hasattr(exc, "override") and hasattr(exc, "message"):  # hydra.errors.OverrideParseException
        why = str(exc.message).strip().splitlines()[0]
        return (f"override {exc.override!r} cannot be parsed ({why}): write key=value, a list as [a,b], "
                "and quote a value holding commas or brackets")
    cause = exc.__cause__ if getattr(exc.__cause__, "full_key", None) else exc
    full_key = getattr(cause, "full_key", None)
    if not full_key:
        return None
    detail = str(getattr(cause, "msg", "") or cause).strip().splitlines()[0]
    parent = getattr(cause, "parent_node", None)
    if type(cause).__name__ in ("ConfigAttributeError", "ConfigKeyError") and " not in " in detail \
            and hasattr(parent, "keys"):
        section = full_key.rpartition(".")[0]
        keys = [f"{section}.{k}" if section else str(k) for k in parent.keys()]
        close = did_you_mean(full_key, keys)
        return f"{full_key} is not a config key{close or ': the keys there are ' + ', '.join(keys)}"
    if type(cause).__name__ == "ValidationError":
        return f"{full_key}={getattr(cause, 'value', None)!r} is invalid: {detail}"
    return None


def did_you_mean(word: str, choices: list[str]) -> str:
    """' (did you mean X?)' for the valid choice closest to ``word``, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f": did you mean {close[0]}?" if close else ""


def report_user_error(exc: BaseException) -> bool:
    """Print ``error: <one line>`` to stderr for an error caused by the user's input; False (nothing printed)
    for a bug, which the caller re-raises."""
    msg = user_error_message(exc)
    if msg is None:
        return False
    print(f"error: {msg}", file=sys.stderr)
    return True


def _is_hydra_error(exc: BaseException) -> bool:
    """An error of Hydra's own (``hydra.errors.HydraException``), told by its class: the base layer does not
    import Hydra."""
    return any(c.__name__ == "HydraException" and c.__module__.startswith("hydra.") for c in type(exc).__mro__)
