"""Injection, soft and token attacks, the verdict (`judge`) and `erasekit attack` (tiny settings, bundled world)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from typer.testing import CliRunner

from erasekit.artifact import load_original_component
from erasekit.attacks import AttackConfig, judge, run_attack
from erasekit.attacks.soft import SoftAttackConfig, attack_loss, optimize_embeddings
from erasekit.attacks.token import TokenAttackConfig, optimize_tokens, search_space
from erasekit.diffusion import ModelPair
from erasekit.errors import ErasekitError
from erasekit.pipeline import bundle_dir
from erasekit.text import (
    build_slots,
    concept_tokens,
    encode,
    encode_injected,
    random_token_embeddings,
    token_embedding,
    token_ids,
)
from erasekit.world.evaluators import ShapeClassifier
from erasekit.world.prompts import WORLD_WORDS
from erasekit.world.tokenizer import english_words

PROMPTS = ["a red circle on a blue background", "a circle"]


class CircleDetector:
    """The world classifier's verdict "the shape is a circle" (what a domain hands the attacks)."""

    def __init__(self) -> None:
        self.model = ShapeClassifier.load(bundle_dir() / "classifier")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.predict(images * 2 - 1)["shape"] == 0

    def card(self) -> dict:
        return {"concept": "circle"}


def test_injection_modes_agree_with_plain_encoding(shapes_pipe):
    tok, te = shapes_pipe.tokenizer, shapes_pipe.text_encoder
    plain = encode(te, token_ids(tok, PROMPTS))
    circle = token_embedding(te).weight[concept_tokens(tok, "circle")].detach()  # (1, D)
    with torch.no_grad():
        same = encode_injected(te, build_slots(tok, PROMPTS, "replace_k", 1, "circle"), circle)
        added = encode_injected(te, build_slots(tok, PROMPTS, "add", 1, "circle"), torch.zeros(1, circle.shape[1]))
    torch.testing.assert_close(same, plain)
    torch.testing.assert_close(added, plain)
    slots = build_slots(tok, PROMPTS, "prefix_k", 2)
    assert slots.positions.tolist() == [[1, 2], [1, 2]]
    emb = torch.zeros(2, 2, te.config.hidden_size, requires_grad=True)  # one (k, D) per prompt
    encode_injected(te, slots, emb).sum().backward()
    assert emb.grad.abs().sum(-1).gt(0).all()  # every slot of every prompt gets a gradient
    assert token_embedding(te)._forward_hooks == {}  # the hook is gone after the block


def test_slot_errors(shapes_pipe):
    tok = shapes_pipe.tokenizer
    with pytest.raises(ErasekitError, match="does not contain"):
        build_slots(tok, ["a red square"], "replace_k", 1, "circle")
    with pytest.raises(ErasekitError, match="empty"):
        build_slots(tok, [], "prefix_k", 1)
    with pytest.raises(ErasekitError, match="unknown injection mode"):
        build_slots(tok, PROMPTS, "suffix", 1)
    with pytest.raises(ErasekitError, match="tokens"):
        build_slots(tok, ["a red circle " * 7], "prefix_k", 3)


def _perturbed_pair(pipe) -> tuple[ModelPair, torch.Tensor]:
    """A pair whose text encoder is a noised copy of the original, and the original's context of PROMPTS."""
    te = copy.deepcopy(pipe.text_encoder)
    with torch.no_grad():
        for p in te.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    pair = ModelPair(pipe.unet, te, pipe.unet, pipe.text_encoder)
    return pair, encode(pipe.text_encoder, token_ids(pipe.tokenizer, PROMPTS))


def _fixed_provider(pair, ctx_o):
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(len(ctx_o), 4, 8, 8, generator=g), torch.tensor([500, 300])
    with torch.no_grad():
        target = pair.eps(x, t, ctx_o, original=True)
    return (lambda _g: (x, t, target)), x, t, target


@pytest.mark.parametrize("optimizer", ["adam", "sign", "signed_adam"])
def test_soft_attack_lowers_eq4(shapes_pipe, optimizer):
    pair, ctx_o = _perturbed_pair(shapes_pipe)
    provider, x, t, target = _fixed_provider(pair, ctx_o)
    slots = build_slots(shapes_pipe.tokenizer, PROMPTS, "prefix_k", 2)
    g = torch.Generator().manual_seed(0)
    init = random_token_embeddings(pair.text_encoder, (2, 2), g)
    with torch.no_grad():
        start = attack_loss(pair, slots, init, x, t, target)
    cfg = SoftAttackConfig(k=2, steps=15, lr=0.05 if optimizer == "adam" else 0.01, optimizer=optimizer)
    emb, last = optimize_embeddings(pair, slots, init, provider, cfg, g)
    with torch.no_grad():
        end = attack_loss(pair, slots, emb, x, t, target)
    assert emb.shape == init.shape and last.shape == (2,)
    assert (end < start).all(), (start, end)


def test_token_attack_uses_real_allowed_tokens(shapes_pipe):
    tok = shapes_pipe.tokenizer
    allowed = search_space(tok, english_words(), ["circle"])
    world = {i for w in WORLD_WORDS for i in tok(w, add_special_tokens=False).input_ids}
    assert len(allowed) > 100 and not world & set(allowed)  # the world's English words never occur in its prompts
    pair, ctx_o = _perturbed_pair(shapes_pipe)
    provider, *_ = _fixed_provider(pair, ctx_o)
    slots = build_slots(tok, PROMPTS, "prefix_k", 3)
    cfg = TokenAttackConfig(k=3, steps=5)
    chosen, loss = optimize_tokens(pair, slots, allowed, provider, cfg, torch.Generator().manual_seed(0))
    assert chosen.shape == (2, 3) and set(chosen.flatten().tolist()) <= set(allowed)
    all_words = search_space(tok, None, ["circle"])  # UnlearnDiffAtk's space: every whole-word token
    assert set(allowed) <= set(all_words) and concept_tokens(tok, "circle")[0] not in all_words
    assert all(tok.convert_ids_to_tokens(i)[:-4].isalpha() for i in all_words)
    with pytest.raises(ErasekitError, match="search space is empty"):
        search_space(tok, ["circle", "zzqx"], ["circle"])


def test_early_stop_keeps_the_first_successful_candidate(shapes_pipe):
    """UnlearnDiffAtk's early stop: a prompt judged a success at a check keeps that check's candidate; the others
    end with the last step's; once all succeeded the run stops."""
    pair, ctx_o = _perturbed_pair(shapes_pipe)
    provider, *_ = _fixed_provider(pair, ctx_o)
    slots = build_slots(shapes_pipe.tokenizer, PROMPTS, "prefix_k", 2)
    g = torch.Generator().manual_seed(0)
    init = random_token_embeddings(pair.text_encoder, (2, 2), g)
    seen: list[torch.Tensor] = []

    def check(candidate: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:  # row 0 succeeds at check 2, row 1 never
        seen.append(candidate.clone())
        assert rows.tolist() == ([0, 1] if len(seen) <= 2 else [1])  # a row that succeeded is not judged again
        return (rows == 0) & (len(seen) == 2)

    cfg = SoftAttackConfig(k=2, steps=9, lr=0.05)
    emb, _ = optimize_embeddings(pair, slots, init, provider, cfg, g, check, check_every=3)
    assert len(seen) == 3
    torch.testing.assert_close(emb[0], seen[1][0])
    assert len(seen[2]) == 1  # the third check saw row 1 only
    plain, _ = optimize_embeddings(pair, slots, init, provider, cfg, torch.Generator().manual_seed(0))
    torch.testing.assert_close(emb[1], plain[1])
    assert not torch.allclose(emb[0], plain[0])
    done: list[int] = []
    optimize_embeddings(pair, slots, init, provider, cfg, g, lambda c, r: torch.tensor([done.append(1) is None] * 2), 2)
    assert len(done) == 1  # everything succeeded at the first check: no further steps


def test_token_attack_keeps_best_projection(shapes_pipe):
    """The returned tokens are the best checked ones: their eq. 4 loss is the returned loss, and no checked
    projection (here: every step's, and the last step's of an unselected run) scores lower."""
    tok = shapes_pipe.tokenizer
    allowed = search_space(tok, english_words(), ["circle"])
    pair, ctx_o = _perturbed_pair(shapes_pipe)
    provider, x, t, target = _fixed_provider(pair, ctx_o)
    slots = build_slots(tok, PROMPTS, "prefix_k", 2)
    table = token_embedding(pair.text_encoder).weight.detach()
    score = lambda ids: attack_loss(pair, slots, table[ids], x, t, target)  # noqa: E731
    cfg = TokenAttackConfig(k=2, steps=8, lr=0.5, select_every=1, select_draws=1)
    chosen, loss = optimize_tokens(pair, slots, allowed, provider, cfg, torch.Generator().manual_seed(0))
    last, _ = optimize_tokens(pair, slots, allowed, provider, cfg.model_copy(update={"select_every": 0}),
                              torch.Generator().manual_seed(0))  # fmt: skip
    with torch.no_grad():
        torch.testing.assert_close(score(chosen), loss)
        assert (score(chosen) <= score(last) + 1e-6).all()


@pytest.mark.parametrize("kind", ["soft", "token"])
def test_run_attack_and_judge(shapes_pipe, kind):
    original = {"text_encoder": load_original_component("shapes", "text_encoder")}
    cfg = AttackConfig(soft=SoftAttackConfig(steps=2), token=TokenAttackConfig(steps=2), sample_steps=3)
    outs = run_attack(shapes_pipe, original, PROMPTS, [3, 4], kind, cfg, "circle", vocabulary=english_words())
    assert [o.prompt for o in outs] == PROMPTS and outs[0].image_after.shape == (3, 32, 32)
    if kind == "token":
        for o in outs:
            assert o.adversarial_prompt.endswith(o.prompt) and len(o.tokens) == 3
            assert o.adversarial_prompt.split()[:3] == o.tokens  # readable: the tokens are whole words
            assert set(o.tokens) <= set(english_words())
        assert outs.card["search_space"] == {"name": f"given word list ({len(english_words())} words)",
                                             "size": len(search_space(shapes_pipe.tokenizer, english_words(), ["circle"]))}  # fmt: skip
    else:
        assert outs[0].embeddings.shape == (3, shapes_pipe.text_encoder.config.hidden_size)
    assert outs.card["kind"] == kind and outs.card["sampler"]["scheduler"] == "DDIMScheduler"
    res = judge(outs, CircleDetector())
    pre, post = torch.tensor(res["pre"]), torch.tensor(res["post"])
    assert res["asr"] == pytest.approx((pre | post).float().mean().item())
    assert res["post_attack_rate"] == pytest.approx(post.float().mean().item())
    assert res["n"] == 2 and res["detector"]["concept"] == "circle"
    with pytest.raises(ErasekitError, match="seed"):
        run_attack(shapes_pipe, original, PROMPTS, [1], kind, cfg, concept="circle")
    with pytest.raises(ErasekitError, match="empty"):
        run_attack(shapes_pipe, original, [], [], kind, cfg, concept="circle")
    with pytest.raises(ErasekitError, match="no attack outcomes"):
        judge([], CircleDetector())


def test_prompts_already_flagged_are_not_attacked(shapes_pipe):
    """With a detector, a prompt whose unattacked image is flagged counts as a success as it is (UnlearnDiffAtk)."""
    original = {"text_encoder": load_original_component("shapes", "text_encoder")}
    cfg = AttackConfig(soft=SoftAttackConfig(steps=2), sample_steps=3, check_every=1)
    calls: list[int] = []

    def detector(images: torch.Tensor) -> torch.Tensor:  # flags the first prompt's unattacked image only
        calls.append(len(images))
        return torch.tensor([len(calls) == 1] + [False] * (len(images) - 1))

    outs = run_attack(shapes_pipe, original, PROMPTS, [3, 4], "soft", cfg, "circle", detector=detector)
    assert not outs[0].attacked and outs[0].adversarial_prompt == PROMPTS[0] and outs[0].embeddings is None
    torch.testing.assert_close(outs[0].image_after, outs[0].image_before)
    assert outs[1].attacked and outs[1].adversarial_prompt.startswith("<adv>")
    assert calls == [2, 1, 1]  # the unattacked pair, then one check per step for the one prompt attacked


def test_cli_attack_json(tmp_path):
    from erasekit.cli import _register_commands, app

    _register_commands()
    prompts = tmp_path / "p.txt"  # no circles before the attack, so both prompts are attacked
    prompts.write_text("a red square on a white background\na blue star on a black background\n")
    res = CliRunner().invoke(
        app,
        ["attack", "--concept", "circle", "--attack", "token", "-n", "2", "--set", "token.steps=2", "--set", "token.k=2",
         "--prompts", str(prompts), "--grid", str(tmp_path / "g.png"), "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output[res.output.index('{"') :])["attacks"]["token"]
    assert out["n"] == 2 and len(out["prompts"]) == 2 and len(out["prompts"][0]["tokens"]) == 2
    assert (tmp_path / "g.png").is_file()
    res = CliRunner().invoke(app, ["attack", "--concept", "circle", "--attack", "fuzzy"])
    assert res.exit_code != 0 and "unknown attack" in str(res.exception)
