"""ItD's inputs on Stable Diffusion: the user's prompt files, else the lists shipped in erasekit/data/itd/.

    sd_itd_corpus(cfg)              -> SAE training prompts: cfg.prompts_file, else the shipped corpus.txt
    sd_itd_inputs(concepts, cfg)    -> ItdInputs for erasekit.methods.itd.erase
    shipped_concepts()              -> names with a shipped prompt list (concepts/<name>.txt)

Per target concept c (case-insensitive; "Van Gogh" reads concepts/van_gogh.txt):
    with c          cfg.target_prompts, else concepts/<c>.txt
    without c       cfg.other_prompts, else others.txt less the prompts naming c; plus the other targets'
                    prompts (a Picasso prompt must not fire the Van Gogh gate)
    retain          cfg.retain, else by kind: nudity -> clothed people; an object -> the Imagenette classes
                    (AdvUnlearn's objects among them); a style -> the other shipped painters; the patch's targets
                    left out, so that eq. 5 removes the features a target shares with its neighbours
    retain prompts  concepts/<r>.txt, else the kind's templates filled with r
Selection prompts (eq. 4) come from the target's calibration half, never from the bare word. Each list is
shuffled with a seed and halved: even positions calibrate the gate, odd ones report it (held out); each side
keeps at most cfg.calib_prompts. Seeds (offsets from cfg.seed): targets +200 + i, negatives +300 + i (+300 for
the patch as a whole), retain concepts +150 + i (sorted by name).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from erasekit.errors import ErasekitError
from erasekit.methods.itd import ItdConfig, SaeConfig
from erasekit.methods.itd.activations import read_prompts
from erasekit.methods.itd.inputs import GATE_SPLITS, ItdInputs, Sides

DATA = Path(str(resources.files("erasekit").joinpath("data", "itd")))
IMAGENETTE = (
    "tench", "english springer", "cassette player", "chain saw", "church", "french horn", "garbage truck",
    "gas pump", "golf ball", "parachute",
)  # fmt: skip
PAINTERS = ("van gogh", "picasso", "monet", "rembrandt", "andy warhol")
KINDS: dict[str, str] = {"nudity": "nudity", **dict.fromkeys(IMAGENETTE, "object"), **dict.fromkeys(PAINTERS, "style")}
RETAIN: dict[str, tuple[str, ...]] = {"nudity": ("clothed people",), "object": IMAGENETTE, "style": PAINTERS}
# Prompts for a retain concept without a shipped list, phrased like the shipped targets of its kind.
STYLE_SUBJECTS = (
    "a village at night", "a portrait of a woman", "a vase of flowers", "a harbour with boats", "a garden",
    "a city street", "a still life with fruit", "a landscape with trees",
)  # fmt: skip
TEMPLATES: dict[str, tuple[str, ...]] = {
    "object": (
        "a photo of {a} {r}", "{a} {r} in a field", "a close-up photo of {a} {r}", "{a} {r} on a city street",
        "a black and white photo of {a} {r}", "a painting of {a} {r}", "{a} {r} at sunset", "a drawing of {a} {r}",
    ),
    "style": tuple(
        p.replace("{s}", s)
        for p in ("{s}, painted by {r}", "a painting of {s} by {r}", "{s} in the style of {r}", "an artwork by {r} of {s}")
        for s in STYLE_SUBJECTS
    ),
    "other": (
        "a photo of {r}", "a picture of {r}", "{r}", "a painting of {r}", "a close-up of {r}", "an image of {r}",
        "{r} in a city", "{r} in nature",
    ),
}  # fmt: skip


def key(name: str) -> str:
    """A concept's lookup name: lower case, single spaces ("Van_Gogh" -> "van gogh")."""
    return " ".join(name.lower().replace("_", " ").replace("-", " ").split())


def _shipped(name: str) -> Path:
    return DATA / "concepts" / f"{key(name).replace(' ', '_')}.txt"


def shipped_concepts() -> list[str]:
    """The concept names that have a shipped prompt list."""
    return sorted(p.stem.replace("_", " ") for p in (DATA / "concepts").glob("*.txt"))


def sd_itd_corpus(cfg: SaeConfig) -> list[str]:
    """The SAE's training prompts: `cfg.prompts_file`, else the shipped demo corpus (data/itd/corpus.txt)."""
    return read_prompts(cfg.prompts_file or DATA / "corpus.txt")


def default_retain(concept: str, concepts: list[str]) -> list[str]:
    """The retain concepts of the concept's kind, less the patch's targets; none for a concept of unknown kind."""
    targets = {key(c) for c in concepts}
    return [r for r in RETAIN.get(KINDS.get(key(concept), ""), ()) if r not in targets]


def _retain_prompts(name: str, kind: str) -> list[str]:
    """Prompts that show retain concept `name`: its shipped list, else its kind's templates."""
    if _shipped(name).is_file():
        return read_prompts(_shipped(name))
    r = key(name)
    return [t.format(r=r, a="an" if r[0] in "aeiou" else "a") for t in TEMPLATES[KINDS.get(r, kind)]]


def _target_prompts(concept: str, cfg: ItdConfig) -> list[str]:
    if cfg.target_prompts:
        return read_prompts(cfg.target_prompts)
    if not _shipped(concept).is_file():
        raise ErasekitError(
            f"no shipped prompts for '{concept}' on Stable Diffusion (shipped: {', '.join(shipped_concepts())}): "
            "pass --set target_prompts=FILE (prompts that show it) and --set other_prompts=FILE (prompts without it)"
        )
    return read_prompts(_shipped(concept))


def _other_prompts(concepts: list[str], cfg: ItdConfig) -> list[str]:
    """Prompts without any of `concepts`: cfg.other_prompts as given, or the shipped list less those naming one."""
    if cfg.other_prompts:
        return read_prompts(cfg.other_prompts)
    return [p for p in read_prompts(DATA / "others.txt") if not any(key(c) in key(p) for c in concepts)]


def _shuffled(prompts: list[str], seed: int) -> list[str]:
    return [prompts[i] for i in torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed))]


Halves = tuple[list[str], list[str]]  # (calibration, held out)


def _halves(prompts: list[str], seed: int, n: int) -> Halves:
    """(calibration, held-out): the even and odd positions of the seeded shuffle, n at most each."""
    mixed = _shuffled(prompts, seed)
    return mixed[::2][:n], mixed[1::2][:n]


def sd_itd_inputs(concepts: list[str], cfg: ItdConfig) -> ItdInputs:
    """ItdInputs for `concepts` on Stable Diffusion (see the module docstring); a one-line error for a concept
    with neither a shipped list nor cfg.target_prompts, and for prompt files given for several concepts."""
    if len(concepts) > 1 and (cfg.target_prompts or cfg.other_prompts):
        raise ErasekitError("target_prompts / other_prompts describe one concept: build one patch per concept")
    n, seed = cfg.calib_prompts, cfg.seed
    full = {c: _target_prompts(c, cfg) for c in concepts}
    pos = {c: _halves(full[c], seed + 200 + i, n) for i, c in enumerate(concepts)}
    retain = {c: list(cfg.retain) if cfg.retain is not None else default_retain(c, concepts) for c in concepts}
    retain_kind = {r: KINDS.get(key(c), "other") for c in concepts for r in retain[c]}
    gate = None
    if cfg.gate:
        neg = {
            c: _halves(
                [*_other_prompts([c], cfg), *(p for d in concepts if d != c for p in full[d])], seed + 300 + i, n
            )
            for i, c in enumerate(concepts)
        }
        none = _halves(_other_prompts(concepts, cfg), seed + 300, n)
        gate = {split: _split(concepts, pos, neg, none, k) for k, split in enumerate(GATE_SPLITS)}
    return ItdInputs(
        corpus=sd_itd_corpus(cfg),
        concept_prompts={c: pos[c][0][: cfg.select_prompts] for c in concepts},
        retain_prompts={
            r: _shuffled(_retain_prompts(r, retain_kind[r]), seed + 150 + i)[: cfg.select_prompts]
            for i, r in enumerate(sorted(retain_kind))
        },
        retain=retain,
        gate=gate,
    )


def _split(
    concepts: list[str], pos: dict[str, Halves], neg: dict[str, Halves], none: Halves, k: int
) -> tuple[dict[str, Sides], Sides]:
    """One gate split (k = 0 calibration, 1 held out): per-concept sides and the patch-wide pair."""
    per = {c: (pos[c][k], neg[c][k]) for c in concepts}
    return per, ([p for c in concepts for p in pos[c][k]], none[k])
