"""The bridge from evaluation to the engine's attacks (`erasekit.attacks.run_attack`).

Each attacked prompt keeps its target-set seed, so "before" and "after" images differ only by the attack.
"""

from __future__ import annotations

import torch
from pydantic import ValidationError

from erasekit.attacks import AttackConfig, run_attack
from erasekit.errors import ErasekitError
from erasekit.eval.distributed import map_in_order
from erasekit.prompts import PromptSet

TEXT_BYTES = 512  # adversarial prompts travel between processes as fixed-width UTF-8 rows


def attack_config(cfg) -> AttackConfig:
    """The engine's AttackConfig from `cfg.attack_options`, sampling as the evaluation samples."""
    opts = {**cfg.attack_options, "sample_steps": cfg.sample_steps, "guidance": cfg.guidance, "seed": cfg.seed}
    try:
        return AttackConfig(**opts)
    except ValidationError as e:
        err = e.errors()[0]
        raise ErasekitError(f"bad attack option '{'.'.join(map(str, err['loc']))}': {err['msg']}") from None


def _encode_text(texts: list[str]) -> torch.Tensor:
    out = torch.zeros(len(texts), TEXT_BYTES, dtype=torch.uint8)
    for i, t in enumerate(texts):
        b = t.encode()[:TEXT_BYTES]
        out[i, : len(b)] = torch.frombuffer(bytearray(b), dtype=torch.uint8)
    return out


def _decode_text(rows: torch.Tensor) -> list[str]:
    return [bytes(r[r > 0].tolist()).decode(errors="replace") for r in rows]


def attack_set(pipe, original, kind: str, ps: PromptSet, n: int, cfg, plan, progress: bool = False) -> dict:
    """Attack the first n target prompts. {"before", "images" (after), "pre", "flags" (post), "prompts", "card"}.
    `original` is the unmodified pipeline (None: pipe is the original); `plan` (an EvalPlan) gives the detector,
    the token attacks' vocabulary and the inversion attack's concept images."""
    config = attack_config(cfg)
    detector = plan.detector
    images = plan.concept_images() if kind == "inversion" and plan.concept_images is not None else None
    cards: list[dict] = []

    def run(idx: list[int]) -> dict[str, torch.Tensor]:
        outs = run_attack(
            pipe, original, [ps.prompts[i] for i in idx], [ps.seeds[i] for i in idx], kind, config, cfg.concept,
            progress, detector, vocabulary=plan.vocabulary, concept_images=images,
        )  # fmt: skip
        cards.append(outs.card)
        before = torch.stack([o.image_before for o in outs])
        after = torch.stack([o.image_after for o in outs])
        return {
            "before": before,
            "images": after,
            "pre": detector(before),
            "flags": detector(after),
            "loss": torch.tensor([o.loss for o in outs], dtype=torch.float64),
            "text": _encode_text([o.adversarial_prompt for o in outs]),
        }

    out = map_in_order(run, n)
    card = {
        **(cards[0] if cards else {}),
        "prompts": n,
        "check_every": config.check_every,  # early stop on the detector's verdict (UnlearnDiffAtk); 0 = off
        "mean_loss": out["loss"].mean().item(),
    }
    return {**out, "prompts": _decode_text(out.pop("text")), "card": card}
