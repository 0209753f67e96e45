"""Residual-stream activations of a CLIP text encoder, read through a forward hook, and prompt files.

encoder_layer(text_encoder, layer)          -> the nn.Module whose output is the residual stream e_l
collect(pipe, prompts, layer)               -> (B, L, D) activations and (B, L) token ids
token_rows(acts, ids, pad_id, ...)          -> (N, D) training rows, BOS / padding left out on request
read_prompts(path)                          -> prompts of a .txt (one a line) or .csv (column 'prompt') file
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
from torch import nn

from erasekit.errors import ErasekitError
from erasekit.text import token_ids


def encoder_layer(text_encoder: nn.Module, layer: int) -> nn.Module:
    """Block `layer` (0-based; negative counts from the end) of a CLIPTextModel's encoder."""
    layers = getattr(text_encoder, "text_model", text_encoder).encoder.layers  # transformers 4 nests text_model
    if not -len(layers) <= layer < len(layers):
        raise ErasekitError(
            f"layer {layer} does not exist: the text encoder has {len(layers)} layers (0..{len(layers) - 1})"
        )
    return layers[layer]


def hidden_of(output: torch.Tensor | tuple) -> torch.Tensor:
    """The hidden states in a layer's output (a tensor, or a tuple whose first item they are)."""
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def collect(pipe, prompts: list[str], layer: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer-`layer` outputs (B, L, D) float32 on CPU for `prompts`, and their (B, L) token ids."""
    store: list[torch.Tensor] = []
    handle = encoder_layer(pipe.text_encoder, layer).register_forward_hook(
        lambda _m, _a, out: store.append(hidden_of(out).float().cpu())
    )
    ids = token_ids(pipe.tokenizer, prompts)
    try:
        for chunk in ids.split(batch_size):
            pipe.text_encoder(chunk.to(pipe.text_encoder.device))
    finally:
        handle.remove()
    return torch.cat(store), ids


def token_rows(
    acts: torch.Tensor, ids: torch.Tensor, pad_id: int | None, skip_bos: bool = True, skip_padding: bool = False
) -> torch.Tensor:
    """(B, L, D) activations -> (N, D) rows for SAE training.

    Padding = every position after the first `pad_id` (the end-of-text token itself is kept).
    """
    keep = torch.ones(ids.shape, dtype=torch.bool)
    if skip_bos:
        keep[:, 0] = False
    if skip_padding and pad_id is not None:
        is_pad = (ids == pad_id).long()
        keep &= ~((is_pad.cumsum(1) - is_pad) > 0)
    return acts[keep]


def read_prompts(path: str | Path, column: str = "prompt") -> list[str]:
    """Prompts from a .txt (one per line) or .csv (column `column`) file."""
    path = Path(path)
    if not path.is_file():
        raise ErasekitError(f"prompt file {path} not found: pass a .txt (one prompt a line) or .csv file")
    if path.suffix.lower() == ".csv":
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise ErasekitError(f"{path} has no '{column}' column (columns: {reader.fieldnames}): name the column")
            prompts = [row[column].strip() for row in reader]
    else:
        prompts = [line.strip() for line in path.read_text().splitlines()]
    prompts = [p for p in prompts if p]
    if not prompts:
        raise ErasekitError(f"{path} holds no prompts")
    return prompts
