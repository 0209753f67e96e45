"""Prompt tokenization and encoding, the checks that turn bad prompts into one-line errors, and token-embedding
injection (the attacks' way into the text encoder).

    token_ids(tokenizer, prompts)          -> (B, L) long, padded to the tokenizer's model_max_length L
    encode(text_encoder, ids)              -> (B, L, D) last hidden state, the UNet's cross-attention context
    build_slots(tokenizer, prompts, ...)   -> Slots: ids (B, L) with k placeholder tokens, positions (B, k)
    encode_injected(text_encoder, slots, emb (k, D) | (B, k, D)) -> (B, L, D)
    by_width(width (B,), run)              -> run over the rows of each width k, back in row order
    cycled(widths, n)                      -> n widths, the list taken in turn

Injection modes: `prefix_k` (k new tokens right after BOS), `suffix_k` (k new tokens after the prompt, right before
EOS), `replace_k` (k new tokens in place of the concept's tokens), `add` (emb is added to the concept tokens' own
embeddings; k = number of concept tokens). `template_slots` puts k new tokens where a caption template's "{}" is. transformers 5's
CLIPTextModel.forward takes no `inputs_embeds`, so the embeddings go in through a forward hook on the
token-embedding module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, CLIPTokenizer

from erasekit.errors import ErasekitError

MODES = ("prefix_k", "suffix_k", "replace_k", "add")


def check_prompts(tokenizer: CLIPTokenizer, prompts: list[str], reserve: int = 0) -> None:
    """Raise when a prompt list is empty or a prompt (+ `reserve` extra tokens, e.g. an attack prefix) is too long."""
    if not prompts:
        raise ErasekitError("the prompt list is empty: give at least one prompt")
    limit = tokenizer.model_max_length
    for p in prompts:
        n = len(tokenizer(p, add_special_tokens=True).input_ids) + reserve
        if n > limit:
            raise ErasekitError(
                f"prompt '{p[:60]}' needs {n} tokens but the tokenizer allows {limit}: shorten it"
                + (f" (or use fewer than {reserve} attack tokens)" if reserve else "")
            )


def token_ids(tokenizer: CLIPTokenizer, prompts: list[str]) -> torch.Tensor:
    """(B, L) token ids, padded to model_max_length; checks lengths first."""
    check_prompts(tokenizer, prompts)
    return tokenizer(
        prompts, padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids


def encode(text_encoder: CLIPTextModel, ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, L, D) hidden states, as the Stable Diffusion pipelines use them."""
    return text_encoder(ids.to(text_encoder.device))[0]


def token_embedding(text_encoder: CLIPTextModel) -> torch.nn.Embedding:
    """The token-embedding table (V, D) of a CLIPTextModel (transformers 4 nests it under `text_model`)."""
    model = getattr(text_encoder, "text_model", text_encoder)
    return model.embeddings.token_embedding


def concept_tokens(tokenizer: CLIPTokenizer, concept: str) -> list[int]:
    """Token ids of `concept` without BOS/EOS; one-line error for an empty or unknown word.

    A word counts as unknown when it splits into several pieces and one of them is a bare character: the
    tokenizer has no merge covering it (a misspelling, or a word the vocabulary never saw).
    """
    ids = tokenizer(concept, add_special_tokens=False).input_ids
    if not ids:
        raise ErasekitError("the concept is empty: pass a word such as --concept circle")
    for word in concept.split():
        pieces = tokenizer.convert_ids_to_tokens(tokenizer(word, add_special_tokens=False).input_ids)
        if len(pieces) > 1 and any(len(p.removesuffix("</w>")) <= 1 for p in pieces):
            raise ErasekitError(
                f"'{word}' is not a word this tokenizer knows (it splits into {pieces}): check the spelling"
            )
    return ids


@dataclass
class Slots:
    """Placeholder positions for injected embeddings: ids (B, L) long, positions (B, k) long."""

    ids: torch.Tensor
    positions: torch.Tensor
    mode: str

    @property
    def k(self) -> int:
        return self.positions.shape[1]


def _find(seq: list[int], sub: list[int]) -> int:
    for i in range(len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def contains_concept(tokenizer: CLIPTokenizer, prompt: str, concept: str) -> bool:
    """Whether the prompt's tokens contain the concept's tokens (where replace_k / add can put their slots)."""
    return _find(tokenizer(prompt, add_special_tokens=False).input_ids, concept_tokens(tokenizer, concept)) >= 0


def _slot_row(tokenizer: CLIPTokenizer, before: list[int], k: int, after: list[int], text: str) -> tuple[list, list]:
    """(padded ids (L,), slot positions (k,)) of BOS + before + k placeholders + after + EOS."""
    placeholder = tokenizer.bos_token_id  # never pooled: pooling picks EOS (by id or by argmax, and BOS < EOS)
    seq = [tokenizer.bos_token_id, *before, *[placeholder] * k, *after, tokenizer.eos_token_id]
    limit = tokenizer.model_max_length
    if len(seq) > limit:
        raise ErasekitError(
            f"prompt '{text[:60]}' with {k} attack tokens needs {len(seq)} tokens (limit {limit}): shorten it"
        )
    return seq + [tokenizer.pad_token_id] * (limit - len(seq)), list(range(len(before) + 1, len(before) + 1 + k))


def _check_slots(prompts: list[str], k: int) -> None:
    if k < 1:
        raise ErasekitError("the number of attack tokens k must be at least 1")
    if not prompts:
        raise ErasekitError("the prompt list is empty: give at least one prompt")


def build_slots(
    tokenizer: CLIPTokenizer, prompts: list[str], mode: str = "prefix_k", k: int = 1, concept: str | None = None
) -> Slots:
    """Token ids with k placeholder slots per prompt, for `encode_injected` (see the module docstring for modes)."""
    if mode not in MODES:
        raise ErasekitError(f"unknown injection mode '{mode}': use one of {', '.join(MODES)}")
    _check_slots(prompts, k)
    target = concept_tokens(tokenizer, concept) if mode in ("replace_k", "add") else []
    rows, positions = [], []
    for p in prompts:
        body = tokenizer(p, add_special_tokens=False).input_ids
        if mode == "prefix_k":
            row, pos = _slot_row(tokenizer, [], k, body, p)
        elif mode == "suffix_k":
            row, pos = _slot_row(tokenizer, body, k, [], p)
        else:
            at = _find(body, target)
            if at < 0:
                raise ErasekitError(f"prompt '{p[:60]}' does not contain the concept '{concept}': mode {mode} needs it")
            if mode == "replace_k":
                row, pos = _slot_row(tokenizer, body[:at], k, body[at + len(target) :], p)
            else:  # add: the concept's own tokens are the slots
                row, _ = _slot_row(tokenizer, body, 0, [], p)
                pos = list(range(at + 1, at + 1 + len(target)))
        rows.append(row)
        positions.append(pos)
    return Slots(torch.tensor(rows), torch.tensor(positions), mode)


def template_slots(tokenizer: CLIPTokenizer, templates: list[str], k: int = 1) -> Slots:
    """Slots for caption templates with one "{}" each ("a photo of a {}"): k placeholders where the "{}" is."""
    _check_slots(templates, k)
    rows, positions = [], []
    for t in templates:
        if t.count("{}") != 1:
            raise ErasekitError(f"caption template '{t}' must contain '{{}}' exactly once (where the token goes)")
        before, after = (tokenizer(part.strip(), add_special_tokens=False).input_ids for part in t.split("{}"))
        row, pos = _slot_row(tokenizer, before, k, after, t)
        rows.append(row)
        positions.append(pos)
    return Slots(torch.tensor(rows), torch.tensor(positions), "replace_k")


@contextmanager
def injected(text_encoder: CLIPTextModel, slots: Slots, emb: torch.Tensor) -> Iterator[None]:
    """Within the block, the token-embedding output (B, L, D) takes `emb` (k, D) or (B, k, D) at slots.positions."""
    pos = slots.positions.to(emb.device)
    rows = torch.arange(len(pos), device=emb.device)[:, None].expand_as(pos)

    def hook(module: torch.nn.Module, inputs: tuple, out: torch.Tensor) -> torch.Tensor:
        if out.shape[0] != len(pos):
            raise ValueError(f"injection for {len(pos)} prompts applied to a batch of {out.shape[0]}")
        e = emb.to(out.dtype).expand(len(pos), *emb.shape[-2:])
        new = out.clone()
        new[rows, pos] = out[rows, pos] + e if slots.mode == "add" else e
        return new

    handle = token_embedding(text_encoder).register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_injected(text_encoder: CLIPTextModel, slots: Slots, emb: torch.Tensor) -> torch.Tensor:
    """(B, L, D) context of slots.ids with `emb` (k, D) or (B, k, D) injected; differentiable in emb."""
    with injected(text_encoder, slots, emb):
        return encode(text_encoder, slots.ids)


def cycled(widths: list[int], n: int) -> list[int]:
    """n widths, `widths` taken in turn (item i is widths[i mod len]): a pool's members or prompts given each width
    in equal shares."""
    return [widths[i % len(widths)] for i in range(n)]


def by_width(width: torch.Tensor, run: Callable[[int, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """Rows whose injected embeddings differ in width: `run(k, rows)` (rows (n_k,) long, the batch rows of width k)
    for each width in increasing order, outputs (n_k, ...) concatenated back in the batch's row order (B, ...).
    The slots of a prompt depend on k, so one encoder call takes one width."""
    groups = [(k, (width == k).nonzero().squeeze(1)) for k in sorted(set(width.tolist()))]
    parts = [run(k, rows) for k, rows in groups]
    order = torch.cat([rows for _, rows in groups]).argsort()
    return torch.cat(parts)[order.to(parts[0].device)]


def random_token_embeddings(
    text_encoder: CLIPTextModel, shape: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Embeddings of random vocabulary tokens, shape (*shape, D): the attacks' default start."""
    table = token_embedding(text_encoder).weight.detach()
    pick = torch.randint(table.shape[0], shape, generator=generator)
    return table[pick.to(table.device)].clone()


def slot_prompt(tokenizer: CLIPTokenizer, prompt: str, tokens: list[int], mode: str, concept: str | None) -> str:
    """The readable prompt that puts real `tokens` where the slots were (prefix_k, suffix_k or replace_k)."""
    words = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    if mode == "prefix_k":
        return f"{words} {prompt}"
    if mode == "suffix_k":
        return f"{prompt} {words}"
    if mode == "replace_k" and concept:
        return prompt.replace(concept, words, 1)
    raise ErasekitError("real-token prompts exist only for modes prefix_k, suffix_k and replace_k (with a concept)")
