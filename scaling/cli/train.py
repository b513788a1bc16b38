"""``scaling-train``: one training run (or a Hydra multirun of them) as a Hydra app over ``conf/``.

The entry point only wires: Hydra composes the config, ``task`` records a sweep's skipped run or hands
the config to ``scaling.run.training.run_training``, with the estimate of the final loss while it trains
(``scaling.study.forecast``, ``train.forecast_every``) as an extra hook. A single run from the shell
reports a user error as one line and exit status 2; a sweep's run records it as ``failed``. Before Hydra
writes the run folder, a single run that already ended prints its record (and writes nothing, so a
read-only folder still answers), and the others have their data checked and their folder shown writable.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Iterator

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict, read_write

from scaling.cli.overrides import check_before_run, integral_overrides, run_flags_first
from scaling.config import CONF_DIR
from scaling.errors import USER_ERRORS, config_error_in, report_user_error
from scaling.io import writable_dir
from scaling.sweep.registry import configure_runtime
from scaling.sweep.resolvers import skipped_result


@contextlib.contextmanager
def user_errors_exit() -> Iterator[None]:
    """Print a user error as one line and exit 2, without a traceback."""
    try:
        yield
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def task(cfg: DictConfig) -> dict[str, Any]:
    """Hydra task function: one run in Hydra's output directory (the run's own directory)."""
    from scaling.run.training import run_training  # torch: not imported for a command line refused before
    from scaling.study.forecast import forecast_hooks

    configure_runtime()  # a submitit job process unpickles this function and never runs main()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    skipped = skipped_result(cfg, run_dir)
    if skipped is not None:
        return skipped
    hooks = forecast_hooks(cfg)
    if HydraConfig.get().mode.name == "MULTIRUN":
        return run_training(cfg, run_dir, extra_hooks=hooks)
    with user_errors_exit():
        return run_training(cfg, run_dir, record_user_errors=False, extra_hooks=hooks)


def main() -> None:
    """Hydra's app, after the command line is checked: scientific-notation counts made integers, and the
    config composed and validated before Hydra makes the run folder (one line and exit 2 when it fails); a
    single run that already ended is answered from its record without Hydra."""
    configure_runtime()
    try:
        sys.argv[1:] = integral_overrides(run_flags_first(sys.argv[1:]))
        single = check_before_run(sys.argv[1:])
        if single is not None and answered_before_run(single):
            return
    except Exception as exc:  # noqa: BLE001 - user errors become one line; anything else is a bug
        if not report_user_error(exc):
            raise
        sys.exit(2)
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(task)()


def answered_before_run(cfg: DictConfig) -> bool:
    """True, after printing it, for a single run whose record says it already ended (nothing is written);
    else False once its data can serve it and its run folder (under ``runs_dir``) is writable."""
    from scaling.run.record import RunRecord

    run_dir = Path(cfg.hydra.run.dir)
    finished = RunRecord(run_dir).finished()
    if finished is not None:
        loss = finished.get("val_loss")
        shown = f"{loss:.4f}" if isinstance(loss, (int, float)) else loss
        print(f"run {finished['run_id']} already {finished['status']}; nothing to train "
              f"(val_loss {shown}, {run_dir / 'result.json'})")
        return True
    try:
        from scaling.run.training import check_training_data

        check_training_data(_without_hydra(cfg))
    except Exception as exc:  # noqa: BLE001 - only a user error counts here: the run checks again
        found = config_error_in(exc)
        if found is not None:
            raise found from None
    writable_dir(run_dir, f"runs_dir={cfg.runs_dir!r}")
    return False


def _without_hydra(cfg: DictConfig) -> DictConfig:
    """The job's config as the task receives it: a copy without Hydra's own node."""
    job = cfg.copy()
    with read_write(job), open_dict(job):
        del job["hydra"]
    return job


if __name__ == "__main__":
    main()
