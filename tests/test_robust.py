"""The robust method on the shapes world with tiny schedules: both parts written, stage 1 reused by its hash, the
inversion pool filled against the current model, stage 2's targets from the ORIGINAL encoder."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from erasekit import load_pipeline
from erasekit.attacks.inversion import learn
from erasekit.config import config_hash
from erasekit.domains import domain_for, method_config, run_method
from erasekit.errors import ErasekitError
from erasekit.methods import artifact_parts, erased_parts, load_erased, robust
from erasekit.methods.robust import RobustTrainer, stage1_config
from erasekit.text import Slots, encode, encode_injected, token_embedding, token_ids

TINY = {
    "steps": 3, "checkpoint_every": 1, "cache_size": 1, "ddim_steps": 4, "retain_batch": 2, "invert_every": 2,
    "inversion": {"steps": 2}, "attack": {"steps": 1},
    "stage1": {"steps": 2, "warmup": 1, "cache_size": 1, "ddim_steps": 4, "retain_batch": 2, "attack": {"steps": 1}},
}  # fmt: skip


def test_robust_writes_both_parts_and_reuses_stage1(tmp_path, monkeypatch):
    domain = domain_for("shapes")
    cfg, name = method_config(domain, "robust", ["circle"], None, None, TINY)
    assert name == "shapes/robust" and cfg.anchor == ["square", "star"] and cfg.component == "unet"
    out = tmp_path / "r"
    summary = run_method(domain, "robust", cfg, out, progress=False)
    assert set(artifact_parts(out)) == {"text_encoder", "unet"}
    assert summary["component"] == "text_encoder+unet" and summary["unet_calls"] > summary["stage1"]["unet_calls"]
    first = json.loads((out / "stage1" / "erasekit.json").read_text())
    assert first["bank_unet_calls"] > 0 and summary["bank_unet_calls"] == 0  # stage 2 took stage 1's banks
    pool = load_file(str(out / "checkpoint" / "state.safetensors"))
    assert int(pool["inversion_pool.filled"]) == 2  # iterations 0 and 2 re-inverted (invert_every 2, warm-up 0)
    assert pool["inversion_pool.emb"][:2].abs().sum() > 0 and pool["inversion_pool.emb"][2:].abs().sum() == 0

    base = load_pipeline("shapes")
    erased = load_erased("shapes", erased_parts(out))
    changed = {
        n for n, p in erased.unet.named_parameters() if not torch.equal(p, dict(base.unet.named_parameters())[n])
    }
    assert changed and all("attn2" in n for n in changed)  # stage 2 trained cross-attention only (ESD-x)
    ids = token_ids(base.tokenizer, ["a circle"])
    assert not torch.allclose(encode(erased.text_encoder, ids), encode(base.text_encoder, ids))  # stage 1 in place

    # a second run with stage 2 changed reuses stage 1 (same hash), and says so
    again, _ = method_config(domain, "robust", ["circle"], None, None, {**TINY, "steps": 4})
    assert stage1_config(again) == stage1_config(cfg)
    (out / "checkpoint").rename(tmp_path / "old-checkpoint")

    trainer = robust.RobustTrainer

    def stage2_only(pipe, config, *args, **kwargs):
        if config.component == "text_encoder":
            raise AssertionError("stage 1 was retrained although its options did not change")
        return trainer(pipe, config, *args, **kwargs)

    monkeypatch.setattr(robust, "RobustTrainer", stage2_only)  # stage 1's trainer, as the robust module sees it
    second = run_method(domain, "robust", again, out, progress=False)
    stage1 = json.loads((out / "stage1" / "erasekit.json").read_text())
    assert second["stage1"]["seconds"] == stage1["seconds"] and second["steps"] == 4


def test_stage1_can_be_the_robust_training_on_the_text_encoder(tmp_path, monkeypatch):
    """`stage1_method: robust`: stage 1 trains the text encoder in front of the ORIGINAL UNet, with v* among its
    c_adv, each v* learned through the encoder as it is at that iteration."""
    domain = domain_for("shapes")
    over = {**TINY, "stage1_method": "robust", "steps": 1}
    over["stage1"] = {**TINY["stage1"], "inversion": {"steps": 1}, "invert_every": 1, "inversion_share": 1.0}
    with pytest.raises(ErasekitError, match="stage1 is not a valid RobustConfig.*must be at most 1"):
        method_config(domain, "robust", ["circle"], None, None, over)  # the recipe's unnamed share on top: > 1
    over["stage1"]["unnamed_share"] = 0.0
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, over)
    first = stage1_config(cfg)
    assert first.component == "text_encoder" and first.inversion_share == 1.0 and first.seed == cfg.seed
    seen = []

    def spy(pipe, x0, config, seed, start=None):  # what each inversion attacks: the encoder's state, the UNet's
        seen.append((pipe.text_encoder.training, sum(p.sum().item() for p in pipe.text_encoder.parameters())))
        return learn(pipe, x0, config, seed, start=start)

    monkeypatch.setattr(robust, "learn", spy)
    out = tmp_path / "r"
    run_method(domain, "robust", cfg, out, progress=False)
    stage1 = load_file(str(out / "stage1" / "checkpoint" / "state.safetensors"))
    assert int(stage1["inversion_pool.filled"]) == 1  # iteration 1 (after the 1-iteration warm-up) inverted
    assert json.loads((out / "stage1" / "erasekit.json").read_text())["method"] == "robust"
    base = load_pipeline("shapes")
    assert len(seen) == 2  # one inversion in stage 1, one in stage 2 (its iteration 0)
    assert seen[0][1] != sum(p.sum().item() for p in base.text_encoder.parameters())  # after warm-up's update
    erased = load_erased("shapes", erased_parts(out))
    ids = token_ids(base.tokenizer, ["a circle"])
    assert not torch.allclose(encode(erased.text_encoder, ids), encode(base.text_encoder, ids))
    with pytest.raises(ErasekitError, match="stage1 is not a valid AdvUnlearnConfig.*inversion_share"):  # checked early
        method_config(domain, "robust", ["circle"], None, None, {**over, "stage1_method": "advunlearn"})


def test_stage1_takes_the_shared_options_unless_it_sets_its_own():
    """Concepts, prompts, anchor and seed come from the top of the recipe; a key under `stage1` (here its own
    anchor) wins for stage 1 only, and stage 2 keeps the shared one."""
    domain = domain_for("shapes")
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, {**TINY, "seed": 5})
    first = stage1_config(cfg)
    assert (first.anchor, first.seed, first.prompts, first.concepts) == (["square", "star"], 5, cfg.prompts, ["circle"])
    own = {**TINY, "stage1": {**TINY["stage1"], "anchor": ["star"]}}
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, own)
    assert stage1_config(cfg).anchor == ["star"] and cfg.anchor == ["square", "star"]


def test_shipped_stage1_trains_unnamed_rows_and_learns_no_inversion(tmp_path, monkeypatch):
    """The shapes recipe's stage 1: the robust training on the text encoder with c* and unnamed rows only. With no
    row at a v*, stage 1 learns no inversion and never draws from its empty pool (stage 2 still inverts)."""
    domain = domain_for("shapes")
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, TINY)
    first = stage1_config(cfg)
    assert cfg.stage1_method == "robust" and first.component == "text_encoder"
    assert first.inversion_share == 0 and first.inversion_rows == 0 and first.unnamed_share > 0
    over = {**TINY, "stage1": {**TINY["stage1"], "unnamed_share": 1.0}}  # every stage-1 row unnamed after warm-up
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, over)
    inverted, unnamed = [], []
    real_unnamed = RobustTrainer.unnamed

    def spy_learn(pipe, x0, config, seed, start=None):
        inverted.append(pipe.unet.training)
        return learn(pipe, x0, config, seed, start=start)

    def spy_unnamed(self, n, g):
        unnamed.append((self.config.component, n))
        return real_unnamed(self, n, g)

    monkeypatch.setattr(robust, "learn", spy_learn)
    monkeypatch.setattr(RobustTrainer, "unnamed", spy_unnamed)
    out = tmp_path / "r"
    run_method(domain, "robust", cfg, out, progress=False)
    stage1 = load_file(str(out / "stage1" / "checkpoint" / "state.safetensors"))
    assert int(stage1["inversion_pool.filled"]) == 0
    assert ("text_encoder", first.batch_size) in unnamed  # stage 1's post-warm-up iteration: every row at a u
    assert len(inverted) == 2  # stage 2's iterations 0 and 2 only


def test_stage2_targets_come_from_the_original_encoder():
    domain = domain_for("shapes")
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, TINY)
    pipe = load_pipeline("shapes")
    original = load_pipeline("shapes").text_encoder
    with torch.no_grad():  # stand-in for stage 1: any change to the pipeline's own encoder
        for p in pipe.text_encoder.parameters():
            p.add_(0.01)
    images = domain.method_inputs("robust", cfg)["concept_images"]
    trainer = RobustTrainer(pipe, cfg, original, images)
    ids = token_ids(pipe.tokenizer, trainer.prompts)
    with torch.no_grad():
        assert torch.allclose(trainer.ctx_o, encode(original, ids))  # eq. 2 targets: original encoder
        assert not torch.allclose(trainer.context(ids), trainer.ctx_o)  # trained rows see the erased encoder
    assert trainer.x0.shape[0] == 32  # rendered circles, a training seed the evaluation's inversion never uses


def test_unnamed_rows_put_random_embeddings_in_the_concept_word_place():
    domain = domain_for("shapes")
    with pytest.raises(ErasekitError, match="bad RobustConfig: inversion_share"):
        method_config(domain, "robust", ["circle"], None, None, {**TINY, "inversion_share": 0.8, "unnamed_share": 0.3})
    one_width = {**TINY, "unnamed_noise": 0.0, "inversion_widths": []}  # u at inversion.k (widths: the test below)
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, one_width)
    pipe = load_pipeline("shapes")
    images = domain.method_inputs("robust", cfg)["concept_images"]
    trainer = RobustTrainer(pipe, cfg, load_pipeline("shapes").text_encoder, images)
    table = token_embedding(pipe.text_encoder).weight.detach()
    u, width = trainer.unnamed(6, torch.Generator().manual_seed(0))
    assert u.shape == (6, cfg.inversion.k, table.shape[1]) and width.tolist() == [cfg.inversion.k] * 6
    assert all((table == row).all(1).any() for row in u[:, 0])  # no noise: real vocabulary tokens
    trainer.config = cfg.model_copy(update={"unnamed_noise": 1.0})
    noisy, _ = trainer.unnamed(6, torch.Generator().manual_seed(0))
    assert not any((table == row).all(1).any() for row in noisy[:, 0])  # with noise: between the tokens
    # every concept row unnamed: the trained model sees the prompts with u where "circle" was
    trainer.config = cfg.model_copy(update={"inversion_share": 0.0, "unnamed_share": 1.0, "warmup": 0})
    g = torch.Generator().manual_seed(1)
    trainer.build_bank()
    x, t, prompt = trainer.sample_xt(3, g)
    ctx = trainer.concept_rows(0, x, t, prompt, g)[3].detach()  # (the inner attack needs gradients)
    named = trainer.context(trainer.ids[prompt]).detach()
    for b, pos in enumerate(trainer.inv_slots[1].positions[prompt, 0].tolist()):  # causal encoder: the words before
        assert torch.allclose(ctx[b, :pos], named[b, :pos], atol=1e-5)  # the concept are as named (c* is a prefix)
        assert not torch.allclose(ctx[b, pos], named[b, pos], atol=1e-3)  # the concept's place is not


def rows_on_own_bank(over: dict, bank: str) -> tuple[RobustTrainer, torch.Tensor, dict]:
    """A stage-2 trainer with `over`, the points of its bank `bank` (two trajectories per training prompt, checked)
    and what one loss step's objective saw (3 rows)."""
    domain = domain_for("shapes")
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, {**TINY, "inversion_share": 0.0, **over})
    images = domain.method_inputs("robust", cfg)["concept_images"]
    trainer = RobustTrainer(load_pipeline("shapes"), cfg, load_pipeline("shapes").text_encoder, images)
    trainer.build_bank()
    cached = getattr(trainer, bank)
    n = len(trainer.prompts)
    assert len(cached.latents) == 2 * n and cached.prompt.tolist() == 2 * list(range(n))
    assert not torch.allclose(cached.latents[:, -1], trainer.bank.latents[:1, -1])  # not the concept's trajectories
    seen = {}
    trainer.objective = lambda x, t, prompt, ctx, retain: seen.update(x=x, prompt=prompt, ctx=ctx) or x.sum()
    trainer.loss(0, torch.Generator().manual_seed(1))
    return trainer, cached.latents.flatten(0, 1), seen


def test_unnamed_rows_can_take_the_unnamed_prompts_own_trajectories():
    over = {"unnamed_share": 1.0, "unnamed_xt": "unnamed", "batch_size": 3}
    trainer, points, seen = rows_on_own_bank(over, "unnamed_bank")  # points: every x_t the unnamed bank holds
    assert len(seen["x"]) == 3 and all((points == x).flatten(1).all(1).any() for x in seen["x"])  # all rows unnamed
    for b in range(3):  # each row's x_t is a point of an unnamed trajectory, and its context names no circle
        assert (points == seen["x"][b]).flatten(1).all(1).any()
        named = trainer.context(trainer.ids[seen["prompt"][b : b + 1]]).detach()[0]
        pos = int(trainer.inv_slots[1].positions[seen["prompt"][b], 0])
        assert not torch.allclose(seen["ctx"][b, pos].detach(), named[pos], atol=1e-3)


def test_removed_rows_see_the_prompts_without_the_concept_word_on_their_own_trajectories():
    with pytest.raises(ErasekitError, match="removed_share must be at most 1"):
        method_config(
            domain_for("shapes"), "robust", ["circle"], None, None, {**TINY, "unnamed_share": 0.5, "removed_share": 0.6}
        )
    trainer, points, seen = rows_on_own_bank(
        {"unnamed_share": 0.0, "removed_share": 1.0, "batch_size": 3}, "removed_bank"
    )
    pipe = trainer.pipe
    for b in range(3):  # each row: a point of a trajectory of the prompts without "circle", and that prompt's context
        assert (points == seen["x"][b]).flatten(1).all(1).any()
        text = trainer.prompts[int(seen["prompt"][b])]
        assert "circle" in text
        unsaid = " ".join(text.replace("circle", "").split())
        expected = encode(pipe.text_encoder, token_ids(pipe.tokenizer, [unsaid]))[0]
        assert torch.allclose(seen["ctx"][b].detach(), expected, atol=1e-5)


def test_inversion_restarts_afresh_every_nth_time_and_else_continues_from_the_newest(monkeypatch):
    domain = domain_for("shapes")
    cfg, _ = method_config(
        domain, "robust", ["circle"], None, None, {**TINY, "inversion_restart": 2, "inversion_widths": []}
    )
    pipe = load_pipeline("shapes")
    images = domain.method_inputs("robust", cfg)["concept_images"]
    trainer = RobustTrainer(pipe, cfg, load_pipeline("shapes").text_encoder, images)
    starts = []  # one width, so each v* can go on from the one before (several widths: the test below)

    def record(pipe, x0, config, seed, start=None):
        starts.append(start)
        return torch.full((config.k, trainer.pool.emb.shape[-1]), float(len(starts))), torch.zeros(1)

    monkeypatch.setattr(robust, "learn", record)
    for step in range(4):
        trainer.invert(step)
    assert starts[0] is None and starts[2] is None  # the 1st and 3rd start afresh
    assert torch.equal(starts[1], torch.full_like(starts[1], 1.0))  # the 2nd continues from the 1st's v*
    assert torch.equal(starts[3], torch.full_like(starts[3], 3.0))  # the 4th from the 3rd's


def test_inversion_widths_cycle_and_each_row_uses_its_own_width(monkeypatch):
    domain = domain_for("shapes")
    over = {**TINY, "inversion_widths": [1, 3], "inversion_restart": 3, "inversion_pool": 4}
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, over)
    images = domain.method_inputs("robust", cfg)["concept_images"]
    trainer = RobustTrainer(load_pipeline("shapes"), cfg, load_pipeline("shapes").text_encoder, images)
    starts = []

    def record(pipe, x0, config, seed, start=None):
        starts.append(None if start is None else start.clone())
        return torch.full((config.k, trainer.pool.emb.shape[-1]), float(len(starts))), torch.zeros(1)

    monkeypatch.setattr(robust, "learn", record)
    for step in range(4):  # widths 1, 3, 1, 3; the 1st and 4th start afresh
        trainer.invert(step)
    assert trainer.pool.emb.shape[1] == 3 and trainer.pool.width.tolist() == [1, 3, 1, 3]
    assert starts[0] is None and starts[3] is None
    assert starts[1] is None  # no earlier v* of width 3 to continue from
    assert starts[2].shape[0] == 1 and torch.equal(starts[2], torch.full_like(starts[2], 1.0))  # the 1st's, width 1
    assert (trainer.pool.emb[0, 1:] == 0).all()  # a 1-token v* leaves the slots past its width empty
    u, width = trainer.unnamed(64, torch.Generator().manual_seed(0))
    assert u.shape[1] == 3 and set(width.tolist()) == {1, 3}  # unnamed rows draw their width
    prompt = torch.tensor([0, 1, 2])
    emb, width = trainer.pool.emb[[1, 0, 1]], trainer.pool.width[[1, 0, 1]]
    ctx = trainer.injected(prompt, emb, width).detach()
    for b in range(3):  # each row is its prompt with its v*'s first k tokens in the word's place
        k = int(width[b])
        slots = trainer.inv_slots[k]
        one = Slots(slots.ids[prompt[b : b + 1]], slots.positions[prompt[b : b + 1]], slots.mode)
        expected = encode_injected(trainer.pair.text_encoder, one, emb[b : b + 1, :k]).detach()
        assert torch.allclose(ctx[b : b + 1], expected, atol=1e-5)


def test_inversion_continues_from_a_given_start():
    pipe = load_pipeline("shapes")
    x0 = torch.randn(2, pipe.unet.config.in_channels, pipe.unet.config.sample_size, pipe.unet.config.sample_size)
    start = token_embedding(pipe.text_encoder).weight[5:6].detach().clone()
    config = robust.InversionConfig(steps=1, lr=1e-4)
    emb, _ = robust.learn(pipe, x0, config, seed=0, start=start)
    assert emb.shape == start.shape and 0 < (emb - start).abs().max() <= 1.5e-4  # one Adam step from start
    assert torch.equal(start, token_embedding(pipe.text_encoder).weight[5:6])  # the start is not changed in place


def test_inversion_rows_come_on_top_of_the_batch():
    domain = domain_for("shapes")
    over = {**TINY, "inversion_share": 0.0, "inversion_rows": 2, "batch_size": 3, "warmup": 0}
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, over)
    images = domain.method_inputs("robust", cfg)["concept_images"]
    trainer = RobustTrainer(load_pipeline("shapes"), cfg, load_pipeline("shapes").text_encoder, images)
    trainer.build_bank()
    seen = {}
    trainer.objective = lambda x, t, prompt, ctx, retain: seen.update(x=x, t=t, prompt=prompt, ctx=ctx) or x.sum()
    trainer.loss(0, torch.Generator().manual_seed(1))
    assert len(seen["x"]) == len(seen["t"]) == len(seen["prompt"]) == len(seen["ctx"]) == 5
    assert trainer.pool.members() == 1  # step 0 after warm-up: one inversion learned
    v = trainer.pool.emb[:1].expand(2, -1, -1)
    extra = trainer.injected(seen["prompt"][3:], v, trainer.pool.width[[0, 0]]).detach()
    assert torch.allclose(seen["ctx"][3:].detach(), extra, atol=1e-5)  # the two extra rows: v* in the word's place
    for b in range(3):  # the batch's rows keep c*: the concept word named after the soft prefix
        named = trainer.context(trainer.ids[seen["prompt"][b : b + 1]]).detach()[0]
        pos = int(trainer.inv_slots[1].positions[seen["prompt"][b], 0])
        assert not torch.allclose(seen["ctx"][b, pos].detach(), extra[0, pos], atol=1e-3)
        assert not torch.allclose(seen["ctx"][b].detach(), named, atol=1e-4)  # c*, not the bare prompt


def test_a_soft_pass_continues_from_stage1_with_the_original_targets_and_is_reused(tmp_path, monkeypatch):
    """`stage1_soft`: an AdvUnlearn pass on stage 1's encoder (not the base one), eq. 2 targets from the ORIGINAL
    encoder; the artifact's encoder is the pass's; a rerun reuses both text-encoder stages."""
    domain = domain_for("shapes")
    over = {**TINY, "steps": 1, "stage1_soft": {**TINY["stage1"], "warmup": 0, "steps": 2}}
    cfg, _ = method_config(domain, "robust", ["circle"], None, None, over)
    starts = []  # (stage, parameter sum of the encoder it starts from, its original encoder)
    soft_trainer, trainer = robust.AdvUnlearnTrainer, robust.RobustTrainer

    def spy_pass(pipe, config, dtype=None, text_encoder_o=None, banks=None):
        starts.append(("pass", sum(p.sum().item() for p in pipe.text_encoder.parameters()), text_encoder_o))
        return soft_trainer(pipe, config, dtype, text_encoder_o, banks)

    def spy_stage1(pipe, config, text_encoder_o, *args):
        if config.component == "text_encoder":
            starts.append(("stage1", sum(p.sum().item() for p in pipe.text_encoder.parameters()), text_encoder_o))
        return trainer(pipe, config, text_encoder_o, *args)

    monkeypatch.setattr(robust, "AdvUnlearnTrainer", spy_pass)
    monkeypatch.setattr(robust, "RobustTrainer", spy_stage1)
    out = tmp_path / "r"
    run_method(domain, "robust", cfg, out, progress=False)
    base = load_pipeline("shapes")
    first = load_erased("shapes", erased_parts(text_encoder=out / "stage1")).text_encoder
    base_sum = sum(p.sum().item() for p in base.text_encoder.parameters())
    assert [s[0] for s in starts] == ["stage1", "pass"] and starts[0][1] == pytest.approx(base_sum)
    assert starts[1][1] == pytest.approx(sum(p.sum().item() for p in first.parameters()))  # pass starts at stage 1
    ids = token_ids(base.tokenizer, ["a circle"])
    assert torch.allclose(encode(starts[1][2], ids), encode(base.text_encoder, ids))  # targets: original encoder
    final = load_erased("shapes", erased_parts(out)).text_encoder
    soft = load_erased("shapes", erased_parts(text_encoder=out / "stage1_soft")).text_encoder
    assert torch.equal(encode(final, ids), encode(soft, ids)) and not torch.allclose(
        encode(final, ids), encode(first, ids)
    )
    info = json.loads((out / "stage1_soft" / "erasekit.json").read_text())
    assert info["after_sha256"] == config_hash(stage1_config(cfg))

    (out / "checkpoint").rename(tmp_path / "old-checkpoint")
    starts.clear()
    run_method(domain, "robust", cfg, out, progress=False)
    assert starts == []  # neither text-encoder stage was retrained
    with pytest.raises(ErasekitError, match="stage1_soft is not a valid AdvUnlearnConfig.*inversion_share"):
        method_config(domain, "robust", ["circle"], None, None, {**over, "stage1_soft": {"inversion_share": 0.5}})
