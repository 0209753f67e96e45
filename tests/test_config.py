"""Options and recipes: one merge rule (recipe < --config YAML < --set < flags), one-line errors, the shipped
recipes (listed, printed, valid, complete) and what they resolve to (the old shapes defaults, the authors' SD
defaults)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
import yaml
from cli_runner import erasekit
from PIL import Image

from erasekit.bench import BenchConfig, row_config
from erasekit.config import (
    config_hash,
    deep_merge,
    list_recipes,
    load_config,
    load_recipe,
    parse_sets,
    read_yaml,
    recipe_path,
    resolve,
)
from erasekit.domains import domain_for, eval_config, method_config
from erasekit.errors import ErasekitError
from erasekit.eval.harness import EvalConfig
from erasekit.methods import METHODS, load_method
from erasekit.methods.advunlearn import AdvUnlearnConfig
from erasekit.methods.esd import EsdConfig

RECIPES = Path(str(resources.files("erasekit").joinpath("recipes")))
NOT_IN_RECIPES = {"concepts", "gradient_checkpointing"}  # the command line's; memory for time, same result
OLD = json.loads((Path(__file__).parent / "data" / "old_shapes_configs.json").read_text())
SD = "CompVis/stable-diffusion-v1-4"  # a hub id: only its name is read here, nothing is downloaded


def test_layers_merge_in_order_and_nested_keys_merge_key_by_key(tmp_path) -> None:
    recipe = {"gamma": 1.0, "warmup": 3, "lr": 0.5, "attack": {"k": 3, "steps": 10, "lr": 0.01}}
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("gamma: 0.3\nwarmup: 4\nattack:\n  lr: 0.02\n  k: 2\n")
    sets = parse_sets(["attack.k=4", "warmup=5", "lr=0.25"])
    flags = {"concepts": ["circle"], "lr": 0.125, "attack": {"steps": 7}}
    cfg = resolve(AdvUnlearnConfig, recipe, read_yaml(yaml_file), sets, flags)
    assert (cfg.gamma, cfg.warmup, cfg.lr) == (0.3, 5, 0.125)  # yaml > recipe, --set > yaml, flag > --set
    assert (cfg.attack.k, cfg.attack.lr, cfg.attack.steps) == (4, 0.02, 7)  # per nested key, the same order
    assert cfg.attack.optimizer == "signed_adam"  # what no layer names keeps the class default
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"c": 3}, "d": 4}) == {"a": {"b": 1, "c": 3}, "d": 4}
    assert deep_merge({"a": {"b": 1}}, {"a": None}) == {"a": None}  # a non-mapping replaces a mapping
    assert parse_sets(["a.b.c=[1, 2]", "s=text", "n=null"]) == {"a": {"b": {"c": [1, 2]}}, "s": "text", "n": None}
    steps = load_config(EsdConfig, None, {"concepts": ["x"], "steps": None}).steps  # a None flag: not given
    assert steps == EsdConfig.model_fields["steps"].default


def test_method_config_applies_the_rule_over_the_recipe(tmp_path) -> None:
    yaml_file = tmp_path / "cfg.yaml"
    yaml_file.write_text("gamma: 0.3\nwarmup: 4\nattack:\n  lr: 0.02\n")
    cfg, name = method_config(
        domain_for("shapes"), "advunlearn", ["circle"], None, yaml_file,
        parse_sets(["warmup=5", "attack.k=2"]), {"steps": 9, "lr": None},
    )  # fmt: skip
    recipe = load_recipe("shapes/advunlearn")
    assert name == "shapes/advunlearn" and (cfg.steps, cfg.warmup, cfg.gamma) == (9, 5, 0.3)
    assert (cfg.lr, cfg.attack.steps) == (recipe["lr"], recipe["attack"]["steps"])  # None = not given
    assert (cfg.attack.k, cfg.attack.lr) == (2, 0.02) and cfg.concepts == ["circle"]
    own = tmp_path / "mine.yaml"  # --recipe FILE: a user's own recipe file
    own.write_text(yaml.safe_dump({**load_recipe("shapes/esd"), "eta": 2.0}))
    cfg, name = method_config(domain_for("shapes"), "esd", ["circle"], str(own))
    assert name == str(own) and cfg.eta == 2.0


def test_eval_and_command_options_follow_the_same_rule(tmp_path, monkeypatch, capsys) -> None:
    yaml_file = tmp_path / "eval.yaml"
    yaml_file.write_text("batch_size: 8\nn_target: 5\nattack_options:\n  soft: {steps: 5}\n")
    cfg = eval_config("shapes", yaml_file, {"n_target": 3})
    assert (cfg.batch_size, cfg.n_target, cfg.sample_steps) == (8, 3, 25)  # recipe < yaml < flags
    assert cfg.attack_options == {"batch_size": 32, "soft": {"steps": 5}}  # the recipe's key kept beside yours
    assert eval_config(str(tmp_path), None, {}).guidance == 7.5  # a folder: the sd evaluation recipe
    gen = tmp_path / "gen.yaml"
    gen.write_text("n: 3\nseed: 5\nguidance: 2.0\nsample_steps: 9\n")
    out = tmp_path / "grid.png"
    code, stdout, stderr, _ = erasekit(
        monkeypatch, capsys, "generate", "a red circle", "--config", gen, "--set", "n=2", "--set", "seed=6",
        "--set", "sample_steps=3", "--sample-steps", "1", "-o", out, "--json",
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert (summary["n"], summary["seed"], summary["guidance"], summary["sample_steps"]) == (2, 6, 2.0, 1)
    assert Image.open(out).size == (128, 64)  # two tiles


@pytest.mark.parametrize(
    ("cls", "layers", "message"),
    [
        (EsdConfig, [{"concepts": ["c"], "stpes": 3}], "unknown option(s) ['stpes'] for EsdConfig"),
        (EsdConfig, [{"concepts": ["c"], "steps": "many"}], "bad value for 'steps'"),
        (EsdConfig, [{"concepts": []}], "bad value for 'concepts'"),
        (AdvUnlearnConfig, [{"concepts": ["c"]}, {"attack": {"k": 0}}], "bad value for 'attack.k'"),
        (AdvUnlearnConfig, [{"concepts": ["c"], "schedule": "fast"}], "bad value for 'schedule'"),
        (AdvUnlearnConfig, [{"concepts": ["c"], "xt_mode": "ddim"}], "unknown option(s) ['xt_mode']"),  # schedule's
        (EvalConfig, [{"steps": 2}], "unknown option(s) ['steps'] for EvalConfig"),  # sampling is sample_steps
    ],
)
def test_unknown_keys_and_bad_values_are_one_line_errors(cls, layers, message) -> None:
    with pytest.raises(ErasekitError) as err:
        resolve(cls, *layers)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_misspelt_nested_option_is_an_error() -> None:
    with pytest.raises(ErasekitError, match="attack.stpes"):
        resolve(AdvUnlearnConfig, {"concepts": ["c"]}, parse_sets(["attack.stpes=5"]))


def test_bad_files_and_set_items_are_one_line_errors(tmp_path) -> None:
    cases = {"list.yaml": "- a\n- b\n", "bad.yaml": "a: [1,\n"}
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
    for path, message in ((tmp_path / "list.yaml", "must hold a mapping"), (tmp_path / "bad.yaml", "not valid YAML"),
                          (tmp_path / "none.yaml", "not found")):  # fmt: skip
        with pytest.raises(ErasekitError, match=message):
            read_yaml(path)
    for items, message in ((["gamma"], "key=value"), (["=1"], "key=value"), (["a=[1,"], "quote it")):
        with pytest.raises(ErasekitError, match=message):
            parse_sets(items)
    with pytest.raises(ErasekitError, match="unknown recipe 'shapes/nope'.*shapes/advunlearn"):
        recipe_path("shapes/nope")


def test_config_hash_fingerprints_the_resolved_options() -> None:
    a = resolve(EsdConfig, {"steps": 2, "concepts": ["c"]})
    assert config_hash(a) == config_hash(EsdConfig(concepts=["c"], steps=2)) and len(config_hash(a)) == 64
    assert config_hash(a) != config_hash(EsdConfig(concepts=["c"], steps=3))
    assert config_hash(a) != config_hash(EsdConfig(concepts=["c"], steps=2, anchor=""))  # nested / list values too


def test_recipes_command_lists_and_prints_the_shipped_recipes(monkeypatch, capsys) -> None:
    shipped = [f"{p.parent.name}/{p.stem}" for p in sorted(RECIPES.glob("*/*.yaml"))]
    assert [r["name"] for r in list_recipes()] == shipped and len(shipped) >= 14
    code, out, _, _ = erasekit(monkeypatch, capsys, "recipes")
    listed = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert code == 0 and listed == shipped
    assert all(r["about"] for r in list_recipes())  # every recipe says what it is in its first comment line
    code, out, _, _ = erasekit(monkeypatch, capsys, "recipes", "shapes/advunlearn")
    assert code == 0 and yaml.safe_load(out) == load_recipe("shapes/advunlearn")
    code, _, _, errors = erasekit(monkeypatch, capsys, "recipes", "shapes/nope")
    assert code == 2 and len(errors) == 1 and "unknown recipe" in errors[0]


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*/*.yaml")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_recipe_validates_and_writes_every_option_out(path: Path) -> None:
    kind = path.stem.split("-")[0]  # <method>[-variant].yaml, evaluate.yaml or bench-<variant>.yaml
    assert kind in (*METHODS, "evaluate", "bench")
    recipe = read_yaml(path)
    if kind == "bench":  # every row's options validate against the row's own method recipe
        bench_cfg = resolve(BenchConfig, recipe)
        assert set(recipe) == set(BenchConfig.model_fields) and set(bench_cfg.methods) <= set(bench_cfg.rows)
        resolve(EvalConfig, read_yaml(path.parent / "evaluate.yaml"), bench_cfg.evaluation)
        for row in bench_cfg.methods:  # as the bench resolves a row's config
            row_config(bench_cfg, row)
        return
    cls = EvalConfig if kind == "evaluate" else load_method(kind)[1]
    if kind == "evaluate":
        cfg = resolve(EvalConfig, recipe)
        assert cfg.sample_steps == recipe["sample_steps"]
        return
    domain = domain_for("shapes" if path.parent.name == "shapes" else SD)
    concept = "circle" if domain.name == "shapes" else "church"
    cfg = resolve(cls, domain.recipe_options(recipe, [concept]), {"concepts": [concept]})
    assert set(recipe) == set(cls.model_fields) - NOT_IN_RECIPES  # a changed class default cannot move a recipe
    for key, value in recipe.items():
        if key != "anchor" and not isinstance(value, dict):
            assert getattr(cfg, key) == value, key


def old_config(name: str, drop_xt_mode: bool) -> dict:
    old = dict(OLD[name])
    if drop_xt_mode:  # AdvUnlearn's x_t source follows its schedule; the old field repeated it
        old.pop("xt_mode")
    return old


@pytest.mark.parametrize(
    ("old", "method", "recipe", "flags"),
    [
        ("esd", "esd", None, {}),
        ("advunlearn", "advunlearn", None, {}),
        ("bench-esd", "esd", "shapes/esd-paper", {"seed": 0}),
        ("bench-atesd", "advunlearn", "shapes/advunlearn-atesd", {"seed": 0}),
    ],
)
def test_shapes_recipes_resolve_to_the_old_defaults(old, method, recipe, flags) -> None:
    """The ClassVar defaults (SHAPES_DEFAULTS) before issue 14, frozen in tests/data: same options, same prompts."""
    cfg, _ = method_config(domain_for("shapes"), method, ["circle"], recipe, None, None, flags)
    new = cfg.model_dump()
    assert new.pop("gradient_checkpointing") is False
    assert new.pop("ema") is None  # added after the freeze; None is the last iterate, as before
    assert new.pop("attack_widths", []) == []  # added after the freeze; [] is every c* at attack.k, as before
    assert new == old_config(old, method == "advunlearn")


@pytest.mark.parametrize(
    ("concept", "kind", "gamma", "part"),
    [("nudity", "nudity", 0.3, "noxattn"), ("church", "object", 0.5, "noxattn"), ("van gogh", "style", 0.5, "xattn")],
)
def test_sd_recipes_carry_the_authors_defaults(concept, kind, gamma, part) -> None:
    sd = domain_for(SD)
    adv, name = method_config(sd, "advunlearn", [concept])
    assert name == f"sd/advunlearn-{kind}"
    assert (adv.component, adv.part, adv.layers) == ("text_encoder", "all", None)
    assert (adv.steps, adv.lr, adv.warmup, adv.gamma, adv.eta) == (1000, 1e-5, 200, gamma, 1.0)
    assert (adv.start_guidance, adv.ddim_steps, adv.batch_size, adv.anchor) == (3.0, 50, 1, None)
    assert (adv.attack.mode, adv.attack.k, adv.attack.steps, adv.attack.lr) == ("prefix_k", 1, 30, 1e-3)
    assert adv.attack.optimizer == "signed_adam" and adv.attack_pool == 1  # the authors' fast_at, one c*
    esd, name = method_config(sd, "esd", [concept])
    assert name == f"sd/esd-{kind}" and (esd.component, esd.part) == ("unet", part)  # ESD-u / ESD-x as the paper
    assert (esd.steps, esd.eta, esd.lr, esd.start_guidance, esd.ddim_steps) == (1000, 1.0, 1e-5, 3.0, 50)
    assert (esd.gamma, esd.retain_prompts, esd.xt_mode) == (0.0, [], "ddim")
