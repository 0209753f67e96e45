"""Eq. 2's anchor for a shapes-world concept: the other value of its attribute nearest to it in the text encoder.

AdvUnlearn's shapes recipe maps the concept onto its nearest neighbour (circle -> square, red -> orange) rather
than away from everything: the whole-world FID of the unchanged model with "circle" rewritten to "square" is below
the original's at three seeds (`benchmarks/fid_floor.py`), while the empty anchor lands circles on triangles.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from transformers import CLIPTextModel, CLIPTokenizer

from erasekit.text import encode, token_ids
from erasekit.world.prompt_sets import ATTRIBUTES, concept_attribute


@torch.no_grad()
def nearest_value(concepts: list[str], tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel) -> str:
    """The value of the concepts' attribute, not itself erased, whose context (the bare word's (L, D) hidden
    states, flattened) has the highest mean cosine similarity to the concepts'; "" (drop the word) when the
    concepts span several attributes or leave no other value."""
    attrs = {concept_attribute(c) for c in concepts}
    others = [v for v in ATTRIBUTES[attrs.pop()] if v not in concepts] if len(attrs) == 1 else []
    if not others:
        return ""
    ctx = F.normalize(encode(text_encoder, token_ids(tokenizer, list(concepts) + others)).flatten(1), dim=1)
    sim = ctx[len(concepts) :] @ ctx[: len(concepts)].T  # (V, C)
    return others[int(sim.mean(1).argmax())]
