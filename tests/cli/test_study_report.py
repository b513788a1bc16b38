"""The study's held-out plot."""

import numpy as np
import pandas as pd

from analysis import fit_parametric
from scaling.study.report import plot_holdout


def test_the_held_out_plot_draws_a_band_the_point_estimate_lies_outside(tmp_path):
    """With few bootstrap resamples the point prediction can fall outside its percentile band; the study must
    still write its plot (an error bar around the point could not be drawn there)."""
    N, D = (a.ravel() for a in np.meshgrid(np.geomspace(1e4, 1e5, 4), np.geomspace(1e6, 1e7, 4)))
    runs = pd.DataFrame({"N": N, "D": D, "C": 6 * N * D, "loss": 1.2 + 40 / N ** 0.4 + 300 / D ** 0.3})
    par = fit_parametric(runs.N, runs.D, runs.loss)
    holdout = {"C": 4 * runs.C.max(), "predicted": 1.50, "predicted_low": 1.52, "predicted_high": 1.60, "measured": 1.51}
    out = plot_holdout(tmp_path / "holdout", runs, par, holdout)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
