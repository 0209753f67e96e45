"""Resumable training state in safetensors + JSON (no pickles): module weights, Adam-style optimizer state,
the step counter and any extra JSON-able fields.

Layout of a checkpoint folder:
    state.safetensors   "<module>.<param>" weights and "optim.<i>.<key>" optimizer tensors
    state.json          {"step": int, "param_groups": [...], "extra": {...}}

The two files always come from the same save: a save writes both into the sibling `.<name>.new`, then swaps
folders (the old one moves to `.<name>.old`, the new one moves in, the old one is deleted). A kill mid-swap is
completed by the next save or load. The folder belongs to the checkpoint: other files in it go at the next save.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def _siblings(folder: Path) -> tuple[Path, Path]:
    """(new, old): where a save stages the next state and parks the previous one, beside `folder`."""
    folder = folder.absolute()  # Path(".") has no name of its own
    return folder.with_name(f".{folder.name}.new"), folder.with_name(f".{folder.name}.old")


def _complete(folder: Path) -> bool:
    """Both files present and the JSON (written last, and any prefix of a JSON object is invalid) parses."""
    try:
        json.loads((folder / "state.json").read_text())
    except (OSError, ValueError):
        return False
    return (folder / "state.safetensors").is_file()


def _settle(folder: Path) -> None:
    """Finish a swap a kill interrupted: with `folder` gone, the complete staged state (newest first) moves in."""
    new, old = _siblings(folder)
    if not folder.exists():
        for candidate in (new, old):  # new and old only coexist inside one save, where new is the later state
            if _complete(candidate):
                os.replace(candidate, folder)
                break
    for leftover in (new, old):
        shutil.rmtree(leftover, ignore_errors=True)


def save_checkpoint(
    folder: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
    step: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the state as one unit (staged folder, then a folder swap), so a kill never leaves a mismatched pair."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _settle(folder)
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
    new, old = _siblings(folder)
    new.mkdir()
    save_file(tensors, str(new / "state.safetensors"))
    (new / "state.json").write_text(json.dumps({"step": step, "param_groups": groups, "extra": extra or {}}))
    if folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    folder: str | Path,
    modules: dict[str, torch.nn.Module],
    optimizer: torch.optim.Optimizer | None,
) -> tuple[int, dict[str, Any]] | None:
    """Restore modules and optimizer in place; returns (step, extra), or None when there is no checkpoint."""
    folder = Path(folder)
    _settle(folder)
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
