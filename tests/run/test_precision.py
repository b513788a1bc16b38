"""bf16 autocast trains to the same loss as fp32, within bf16 noise.

The same tiny run (model=tiny, 78 steps of 8 x 64 bytes, seed 0) is trained in fp32 on the CPU and with
bf16 autocast (on the CPU here; on CUDA too when a GPU is present). Tolerance: the final validation losses
agree within 0.02 nats (0.7% of a loss near 2.95). bf16 keeps 8 significant bits (relative rounding 2^-8,
0.4% per matmul), with fp32 master weights, optimizer state and loss, so after 78 steps the two
trajectories differ by far less than a change of data order does: two fp32 runs of this config with seeds
0 and 1 end 0.021 nats apart, while fp32 and bf16 at seed 0 end 0.0004 apart on the CPU. A broken mixed-
precision path (bf16 loss reduction, bf16 weights, lost gradient precision) shows up as a gap larger than
the seed spread.
"""

import math

import pytest
import torch

from helpers import TINY, read_result, run_cli, run_dirs

TOLERANCE = 0.02  # nats; see the module docstring


def final_losses(runs_dir, *overrides):
    run_cli("scaling-train", *TINY, f"runs_dir={runs_dir}", "train.seed=0", *overrides, check=True)
    (run_dir,) = run_dirs(runs_dir)
    result = read_result(run_dir)
    assert result["status"] == "completed"
    return result["val_loss"], result["train_loss"]


@pytest.fixture(scope="module")
def fp32_cpu(tmp_path_factory):
    return final_losses(tmp_path_factory.mktemp("fp32"), "train.device=cpu", "train.precision=fp32")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device")])])
def test_bf16_autocast_reaches_the_fp32_loss(tmp_path, fp32_cpu, device):
    val32, train32 = fp32_cpu
    val16, train16 = final_losses(tmp_path, f"train.device={device}", "train.precision=bf16")
    assert val32 < 0.6 * math.log(256), "the fp32 run did not learn"
    assert (val16, train16) != (val32, train32), "bf16 gave bit-identical losses: autocast was not applied"
    assert abs(val16 - val32) < TOLERANCE, f"bf16 {val16:.4f} vs fp32 {val32:.4f} nats"
    assert abs(train16 - train32) < TOLERANCE, f"bf16 {train16:.4f} vs fp32 {train32:.4f} nats"
