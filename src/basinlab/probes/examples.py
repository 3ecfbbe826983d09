"""Restoration examples (SPEC 5, basin test): a few test sequences corrupted at ``t`` and restored by the
stochastic reverse chain, rendered for people to read. The one renderer behind the sweep's ``examples.json``,
the report's example table and ``basinlab probe --show``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from basinlab.data.sequences import SequenceData
from basinlab.diffusion import Denoiser, process_of, reverse_chain

#: Seed of the corruption of the example sentences (plus the caller's seed, 0 in a sweep): every run of a sweep
#: sees the same corrupted test sentences.
EXAMPLE_SEED = 20_240_917


def restore_examples(
    denoiser: Denoiser,
    data: SequenceData,
    *,
    k: int = 4,
    t: float = 0.25,
    steps: int = 1000,
    seed: int = 0,
    train: torch.Tensor | None = None,
) -> dict[str, Any]:
    """The first ``k`` test sequences, corrupted at ``t`` with generator seed ``EXAMPLE_SEED + seed`` and restored by
    the stochastic reverse chain on the ``steps`` grid with a greedy final step (SPEC 3/5).

    With ``train`` (the run's ``D_N``), each restoration also records its Hamming distance to the nearest training
    sequence: 0 means the corrupted test sentence fell into the basin of a memorised training sentence; and
    ``train_examples`` holds the first ``k`` training sequences. Every original (test and train) carries
    ``token_text`` (each token's own text; None for Markov data) and ``entropy``: the leave-one-out conditional
    entropy of each position at ``t = 1e-5`` (nats, 4 significant digits, None off the real tokens;
    :func:`basinlab.probes.tokens.token_predictions`), for the report's token shading."""
    t = float(t)
    x = data.test[:k]
    gen = torch.Generator().manual_seed(EXAMPLE_SEED + int(seed))
    alpha = denoiser.schedule.alpha(torch.tensor(t, dtype=torch.float64))
    z = process_of(denoiser).corrupt(x, alpha, generator=gen)
    with torch.inference_mode():
        restored = reverse_chain(denoiser, z, t, steps=steps, greedy=False, generator=gen).cpu()
    real = data.real_mask(x)
    nn = None
    if train is not None and len(train):
        nn = torch.stack([((train != r) & (data.real_mask(train) | data.real_mask(r[None]))).sum(1).min()
                          for r in restored]).tolist()  # positions real in either: short rows are not near
    items = [_item(data, x[i], z[i], restored[i], real[i], None if nn is None else int(nn[i]))
             for i in range(x.shape[0])]
    for item, h, row in zip(items, _entropies(denoiser, x, real, seed), x.tolist(), strict=True):
        item["entropy"] = h
        item["token_text"] = _token_texts(data, row)
    out = {"t": t, "steps": steps, "seed": EXAMPLE_SEED + int(seed), "examples": items}
    if train is not None and len(train):
        xt = train[:k]
        rt = data.real_mask(xt)
        out["train_examples"] = [
            {"original": xt[i].tolist(), "real": rt[i].tolist(), "tokens": {"original": data.pieces(xt[i])},
             "surface": None if getattr(data, "tokenizer", None) is None else {
                 "original": surface_pieces(data.tokenizer, xt[i].tolist())}, "entropy": h,
             "token_text": _token_texts(data, xt[i].tolist())}
            for i, h in enumerate(_entropies(denoiser, xt, rt, seed))]
    return out


def _token_texts(data: SequenceData, ids: list[int]) -> list[str] | None:
    """Each token's own text (:func:`basinlab.probes.tokens.token_text`: a space token is " ", a partial
    character its bytes), for the report's per-token shading; None without a tokeniser."""
    from basinlab.probes.tokens import byte_level_decoder, token_text

    if getattr(data, "tokenizer", None) is None:
        return None
    dec = byte_level_decoder()
    return [token_text(data.tokenizer, i, dec) for i in ids]


def _entropies(denoiser: Denoiser, x: torch.Tensor, real: torch.Tensor, seed: int) -> list[list[float | None]]:
    """Per-token leave-one-out entropy at ``t = 1e-5`` of each row (4 significant digits; None off the real)."""
    from basinlab.probes.tokens import token_predictions

    h = token_predictions(denoiser, x, 1e-5, k=1, seed=EXAMPLE_SEED + int(seed), real_mask=real)["entropy"]
    return [[None if math.isnan(v) else float(f"{v:.4g}") for v in row] for row in h.tolist()]


def _item(data: SequenceData, x: torch.Tensor, z: torch.Tensor, restored: torch.Tensor, real: torch.Tensor,
          nn: int | None) -> dict[str, Any]:
    changed = (z != x) & real
    return {
        "original": x.tolist(),
        "corrupted": z.tolist(),
        "restored": restored.tolist(),
        "real": real.tolist(),
        "text": {name: data.decode(s[None])[0] for name, s in (("original", x), ("corrupted", z),
                                                                ("restored", restored))},
        "tokens": {"original": data.pieces(x), "corrupted": data.pieces(z), "restored": data.pieces(restored)},
        "surface": None if getattr(data, "tokenizer", None) is None else {
            name: surface_pieces(data.tokenizer, s.tolist())
            for name, s in (("original", x), ("corrupted", z), ("restored", restored))
        },
        "changed": int(changed.sum()),
        "recovered": int(((restored == x) & changed).sum()),
        "exact": bool((restored[real] == x[real]).all()),
        "nn_train_hamming": nn,
    }


def surface_pieces(tokenizer: Any, ids: list[int]) -> list[str]:
    """The decoded text of each position: concatenated, the pieces spell ``tokenizer.decode(ids)`` (a piece
    carries its own leading space; PAD/BOS/EOS decode to ""). Piece ``i`` is what decoding ``ids[: i + 1]`` adds to
    decoding ``ids[: i]``, so it is right for any tokeniser (WordPiece ``##``, byte-level BPE); where a decoder's
    clean-up makes a prefix's text no prefix of the longer text, the token decoded alone stands in, after a space.
    A piece that decodes to "�" (a byte-level BPE token holding part of a UTF-8 character) shows the token's bytes
    instead (``‹e2 80›``, :func:`basinlab.probes.tokens.token_text`), so that a substituted token stays visible.
    """
    from basinlab.probes.tokens import token_text

    pieces, prev = [], ""
    for i in range(len(ids)):
        text = tokenizer.decode(ids[: i + 1])
        if text.startswith(prev):
            pieces.append(text[len(prev):])
        else:
            alone = tokenizer.decode(ids[i : i + 1])
            pieces.append(" " + alone if alone else "")
        if "\ufffd" in pieces[-1]:
            pieces[-1] = token_text(tokenizer, ids[i])
        prev = text
    return pieces
