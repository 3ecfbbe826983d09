"""Long lines (issue 10, item 6): a text longer than ``LONG_TEXT`` characters is tokenised in pieces cut at spaces,
with the same ids and the same trained vocabulary as the whole text, and in sentence mode only its first ids."""

from __future__ import annotations

import random

import pytest

from basinlab.data.tokenizer import LONG_TEXT, text_pieces, train_tokenizer


def _text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["the", "cat's", "dog", "sat", "on", "a", "mat,", "and", "Bird", "(flew)", "away.", "über", "naïve", "x-y"]
    return " ".join(rng.choice(words) for _ in range(n_words))


def test_pieces_cover_the_text_and_cut_at_spaces() -> None:
    rng = random.Random(1)
    for _ in range(300):
        text = "".join(rng.choice("ab  c\t") for _ in range(rng.randint(0, 200)))
        pieces = list(text_pieces(text, size=7))
        assert "".join(pieces) == text
        assert all(pieces) and all(p.startswith(" ") for p in pieces[1:])


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_a_long_line_gives_the_ids_of_the_whole_text(kind) -> None:
    line = _text(3 * LONG_TEXT // 4)  # about 2.5 LONG_TEXT characters
    assert len(line) > 2 * LONG_TEXT
    short = [_text(12, seed) for seed in range(50)]
    tok = train_tokenizer(short + [line], kind, 64)
    whole = tok.tk.encode(line, add_special_tokens=False).ids
    assert tok.encode_batch(short + [line])[-1] == whole
    assert tok.encode_batch([line], max_tokens=30)[0] == whole[:30]  # sentence mode keeps L - 2 ids
