"""The Multi-Power Law paper's data set (``shared/data/multipower``): schedules, split, published numbers.

    from analysis.curve_laws.published import read_size, PARAMS, TRAIN, TEST
    curves, schedules = read_size(root, 400)               # the 9 curves of 400M and their lr arrays
    mpl = curve_law("multipower", **PARAMS[400])

Folder layout: ``csv_25``, ``csv_100``, ``csv_400``, each with one CSV per schedule (step, lr, loss).
The schedules are rebuilt at every step as the repository's code does (``SCHEDULES`` below); where a
curve's last logged step is 24,000 that point is dropped, as the repository does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.curve_laws import schedules as sch

SIZES = (25, 100, 400)  # millions of parameters
PEAK, WARMUP = 3e-4, 2160
TRAIN = ("cosine_24000", "constant_24000", "wsdcon_9")
TEST = ("constant_72000", "cosine_72000", "wsd_20000_24000", "wsdld_20000_24000", "wsdcon_3", "wsdcon_18")

SCHEDULES: dict[str, Callable[[], np.ndarray]] = {
    "constant_24000": lambda: sch.constant(24000, PEAK, warmup=WARMUP),
    "constant_72000": lambda: sch.constant(72000, PEAK, warmup=WARMUP),
    "cosine_24000": lambda: sch.cosine(24000, PEAK, final=0.1, warmup=WARMUP),
    "cosine_72000": lambda: sch.cosine(72000, PEAK, final=0.1, warmup=WARMUP),
    "wsd_20000_24000": lambda: sch.wsd(24000, PEAK, cooldown=4000, shape="geometric", final=0.1, warmup=WARMUP),
    "wsdld_20000_24000": lambda: sch.wsd(24000, PEAK, cooldown=4000, shape="linear", final=0.1, warmup=WARMUP),
    "wsdcon_3": lambda: sch.step_drops(16000, PEAK, drops=[(8000, 0.1)], warmup=WARMUP),
    "wsdcon_9": lambda: sch.step_drops(16000, PEAK, drops=[(8000, 0.3)], warmup=WARMUP),
    "wsdcon_18": lambda: sch.step_drops(16000, PEAK, drops=[(8000, 0.6)], warmup=WARMUP),
}

# src/config.py of the repository, order L0, A, alpha, B, C, beta, gamma
PARAMS: dict[int, dict[str, float]] = {
    25: dict(L0=3.04045406, A=0.52468604, alpha=0.50786857, B=363.78751622, C=2.06560812, beta=0.58279013,
             gamma=0.64142257),
    100: dict(L0=2.6514477, A=0.60115152, alpha=0.45295811, B=437.9464276, C=2.13245612, beta=0.59785199,
              gamma=0.65523644),
    400: dict(L0=2.37474466, A=0.65421216, alpha=0.42878731, B=523.42464371, C=2.02462735, beta=0.59350493,
              gamma=0.63472457),
}

# README of the repository: means over the six test curves, as printed
METRICS: dict[int, dict[str, str]] = {
    25: dict(R2="0.9988", MAE="0.00376", RMSE="0.00465", PredE="0.00110", WorstE="0.00409"),
    100: dict(R2="0.9983", MAE="0.00435", RMSE="0.00592", PredE="0.00142", WorstE="0.00583"),
    400: dict(R2="0.9978", MAE="0.00484", RMSE="0.00730", PredE="0.00168", WorstE="0.00995"),
}


def read_size(root: str | Path, size: int, names: tuple[str, ...] | None = None) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """(long frame run_id, step, lr, loss; run id -> lr array) of the curves of one size."""
    folder = Path(root) / f"csv_{size}"
    if not folder.is_dir():
        raise AnalysisInputError(f"source: {str(folder)!r} is not a folder of the Multi-Power Law curves")
    frames, schedules = [], {}
    for name in names or tuple(SCHEDULES):
        frame = pd.read_csv(folder / f"{name}.csv")
        if frame["step"].iloc[-1] == 24000:
            frame = frame.iloc[:-1]
        frames.append(frame.assign(run_id=name))
        schedules[name] = SCHEDULES[name]()
    return pd.concat(frames, ignore_index=True), schedules
