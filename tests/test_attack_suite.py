"""The attack suite beyond soft / token basics: placements, restarts, the DDIM sampler, concept inversion,
Ring-A-Bell and transfer (save / replay). Tiny settings on the bundled shapes world."""

from __future__ import annotations

import time

import pytest
import torch
from diffusers import PNDMScheduler, StableDiffusionPipeline
from test_attack import PROMPTS, CircleDetector

import erasekit.attacks as attacks
from erasekit.attacks import (
    ATTACKS,
    AttackConfig,
    AttackOutcome,
    AttackOutcomes,
    inversion,
    judge,
    replay,
    ring_a_bell,
    run_attack,
    save_outcomes,
)
from erasekit.errors import ErasekitError
from erasekit.generation import generate
from erasekit.text import (
    build_slots,
    concept_tokens,
    encode,
    encode_injected,
    slot_prompt,
    template_slots,
    token_embedding,
    token_ids,
)
from erasekit.world.prompt_sets import target_set
from erasekit.world.render import render, sample_scenes
from erasekit.world.tokenizer import english_words

TINY = {"sample_steps": 3, "check_every": 0}


def circles(n: int, seed: int) -> torch.Tensor:
    """(n, 3, 32, 32) rendered circles in [0, 1], colours and backgrounds random."""
    return (render(sample_scenes(n, torch.Generator().manual_seed(seed), shape=0)) + 1) / 2


def test_suffix_slots_sit_before_eos(shapes_pipe):
    tok, te = shapes_pipe.tokenizer, shapes_pipe.text_encoder
    slots = build_slots(tok, ["a red", "a big blue"], "suffix_k", 2)
    for row, pos, n in zip(slots.ids, slots.positions, (2, 3), strict=True):
        assert pos.tolist() == [n + 1, n + 2] and row[n + 3] == tok.eos_token_id  # BOS, n words, 2 slots, EOS
    circle = token_embedding(te).weight[concept_tokens(tok, "circle")].detach()
    with torch.no_grad():  # one slot holding "circle"'s own embedding encodes as the prompt with "circle" appended
        injected = encode_injected(te, build_slots(tok, ["a red"], "suffix_k", 1), circle)
        templated = encode_injected(te, template_slots(tok, ["a picture of a {} on black"], 1), circle)
    torch.testing.assert_close(injected, encode(te, token_ids(tok, ["a red circle"])))
    torch.testing.assert_close(templated, encode(te, token_ids(tok, ["a picture of a circle on black"])))
    assert slot_prompt(tok, "a red", concept_tokens(tok, "circle"), "suffix_k", None) == "a red circle"
    with pytest.raises(ErasekitError, match="exactly once"):
        template_slots(tok, ["a photo"], 1)


def test_suffix_and_replace_placements_run(shapes_pipe):
    cfg = AttackConfig(token={"steps": 2, "mode": "suffix_k", "k": 2}, soft={"steps": 2, "mode": "replace_k"}, **TINY)
    outs = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "token", cfg, "circle", vocabulary=english_words())
    for o in outs:
        assert o.mode == "suffix_k" and o.adversarial_prompt == f"{o.prompt} {' '.join(o.tokens)}"
    outs = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "soft", cfg, "circle")
    assert [o.adversarial_prompt for o in outs] == ["a red <adv><adv><adv> on a blue background", "a <adv><adv><adv>"]


def test_restarts_keep_the_best_loss(shapes_pipe, monkeypatch):
    """Each prompt ends with the lowest score over its restarts; the first restart is the single-start run."""
    scores: list[torch.Tensor] = []
    score = attacks._score

    def recording(*args):
        scores.append(score(*args))
        return scores[-1]

    monkeypatch.setattr(attacks, "_score", recording)
    cfg = AttackConfig(soft={"steps": 3, "lr": 0.05}, restarts=3, **TINY)
    outs = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "soft", cfg, "circle")
    assert len(scores) == 3 and outs.card["restarts"] == 3
    best = torch.stack(scores).min(0).values
    torch.testing.assert_close(torch.tensor([o.loss for o in outs]), best)
    single = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "soft", cfg.model_copy(update={"restarts": 1}), "circle")
    torch.testing.assert_close(torch.tensor([o.loss for o in single]), scores[0])


def test_images_are_drawn_with_ddim_and_the_scheduler_is_restored(shapes_pipe):
    """A pipeline shipping PNDM (as SD v1.4) is attacked on DDIM; the card says so; its scheduler comes back."""
    pndm = PNDMScheduler.from_config(shapes_pipe.scheduler.config)
    pipe = StableDiffusionPipeline(**{**shapes_pipe.components, "scheduler": pndm})
    pipe.set_progress_bar_config(disable=True)
    outs = run_attack(pipe, None, PROMPTS, [3, 4], "soft", AttackConfig(soft={"steps": 1}, **TINY), "circle")
    assert pipe.scheduler is pndm
    assert outs.card["sampler"] == {"scheduler": "DDIMScheduler", "steps": 3, "eta": 0.0, "guidance": 5.0,
                                    "prediction_type": "epsilon", "pipeline_scheduler": "PNDMScheduler"}  # fmt: skip
    ddim_images = generate(shapes_pipe, PROMPTS, [3, 4], steps=3)  # the bundled pipeline samples with DDIM
    torch.testing.assert_close(torch.stack([o.image_before for o in outs]), ddim_images)


def test_unknown_attack_lists_the_attacks(shapes_pipe):
    with pytest.raises(ErasekitError, match="use one of soft, token, inversion, ring-a-bell"):
        run_attack(shapes_pipe, None, PROMPTS, [3, 4], "fuzzy")
    assert ATTACKS == ("soft", "token", "inversion", "ring-a-bell")


def test_inversion_learns_a_token_that_lowers_its_diffusion_loss(shapes_pipe):
    cfg = inversion.InversionConfig(steps=25, lr=2e-2)
    x0 = inversion.concept_latents(shapes_pipe, circles(8, 0))
    emb, losses = inversion.learn(shapes_pipe, x0, cfg, seed=0)
    assert emb.shape == (1, 64) and losses.shape == (25,)
    short = cfg.model_copy(update={"steps": 2})
    torch.testing.assert_close(*(inversion.learn(shapes_pipe, x0, short, seed=3)[0] for _ in range(2)))  # seeded
    g = torch.Generator().manual_seed(99)  # fixed held-out draws: every caption template x 8 images x 4 (t, eps)
    slots = template_slots(shapes_pipe.tokenizer, cfg.templates * 32, 1)
    img, t = torch.arange(96) % 8, torch.randint(1000, (96,), generator=g)
    noise = torch.randn(96, *x0.shape[1:], generator=g)
    start = inversion.initial_embeddings(shapes_pipe, cfg, torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = inversion.diffusion_loss(shapes_pipe, slots, start, x0[img], t, noise).mean()
        after = inversion.diffusion_loss(shapes_pipe, slots, emb, x0[img], t, noise).mean()
    assert after < 0.9 * before, (before, after)
    with pytest.raises(ErasekitError, match="in \\[0, 1\\]"):
        inversion.concept_latents(shapes_pipe, circles(2, 0) * 2 - 1)


def test_inversion_attack_run(shapes_pipe):
    cfg = AttackConfig(inversion={"steps": 3, "k": 2, "init": "square"}, **TINY)
    prompts = ["a red circle on a blue background", "a green square"]
    outs = run_attack(shapes_pipe, None, prompts, [3, 4], "inversion", cfg, "circle", concept_images=circles(4, 1))
    assert [o.mode for o in outs] == ["replace_k", "prefix_k"]  # no circle in the second: the tokens go in front
    assert [o.adversarial_prompt for o in outs] == [
        "a red <adv><adv> on a blue background",
        "<adv><adv> a green square",
    ]
    assert outs[0].embeddings is outs[1].embeddings and outs[0].embeddings.shape == (2, 64)
    assert outs[1].image_after.shape == (3, 32, 32) and outs.card["images"] == 4
    assert "does not apply" in outs.card["check_every"]
    with pytest.raises(ErasekitError, match="concept_images"):
        run_attack(shapes_pipe, None, prompts, [3, 4], "inversion", cfg, "circle")


def test_inversion_restarts_keep_per_prompt_the_first_flagged_else_the_lowest_loss(shapes_pipe, monkeypatch):
    cfg = AttackConfig(inversion={"steps": 4}, restarts=2, seed=5, **TINY)
    seeds = []

    def learn(pipe, x0, opts, seed, bar=None):  # restart r: embeddings filled with 100 r, final loss 1 - r / 2
        seeds.append(seed)
        r = (seed - 5) // attacks.RESTART_SEED
        return torch.full((1, 64), 100.0 * r), torch.full((opts.steps,), 1.0 - r / 2)

    def draw(pipe, prompts, ss, embs, modes, concept, sampling):  # an image tells its seed and restart
        return torch.stack([torch.full((3, 32, 32), float(s) + e[0, 0].item()) for s, e in zip(ss, embs)])

    monkeypatch.setattr(attacks.inversion, "learn", learn)
    monkeypatch.setattr(attacks, "draw_embedded", draw)
    prompts = ["a red circle on a blue background", "a green circle"]
    hits = {3.0, 103.0, 104.0}  # seed 3 at restart 0, and both seeds at restart 1

    def detector(images):
        return torch.tensor([images[i, 0, 0, 0].item() in hits for i in range(len(images))])

    outs = run_attack(shapes_pipe, None, prompts, [3, 4], "inversion", cfg, "circle", False, detector,
                      concept_images=circles(4, 1))  # fmt: skip
    assert seeds == [5, 5 + attacks.RESTART_SEED]
    assert [o.embeddings[0, 0].item() for o in outs] == [0.0, 100.0]  # the first restart that worked, per prompt
    assert [o.loss for o in outs] == [1.0, 0.5] and outs.card["restarts"] == 2
    assert judge(outs, detector)["asr"] == 1.0
    outs = run_attack(shapes_pipe, None, prompts, [3, 4], "inversion", cfg, "circle", concept_images=circles(4, 1))
    assert [o.embeddings[0, 0].item() for o in outs] == [100.0, 100.0]  # no detector: the lowest final loss
    assert "lowest final loss" in outs.card["restart_rule"]


def test_ring_a_bell(shapes_pipe):
    tok, te = shapes_pipe.tokenizer, shapes_pipe.text_encoder
    pairs = ring_a_bell.concept_pairs(PROMPTS, "circle", ["a {} shown"])
    assert pairs == [(PROMPTS[0], "a red on a blue background"), (PROMPTS[1], "a"), ("a circle shown", "a shown")]
    d = ring_a_bell.concept_direction(te, tok, pairs)
    assert d.shape == (tok.model_max_length, te.config.hidden_size) and d.norm() > 0
    opts = ring_a_bell.RingABellConfig(population=16, generations=1, k=4)
    bases = [p for _, p in pairs[:2]]
    targets = encode(te, token_ids(tok, bases)) + 3.0 * d
    allowed = attacks.search_space(tok, english_words(), ["circle"])
    first = ring_a_bell.search(te, tok, bases, targets, allowed, 4, opts, torch.Generator().manual_seed(0))[1]
    opts20 = opts.model_copy(update={"generations": 20})
    later = ring_a_bell.search(te, tok, bases, targets, allowed, 4, opts20, torch.Generator().manual_seed(0))[1]
    assert (later <= first).all() and (later < first).any()  # elitism: the best never gets worse
    cfg = AttackConfig(ring_a_bell={"population": 8, "generations": 2}, **TINY)
    outs = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "ring-a-bell", cfg, "circle", vocabulary=english_words())
    k = outs.card["k"]
    assert k == min(16, tok.model_max_length - len(tok(bases[0]).input_ids))
    for o, base in zip(outs, bases, strict=True):
        assert len(o.tokens) == k and set(o.tokens) <= set(english_words())  # real words
        assert o.adversarial_prompt == f"{base} {' '.join(o.tokens)}".strip() and "circle" not in o.adversarial_prompt
    assert outs.card["search_space"]["size"] == len(allowed)


def test_replay_reproduces_a_token_attack(shapes_pipe, tmp_path):
    cfg = AttackConfig(token={"steps": 2}, **TINY)
    outs = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "token", cfg, "circle", vocabulary=english_words())
    save_outcomes(outs, tmp_path / "token")
    again = replay(shapes_pipe, tmp_path / "token")
    assert [o.adversarial_prompt for o in again] == [o.adversarial_prompt for o in outs]
    assert [o.tokens for o in again] == [o.tokens for o in outs]
    for a, b in zip(outs, again, strict=True):
        torch.testing.assert_close(a.image_after, b.image_after)
        torch.testing.assert_close(a.image_before, b.image_before)
    assert again.card["source"]["kind"] == "token" and judge(again, CircleDetector())["n"] == 2


def test_replay_injects_saved_embeddings_and_checks_their_width(shapes_pipe, tmp_path):
    cfg = AttackConfig(inversion={"steps": 2}, **TINY)
    outs = run_attack(shapes_pipe, None, PROMPTS, [3, 4], "inversion", cfg, "circle", concept_images=circles(4, 2))
    save_outcomes(outs, tmp_path / "inv")
    again = replay(shapes_pipe, tmp_path / "inv")
    for a, b in zip(outs, again, strict=True):
        torch.testing.assert_close(a.image_after, b.image_after)
        torch.testing.assert_close(a.embeddings, b.embeddings)
    image = torch.zeros(3, 32, 32)
    wide = AttackOutcome("a circle", 0, "soft", "<adv> a circle", 0.0, image, image, embeddings=torch.zeros(1, 32),
                         mode="prefix_k")  # fmt: skip
    save_outcomes(AttackOutcomes([wide], {"kind": "soft"}), tmp_path / "wide")
    with pytest.raises(ErasekitError, match="hidden size is 64"):
        replay(shapes_pipe, tmp_path / "wide")
    with pytest.raises(ErasekitError, match="no saved attack"):
        replay(shapes_pipe, tmp_path / "missing")


@pytest.mark.slow
def test_inversion_brings_circles_back_on_the_unerased_model(shapes_pipe):
    """CCE on the bundled model with 300 steps on 20 rendered circles: the learned token alone, in place of
    'circle' in 10 held-out prompts, draws circles (the issue's bar: >= 90 % on 50 prompts at the defaults)."""
    ps = target_set("circle", 10, split="heldout", seed=0)
    t0 = time.perf_counter()
    outs = run_attack(shapes_pipe, None, ps.prompts, ps.seeds, "inversion", AttackConfig(), "circle",
                      concept_images=circles(20, 7))  # fmt: skip
    res = judge(outs, CircleDetector())
    print(f"inversion on the unerased model: {res['post_attack_rate']:.0%} circles ({time.perf_counter() - t0:.0f} s)")
    assert all(o.mode == "replace_k" for o in outs)
    assert res["post_attack_rate"] >= 0.8
