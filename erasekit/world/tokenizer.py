"""The shapes world's tokenizer: a byte-level BPE in CLIP's file format (vocab.json + merges.txt).

The merges are learned by a small BPE trainer on the world's words and a list of ordinary English words, until
every word is one token; learned merges replay exactly, so no two words' merges interfere (the pitfall of
chaining characters by hand). Ties between equally frequent pairs break by the pair's text, so the same word
list always gives the same files (the `tokenizers` trainer breaks ties differently from run to run). The English words never appear in the world's prompts: they are the
search space of the discrete attacks.
"""

from __future__ import annotations

import json
from collections import Counter
from importlib import resources
from pathlib import Path

from transformers import CLIPTokenizer

from erasekit.world.prompts import WORLD_WORDS

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 24


def _bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode map."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    keep += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def english_words() -> list[str]:
    """Ordinary English words the world never uses (shipped in erasekit/data)."""
    text = resources.files("erasekit.data").joinpath("english_words.txt").read_text()
    words = sorted(set(text.split()) - set(WORLD_WORDS))
    return words


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges (in rank order) after which every word is a single token "<word></w>"."""
    pieces = [[*w[:-1], w[-1] + "</w>"] for w in words]
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for p in pieces for pair in zip(p, p[1:]))
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for i, p in enumerate(pieces):
            j, merged = 0, []
            while j < len(p):
                if j + 1 < len(p) and (p[j], p[j + 1]) == best:
                    merged.append(p[j] + p[j + 1])
                    j += 2
                else:
                    merged.append(p[j])
                    j += 1
            pieces[i] = merged


def build_tokenizer(out_dir: str | Path) -> CLIPTokenizer:
    """Learn the BPE, write vocab.json + merges.txt to out_dir and return the loaded CLIPTokenizer."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    merges = learn_merges(sorted(set(WORLD_WORDS) | set(english_words())))

    base = list(_bytes_to_unicode().values())
    tokens = base + [c + "</w>" for c in base] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    return load_tokenizer(out)


def load_tokenizer(path: str | Path) -> CLIPTokenizer:
    """Load the world's tokenizer from a folder holding vocab.json + merges.txt."""
    return CLIPTokenizer.from_pretrained(str(path), model_max_length=MAX_LENGTH, pad_token=EOS)
