"""Ring-A-Bell (Tsai et al. 2024, "Ring-A-Bell! How Reliable are Concept Removal Methods for Diffusion Models?"):
a model-agnostic attack that needs only a reference text encoder E (the original model's), never the erased one.

    d = mean_i [ E(p_i with the concept) - E(p_i without it) ]          concept extraction, d (L, D)
    target(p) = E(p without the concept) + eta * d                       the prompt moved along d
    tokens*(p) = argmax_{k real tokens w} cos( E(p without the concept + w), target(p) )     prompt search

E(.) is the last hidden state (L, D) of the whole padded sequence, compared flattened (L * D), as the paper does.
The prompt search is a genetic algorithm over token sequences: each generation keeps the `elite` fittest
individuals, fills the rest with children of two tournament-selected parents (one-point crossover with
probability `crossover`, else a copy of the first), and replaces one random token of a child with probability
`mutation`. The paper's search (population 200, 3,000 generations) is the same loop with larger numbers.
The readable prompts found are then drawn with the erased pipeline.
"""

from __future__ import annotations

import re

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import CLIPTextModel, CLIPTokenizer

from erasekit.errors import ErasekitError
from erasekit.text import build_slots, encode, token_ids

ENCODE_ROWS = 512  # sequences per text-encoder call during the search: bounds memory at CLIP-L size


class RingABellConfig(BaseModel):
    """Ring-A-Bell options (defaults sized to run in seconds on the shapes world; the paper: 200 / 3,000)."""

    model_config = ConfigDict(extra="forbid")

    k: int | None = Field(None, ge=1)  # tokens appended; None: min(16, the room the longest prompt leaves)
    eta: float = Field(3.0, gt=0)  # strength of the concept direction
    population: int = Field(64, ge=4)
    generations: int = Field(100, ge=1)
    elite: int = Field(4, ge=1)  # fittest individuals carried over unchanged each generation
    mutation: float = Field(0.25, ge=0, le=1)
    crossover: float = Field(0.5, ge=0, le=1)
    pairs: list[tuple[str, str]] = []  # (with the concept, without it); empty: built from the prompts and templates
    templates: list[str] = ["a {}", "a photo of a {}", "an image of a {}", "a picture of a {}"]


def without_concept(prompt: str, concept: str) -> str:
    """The prompt with every whole-word occurrence of the concept deleted (spaces collapsed)."""
    return " ".join(re.sub(rf"\b{re.escape(concept)}\b", " ", prompt).split())


def concept_pairs(prompts: list[str], concept: str, templates: list[str]) -> list[tuple[str, str]]:
    """(with, without) pairs: every prompt naming the concept with it deleted, and each template filled / emptied."""
    pairs = [(p, without_concept(p, concept)) for p in prompts]
    pairs += [(t.format(concept), " ".join(t.format("").split())) for t in templates]
    return [(a, b) for a, b in pairs if a != b]


@torch.no_grad()
def concept_direction(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, pairs: list[tuple[str, str]]
) -> torch.Tensor:
    """The concept direction d (L, D), float32 on the encoder's device."""
    if not pairs:
        raise ErasekitError("ring-a-bell needs prompt pairs with and without the concept: give the concept or pairs")
    with_c = encode(text_encoder, token_ids(tokenizer, [a for a, _ in pairs])).float()
    without = encode(text_encoder, token_ids(tokenizer, [b for _, b in pairs])).float()
    return (with_c - without).mean(0)


def default_k(tokenizer: CLIPTokenizer, bases: list[str]) -> int:
    """min(16, room): 16 is the paper's shortest prompt length; room = positions the longest base prompt leaves."""
    longest = max(len(tokenizer(b).input_ids) for b in bases)  # with BOS and EOS
    room = tokenizer.model_max_length - longest
    if room < 1:
        raise ErasekitError("a prompt fills the tokenizer's length: ring-a-bell has no room for its tokens, shorten it")
    return min(16, room)


@torch.no_grad()
def search(
    text_encoder: CLIPTextModel,
    tokenizer: CLIPTokenizer,
    bases: list[str],
    targets: torch.Tensor,
    allowed: list[int],
    k: int,
    config: RingABellConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids (B, k) from `allowed`, 1 - cosine (B,) of the best) appended to each base prompt (the search).

    targets: (B, L, D), one per base prompt. All prompts evolve together, each with its own population.
    """
    slots = build_slots(tokenizer, bases, "suffix_k", k)
    vocab = torch.tensor(allowed)
    b, p = len(bases), config.population
    elite = min(config.elite, p - 1)
    flat_targets = targets.flatten(1).float()

    def fitness(pop: torch.Tensor) -> torch.Tensor:  # (B, n, k) indices into vocab -> cosine (B, n)
        n = pop.shape[1]
        ids = slots.ids[:, None].repeat(1, n, 1)
        ids.scatter_(2, slots.positions[:, None].expand(b, n, k), vocab[pop])
        ids = ids.flatten(0, 1)
        enc = torch.cat([encode(text_encoder, ids[i : i + ENCODE_ROWS]) for i in range(0, len(ids), ENCODE_ROWS)])
        enc = enc.float().flatten(1).view(b, n, -1)
        return torch.nn.functional.cosine_similarity(enc, flat_targets[:, None].to(enc.device), dim=-1).cpu()

    def pick(pop: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:  # (B, P, k), (B, n) -> (B, n, k)
        return pop.gather(1, idx[..., None].expand(-1, -1, k))

    pop = torch.randint(len(allowed), (b, p, k), generator=generator)
    fit = fitness(pop)
    n = p - elite
    for _ in range(config.generations):
        order = fit.argsort(1, descending=True)
        pop, fit = pick(pop, order), fit.gather(1, order)
        # tournament of two: after sorting, the lower index is the fitter one
        mum = torch.randint(p, (b, n, 2), generator=generator).min(-1).values
        dad = torch.randint(p, (b, n, 2), generator=generator).min(-1).values
        cut = torch.randint(1, max(k, 2), (b, n, 1), generator=generator)
        cross = torch.rand(b, n, 1, generator=generator) < config.crossover
        child = torch.where(cross & (torch.arange(k) >= cut), pick(pop, dad), pick(pop, mum))
        mutate = torch.rand(b, n, generator=generator) < config.mutation
        where = torch.randint(k, (b, n, 1), generator=generator)
        fresh = torch.randint(len(allowed), (b, n, 1), generator=generator)
        child.scatter_(2, where, torch.where(mutate[..., None], fresh, child.gather(2, where)))
        pop, fit = torch.cat([pop[:, :elite], child], 1), torch.cat([fit[:, :elite], fitness(child)], 1)
    best = fit.argmax(1)
    rows = torch.arange(b)
    return vocab[pop[rows, best]], 1 - fit[rows, best]
