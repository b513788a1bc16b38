"""Plots (analysis.plots): every function writes a non-empty PNG by default, and an SVG beside it on request."""

import numpy as np
import pytest
from test_envelope import synthetic_curves
from test_isoflop import isoflop_points

from analysis import fit_envelope, fit_isoflop, fit_kaplan_table, write_report
from analysis.errors import AnalysisInputError
from analysis.plots import plot_allocation, plot_contours, plot_isoflop, plot_loss_vs_compute, plot_residuals

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def fits():
    df = isoflop_points()
    return df, fit_isoflop(df.N, df.loss, df.C, bootstrap=10), fit_envelope(synthetic_curves(), bootstrap=5)


def check_written(paths, stem):
    assert [p.name for p in paths] == [f"{stem}.png"]  # PNG only, unless asked for more
    assert paths[0].read_bytes()[:8] == PNG_MAGIC and paths[0].stat().st_size > 5000
    assert not list(paths[0].parent.glob(f"{stem}.svg"))
    assert not list(paths[0].parent.glob(".*.tmp"))  # written atomically, no temporary left


def test_svg_on_request_beside_the_png(fits, tmp_path):
    _, iso, _ = fits
    paths = plot_isoflop(iso, tmp_path / "isoflop", formats=("png", "svg"))
    assert [p.name for p in paths] == ["isoflop.png", "isoflop.svg"]
    assert paths[0].read_bytes()[:8] == PNG_MAGIC and b"<svg" in paths[1].read_bytes()[:2000]


def test_report_plots_png_by_default_and_svg_when_asked(fits, tmp_path):
    df, iso, _ = fits
    default = write_report(tmp_path / "png", {"isoflop": iso}, runs=df)
    assert "isoflop.png" in default and not [p for p in default if p.endswith(".svg")]
    both = write_report(tmp_path / "both", {"isoflop": iso}, runs=df, formats=("png", "svg"))
    assert {"isoflop.png", "isoflop.svg"} <= set(both) and (tmp_path / "both" / "isoflop.svg").stat().st_size > 0
    assert "![isoflop](isoflop.png)" in (tmp_path / "both" / "report.md").read_text()


def test_isoflop_and_allocation_plots(fits, tmp_path):
    df, iso, env = fits
    check_written(plot_isoflop(iso, tmp_path / "isoflop.png"), "isoflop")
    check_written(plot_allocation({"isoflop": iso, "envelope": env}, tmp_path / "allocation"), "allocation")


def test_loss_against_compute_with_fitted_law_and_band(fits, tmp_path):
    df, _, _ = fits
    kaplan = fit_kaplan_table(df, xs=("C",), bootstrap=10)
    check_written(plot_loss_vs_compute(df, tmp_path / "loss_vs_compute", fit=kaplan), "loss_vs_compute")
    check_written(plot_residuals(df, kaplan.tables["fits"]["C"], tmp_path / "residuals"), "residuals")


def test_parametric_contours_and_residuals(fits, tmp_path):
    fit_parametric = pytest.importorskip("analysis.parametric").fit_parametric
    df, _, _ = fits
    par = fit_parametric(df.N, df.D, df.loss, grid={"alpha": [0.5], "beta": [0.5], "e": [0.5], "a": [5.0], "b": [5.0]})
    check_written(plot_contours(par, tmp_path / "contours", runs=df), "contours")
    check_written(plot_residuals(df, par, tmp_path / "residuals"), "residuals")
    check_written(plot_allocation({"parametric": par}, tmp_path / "alloc", C_range=(1e17, 1e20)), "alloc")


def test_wrong_fit_for_a_plot_is_a_clear_error(fits, tmp_path):
    _, iso, env = fits
    with pytest.raises(AnalysisInputError, match="plot_isoflop needs a fit of approach 'isoflop', got 'envelope'"):
        plot_isoflop(env, tmp_path / "x")
    with pytest.raises(AnalysisInputError, match="formats: 'jpg'"):
        plot_isoflop(iso, tmp_path / "x", formats=("jpg",))
    assert not np.any([p.suffix == ".png" for p in tmp_path.iterdir()])
