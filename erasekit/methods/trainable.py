"""Which parameters a method trains, named the way the ESD and AdvUnlearn papers name them.

unet:         "xattn" (cross-attention, ESD-x), "noxattn" (everything but cross-attention, time embedding
              and the output layer, ESD-u), "full"
text_encoder: "all" | "attn" | "mlp" within the chosen encoder layers (None = all); "all" over all layers
              also trains the final layer norm. Token and position embeddings stay frozen.
"""

from __future__ import annotations

import torch

from erasekit.errors import ErasekitError

UNET_PARTS = ("xattn", "xattn-kv", "noxattn", "full")
TEXT_PARTS = ("all", "attn", "mlp")


def _unet_filter(part: str):
    if part == "xattn":
        return lambda n: "attn2" in n
    if part == "xattn-kv":
        return lambda n: "attn2.to_k." in n or "attn2.to_v." in n
    if part == "noxattn":
        return lambda n: not ("attn2" in n or n.startswith(("conv_out.", "conv_norm_out.")) or "time_emb" in n)
    return lambda n: True


def _text_filter(part: str, layers: list[int] | None, n_layers: int):
    chosen = set(range(n_layers) if layers is None else layers)
    bad = sorted(chosen - set(range(n_layers)))
    if bad:
        raise ErasekitError(f"text encoder has layers 0..{n_layers - 1}; layers {bad} do not exist")
    inner = {"all": "", "attn": ".self_attn.", "mlp": ".mlp."}[part]

    def keep(name: str) -> bool:
        name = name.removeprefix("text_model.")
        if name.startswith("final_layer_norm."):
            return part == "all" and layers is None
        if not name.startswith("encoder.layers."):
            return False
        index = int(name.split(".")[2])
        return index in chosen and inner in name

    return keep


def select_parameters(
    module: torch.nn.Module, component: str, part: str, layers: list[int] | None = None
) -> list[tuple[str, torch.nn.Parameter]]:
    """Freeze `module` except the chosen parameters, which it returns (name, param) in module order."""
    if component == "unet":
        if part not in UNET_PARTS:
            raise ErasekitError(f"unknown UNet part '{part}': use one of {', '.join(UNET_PARTS)}")
        keep = _unet_filter(part)
    elif component == "text_encoder":
        if part not in TEXT_PARTS:
            raise ErasekitError(f"unknown text-encoder part '{part}': use one of {', '.join(TEXT_PARTS)}")
        keep = _text_filter(part, layers, module.config.num_hidden_layers)
    else:
        raise ErasekitError(f"unknown component '{component}': use unet or text_encoder")
    module.requires_grad_(False)
    chosen = [(n, p) for n, p in module.named_parameters() if keep(n)]
    if not chosen:
        raise ErasekitError(f"no parameters selected for {component} part '{part}': pick another part or layers")
    for _, p in chosen:
        p.requires_grad_(True)
    return chosen
