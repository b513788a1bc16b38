"""The checkpointed state of a run as one object (in the manner of lingua's ``TrainState``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class TrainState:
    """Model, optimizer, step, wall time, RNG states and the W&B id: all that resume needs.

    ``state_dict()`` is what a checkpoint holds (plain tensors and numbers, loadable with
    ``weights_only=True``); ``load_state_dict`` restores it in place.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    step: int = 0
    wall_time: float = 0.0
    wandb_id: str = ""

    def state_dict(self) -> dict[str, Any]:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "wall_time": self.wall_time, "rng_cpu": torch.get_rng_state(), "wandb_id": self.wandb_id or ""}
        if self.device.type == "cuda":
            state["rng_cuda"] = torch.cuda.get_rng_state(self.device)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.step = int(state["step"])
        self.wall_time = float(state["wall_time"])
        self.wandb_id = state.get("wandb_id") or ""
