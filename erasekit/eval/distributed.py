"""Data parallel over prompts with accelerate: each process takes a contiguous share, results come back in order.

Run an evaluation under `accelerate launch --multi_gpu --num_processes N -m erasekit evaluate ...` (on GPUs one
process per GPU; on a CPU-only machine the same command starts N CPU processes talking over gloo); without a
launcher there is one process and nothing changes. Only tensors travel between processes (no pickling).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from accelerate import PartialState
from accelerate.utils import gather, pad_across_processes


def _state():
    return PartialState(cpu=not torch.cuda.is_available())  # without cpu=True a CPU launch stays one process


def world_size() -> int:
    return _state().num_processes


def process_device() -> torch.device:
    return _state().device


def is_main_process() -> bool:
    return _state().is_main_process


def finish() -> None:
    """End the distributed part of a run: wait for every process, then tear the process group down. A process
    that exits while others still hold the gloo group aborts ("terminate called without an active exception"),
    which fails the whole launch. Afterwards only the main process should go on writing results."""
    state = _state()
    if state.num_processes > 1:
        state.wait_for_everyone()
        state.destroy_process_group()


def shard(n: int) -> list[int]:
    """This process's row indices of 0..n-1: contiguous, sizes differing by at most one (all rows when n < size)."""
    state = _state()
    if state.num_processes == 1 or n < state.num_processes:
        return list(range(n))
    per, extra = divmod(n, state.num_processes)
    start = state.process_index * per + min(state.process_index, extra)
    return list(range(start, start + per + (state.process_index < extra)))


def map_in_order(fn: Callable[[list[int]], dict[str, torch.Tensor]], n: int) -> dict[str, torch.Tensor]:
    """fn(indices) -> {name: (len(indices), ...) tensor} on each process's share; returns {name: (n, ...)} on every
    process, rows in index order."""
    state = _state()
    idx = shard(n)
    local = fn(idx)
    if state.num_processes == 1 or n < state.num_processes:
        return local
    device = state.device
    order = gather(pad_across_processes(torch.tensor(idx, device=device) + 1, dim=0)).cpu() - 1  # -1 marks padding
    keep = order >= 0
    out = {}
    for name, value in local.items():
        wire = value.to(torch.uint8) if value.dtype == torch.bool else value  # gloo has no bool
        padded = pad_across_processes(wire.to(device).contiguous(), dim=0)
        rows = gather(padded).cpu()[keep].to(value.dtype)
        out[name] = torch.empty_like(rows)
        out[name][order[keep]] = rows
    return out
