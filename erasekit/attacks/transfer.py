"""Attack transfer: save what an attack found on one model and replay it on another.

A saved folder holds `outcomes.json` (the run's card and, per prompt: prompt, seed, kind, adversarial prompt,
tokens, mode, loss, whether it was attacked, and the key of its embeddings) and `embeddings.safetensors` (the
soft / inversion embeddings (k, D), float32; an inversion's one learned set is stored once). Replaying draws
every prompt on the target pipeline with the same seeds and sampler: readable prompts (token, ring-a-bell) as
they are, embeddings injected at the saved placement.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from erasekit.attacks.outcome import AttackOutcome, AttackOutcomes
from erasekit.attacks.sampling import Sampling, ddim_sampling, draw_embedded, draw_prompts, sampler_card
from erasekit.errors import ErasekitError

OUTCOMES = "outcomes.json"
EMBEDDINGS = "embeddings.safetensors"


def save_outcomes(outcomes: list[AttackOutcome], folder: str | Path) -> Path:
    """Write the outcomes (without images) to `folder` (created); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    keys: dict[int, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    rows = []
    for i, o in enumerate(outcomes):
        key = None
        if o.embeddings is not None:
            key = keys.setdefault(id(o.embeddings), f"emb.{i}")
            tensors[key] = o.embeddings.detach().float().cpu().contiguous()
        rows.append(
            {"prompt": o.prompt, "seed": o.seed, "kind": o.kind, "adversarial_prompt": o.adversarial_prompt,
             "tokens": o.tokens, "mode": o.mode, "loss": o.loss, "attacked": o.attacked, "embedding": key}
        )  # fmt: skip
    card = getattr(outcomes, "card", {})
    (folder / OUTCOMES).write_text(json.dumps({"card": card, "outcomes": rows}, indent=1))
    if tensors:
        save_file(tensors, str(folder / EMBEDDINGS))
    return folder


def replay(
    pipe: StableDiffusionPipeline,
    folder: str | Path,
    sample_steps: int | None = None,
    guidance: float | None = None,
    batch_size: int = 32,
) -> AttackOutcomes:
    """Draw the saved attack on `pipe`: before = the prompt, after = the adversarial prompt / embeddings, same seeds.

    Sampling defaults to the saved run's (DDIM steps, guidance). Judge the result with `judge` like a fresh run.
    """
    folder = Path(folder)
    if not (folder / OUTCOMES).is_file():
        raise ErasekitError(f"no saved attack in {folder} ({OUTCOMES} missing): pass a folder written by save_outcomes")
    saved = json.loads((folder / OUTCOMES).read_text())
    source, rows = saved["card"], saved["outcomes"]
    tensors = load_file(str(folder / EMBEDDINGS)) if (folder / EMBEDDINGS).is_file() else {}
    width = pipe.text_encoder.config.hidden_size
    for t in tensors.values():
        if t.shape[-1] != width:
            raise ErasekitError(
                f"the saved embeddings are {t.shape[-1]} wide but this text encoder's hidden size is {width}: "
                "replay them on a model with the same text-encoder width"
            )
    sampler = source.get("sampler", {})
    sampling = Sampling(
        sample_steps or sampler.get("steps", 25), sampler.get("guidance", 5.0) if guidance is None else guidance,
        batch_size,
    )  # fmt: skip
    prompts, seeds = [r["prompt"] for r in rows], [r["seed"] for r in rows]
    embeddings = [tensors[r["embedding"]] if r["embedding"] else None for r in rows]
    texts = [r["prompt"] if e is not None else r["adversarial_prompt"] for r, e in zip(rows, embeddings, strict=True)]
    with ddim_sampling(pipe) as replaced:
        before = draw_prompts(pipe, prompts, seeds, sampling)
        after = draw_embedded(
            pipe, texts, seeds, embeddings, [r["mode"] for r in rows], source.get("concept"), sampling
        )
        card = {"kind": source.get("kind"), "replayed_from": str(folder), "source": source,
                "sampler": sampler_card(pipe, sampling, replaced)}  # fmt: skip
    return AttackOutcomes(
        [
            AttackOutcome(r["prompt"], r["seed"], r["kind"], r["adversarial_prompt"], r["loss"], before[i], after[i],
                          tokens=r["tokens"], embeddings=embeddings[i], attacked=r["attacked"], mode=r["mode"])
            for i, r in enumerate(rows)
        ],
        card,
    )  # fmt: skip
