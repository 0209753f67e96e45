"""Resumable training state in safetensors + JSON (no pickles): module weights, Adam-style optimizer state,
the step counter and any extra JSON-able fields.

Layout of a checkpoint folder:
    state.safetensors   "<module>.<param>" weights and "optim.<i>.<key>" optimizer tensors
    state.json          {"step": int, "param_groups": [...], "extra": {...}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(
    folder: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the state atomically (to a temporary name, then rename), so a kill never leaves half a file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{name}.{k}": v.detach().contiguous().clone() for name, m in modules.items() for k, v in m.state_dict().items()
    }
    groups: list[dict[str, Any]] = []
    if optimizer is not None:
        sd = optimizer.state_dict()
        for i, st in sd["state"].items():
            for k, v in st.items():
                tensors[f"optim.{i}.{k}"] = torch.as_tensor(v).detach().clone().contiguous()
        groups = sd["param_groups"]
    save_file(tensors, str(folder / "state.safetensors.tmp"))
    os.replace(folder / "state.safetensors.tmp", folder / "state.safetensors")
    meta = {"step": step, "param_groups": groups, "extra": extra or {}}
    (folder / "state.json.tmp").write_text(json.dumps(meta))
    os.replace(folder / "state.json.tmp", folder / "state.json")


def load_checkpoint(
    folder: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
) -> tuple[int, dict[str, Any]] | None:
    """Restore modules and optimizer in place; returns (step, extra), or None when there is no checkpoint."""
    folder = Path(folder)
    if not (folder / "state.json").exists():
        return None
    meta = json.loads((folder / "state.json").read_text())
    tensors = load_file(str(folder / "state.safetensors"))
    for name, m in modules.items():
        prefix = f"{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            m.load_state_dict(sd)
        except RuntimeError as e:
            raise ValueError(
                f"checkpoint {folder} does not fit module '{name}' (another architecture?): "
                f"delete the folder or pick another output directory"
            ) from e
    if optimizer is not None and meta["param_groups"]:
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, i, key = k.split(".", 2)
                state.setdefault(int(i), {})[key] = v
        optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return meta["step"], meta["extra"]
