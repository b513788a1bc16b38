"""Compatibility alias of ``scaling.cli.train`` for one release: Submitit jobs queued by an earlier
version pickled their task function as ``scaling.train.task``, and requeued they import it from here."""

from scaling.cli.train import main, task, user_errors_exit  # noqa: F401
from scaling.run.training import run_training  # noqa: F401
from scaling.sweep.expand import compose_run_config  # noqa: F401
from scaling.sweep.registry import configure_runtime  # noqa: F401
