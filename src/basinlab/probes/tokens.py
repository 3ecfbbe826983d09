"""Per-token view of an audit (SPEC 5, "Per-token data"): what the model holds verbatim, token by token.

For each position of each audited sequence:

- ``entropy``: the leave-one-out conditional entropy ``H = -Σ_v x_θ,v log x_θ,v`` (nats) of ``x_θ(z_t)`` at
  ``t = entropy_t`` (the clean input), the per-token quantity whose mean over real tokens is the audit's
  ``entropy`` score. ``z_t`` is drawn with the entropy probe's generator (same seed, same ``t``), so the values are
  the probe's own (:func:`~basinlab.probes.entropy.entropy_per_token`);
- ``top_ids`` / ``top_probs``: the ``k`` most probable tokens of ``x_θ`` at that position and their probabilities;
- from the basin test at its first ``t``: ``corrupted_id`` (the token of ``z_t``) and ``restored_id`` (the token the
  reverse chain returned). ``corrupted`` = ``z_t != x`` there; ``restored`` = the chain returned ``x`` there.

:func:`tokens_frame` lays these out as one row per position (``tokens.parquet`` of ``basinlab audit``);
:func:`token_texts` gives each id a display string (decoded text for text models, with the bytes shown where a
byte-level BPE token is part of a character; the id for models without a tokeniser).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from basinlab.diffusion import process_of
from basinlab.probes._common import batches, check_seqs, denoiser_device, make_generator, progress_bar, tvec
from basinlab.probes.entropy import PROBE as ENTROPY_PROBE
from basinlab.probes.entropy import token_entropy
from basinlab.probes.results import child_seed

TOP_K = 5


def token_predictions(
    denoiser,
    seqs: torch.Tensor,
    t: float = 1e-5,
    *,
    k: int = TOP_K,
    seed: int = 0,
    batch_size: int = 256,
    real_mask: torch.Tensor | None = None,
    progress: bool = False,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """``entropy`` float64 ``[M, L]`` (NaN off the real tokens), ``top_ids`` long and ``top_probs`` float64
    ``[M, L, k]`` of ``x_θ(z_t)``, ``z_t ~ q_t(. | x)`` drawn exactly as the entropy probe draws it."""
    seqs, mask = check_seqs(seqs, denoiser.vocab_size, real_mask)
    dev = denoiser_device(denoiser, device)
    M, L = seqs.shape
    k = max(1, min(int(k), denoiser.vocab_size))
    proc = process_of(denoiser)
    g = make_generator(child_seed(seed, ENTROPY_PROBE, float(t)), dev)
    a_t = float(denoiser.schedule.alpha(float(t)))
    H = torch.empty(M, L, dtype=torch.float64)
    ids = torch.empty(M, L, k, dtype=torch.long)
    probs = torch.empty(M, L, k, dtype=torch.float64)
    bar = progress_bar(len(range(0, M, batch_size)), "token predictions", progress)
    with torch.inference_mode():
        for sl in batches(M, batch_size):
            x = seqs[sl].to(dev)
            z = proc.corrupt(x, a_t, generator=g)
            log_x = proc.leave_one_out(denoiser, z, tvec(float(t), x.shape[0], dev))
            H[sl] = token_entropy(log_x).cpu()
            top = log_x.topk(k, dim=-1)
            ids[sl], probs[sl] = top.indices.cpu(), top.values.to(torch.float64).exp().cpu()
            bar.update(1)
    bar.close()
    return {"entropy": torch.where(mask, H, torch.nan), "top_ids": ids, "top_probs": probs}


# ---- display text of each token --------------------------------------------------------------------------------


def byte_level_decoder() -> dict[str, int]:
    """The inverse of byte-level BPE's byte-to-character alphabet (GPT-2's ``bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


def token_texts(tokenizer: Any, vocab_size: int, mask_index: int | None = None) -> tuple[list[str], list[bool]]:
    """``(text, special)`` for every id ``< vocab_size``: the text the token adds to a decoded line, its leading
    space included (WordPiece ``##ing`` -> ``ing``; byte-level BPE ``Ġthe`` -> `` the``; a BPE token holding part
    of a UTF-8 character -> its bytes as ``‹e2 80›``, since "�" would hide which token it is), and whether it is a
    special token (PAD/BOS/EOS/UNK and added specials: shown by name). Without a tokeniser (Markov): the ids.
    ``mask_index``: a masked model's ``[MASK]`` (SPEC 2b), shown as a special token ``[MASK]`` (appended when it
    lies past the vocabulary, as a corrupted sequence holds it)."""
    if tokenizer is None:
        texts, special = [f" {i}" for i in range(vocab_size)], [False] * vocab_size
    else:
        dec = byte_level_decoder()
        texts = [token_text(tokenizer, i, dec) for i in range(vocab_size)]
        special = [i in tokenizer.special_ids for i in range(vocab_size)]
    if mask_index is not None:
        while len(texts) <= mask_index:
            texts.append(""), special.append(True)
        texts[mask_index], special[mask_index] = "[MASK]", True
    return texts, special


def token_text(tokenizer: Any, i: int, byte_decoder: dict[str, int] | None = None) -> str:
    """The display text of token ``i`` (see :func:`token_texts`)."""
    from tokenizers import decoders

    tk = tokenizer.tk
    piece = tk.id_to_token(int(i))
    if piece is None:
        return " " + tokenizer.decode([int(i)])
    if int(i) in tokenizer.special_ids:
        return piece
    dec = byte_decoder if byte_decoder is not None else byte_level_decoder()
    if isinstance(tk.decoder, decoders.ByteLevel) and all(c in dec for c in piece):
        raw = bytes(dec[c] for c in piece)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return "‹" + " ".join(f"{b:02x}" for b in raw) + "›"
    if isinstance(tk.decoder, decoders.WordPiece):
        return piece[2:] if piece.startswith("##") else " " + piece
    return " " + (tokenizer.decode([int(i)]) or piece)


# ---- the table ---------------------------------------------------------------------------------------------------


def tokens_frame(arrays: dict[str, Any], groups: Sequence[str], texts: Sequence[str], special: Sequence[bool]):
    """One row per position of every audited sequence (a pandas DataFrame; ``tokens.parquet``).

    ``arrays``: an :func:`~basinlab.probes.audit.audit` result's ``tokens/*`` arrays; ``texts`` / ``special``:
    :func:`token_texts`. Columns: ``text_index, group, position, token_id, token, special, real, entropy,
    basin_t, corrupted, restored, corrupted_id, restored_id, top1_id, top1_token, top1_prob, top5_ids, top5_probs``
    (``entropy`` NaN off the real tokens; the last two are lists); with ``tokens/lengths`` (texts scored at their
    own length, or laid out in canvases: :mod:`basinlab.probes.canvases`) only the positions inside each text."""
    import numpy as np
    import pandas as pd

    seqs = arrays["tokens/seqs"].numpy()
    M, L = seqs.shape
    mask = arrays["tokens/mask"].numpy()
    top_ids = arrays["tokens/top_ids"].numpy().reshape(M * L, -1)
    top_p = arrays["tokens/top_probs"].numpy().reshape(M * L, -1)
    z = arrays["tokens/corrupted_id"].numpy().ravel()
    out = arrays["tokens/restored_id"].numpy().ravel()
    x = seqs.ravel()
    txt = np.asarray(texts, dtype=object)
    frame = pd.DataFrame({
        "text_index": np.repeat(np.arange(M), L),
        "group": np.repeat(np.asarray(list(groups), dtype=object), L),
        "position": np.tile(np.arange(L), M),
        "token_id": x,
        "token": txt[x],
        "special": np.asarray(special, dtype=bool)[x],
        "real": mask.ravel(),
        "entropy": arrays["tokens/entropy"].numpy().ravel(),
        "basin_t": float(arrays["tokens/basin_t"]),
        "corrupted": z != x,
        "restored": out == x,
        "corrupted_id": z,
        "restored_id": out,
        "top1_id": top_ids[:, 0],
        "top1_token": txt[top_ids[:, 0]],
        "top1_prob": top_p[:, 0],
        "top5_ids": list(top_ids),
        "top5_probs": list(top_p),
    })
    if "tokens/lengths" in arrays:  # texts scored at their own length: no rows for the padding after them
        frame = frame[frame["position"].to_numpy() < np.repeat(arrays["tokens/lengths"].numpy(), L)]
        frame = frame.reset_index(drop=True)
    return frame
