"""User-facing errors of the training side: one line naming the field, the value and what is allowed."""

import sys
from typing import Optional


class ConfigError(ValueError):
    """A bad configuration value, caught before any work starts.

    Entry points print ``error: <message>`` to stderr and exit with status 2, without a traceback.
    """


class DataError(ValueError):
    """Missing, empty or corrupt data, or data that cannot serve the configured model."""


def user_error_message(exc: BaseException) -> Optional[str]:
    """One line for an error caused by the user's input, or None for a bug."""
    from omegaconf.errors import OmegaConfBaseException

    seen = exc
    while seen is not None:  # a resolver's ConfigError arrives wrapped in OmegaConf's errors
        if isinstance(seen, (ConfigError, DataError)):
            return str(seen)
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, OmegaConfBaseException) or _is_hydra_error(exc):
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.strip().startswith("full_key")]
        cause = exc.__cause__
        if cause is not None and str(cause).strip():
            first = str(cause).strip().splitlines()[0]
            if first not in lines:
                lines.append(first)
        return "; ".join(lines) or type(exc).__name__
    return None


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
