from erasekit.pipeline import bundle_dir
from erasekit.world.prompts import WORLD_WORDS
from erasekit.world.tokenizer import MAX_LENGTH, build_tokenizer, english_words, load_tokenizer


def test_every_word_is_one_token(tmp_path):
    tok = build_tokenizer(tmp_path)
    assert (tmp_path / "vocab.json").is_file() and (tmp_path / "merges.txt").is_file()
    words = list(WORLD_WORDS) + english_words()
    assert len(english_words()) >= 300
    assert set(english_words()).isdisjoint(WORLD_WORDS)
    pieces = {w: tok.tokenize(w) for w in words}
    assert {w: p for w, p in pieces.items() if len(p) != 1} == {}
    ids = tok("a red circle on a white background").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id and len(ids) == 9


def test_unknown_words_fall_back_to_bytes_and_bundle_matches(tmp_path):
    tok = build_tokenizer(tmp_path)
    assert tok.tokenize("zqxv") and all(p in tok.get_vocab() for p in tok.tokenize("zqxv"))
    bundled = load_tokenizer(bundle_dir() / "pipeline" / "tokenizer")
    assert bundled.model_max_length == MAX_LENGTH
    assert bundled.get_vocab() == tok.get_vocab()
