"""Texts laid out in canvases: the block layout of a block-diffusion model (SPEC 2c, DiffusionGemma).

A text's tokens fill canvases of ``canvas_length`` in order; canvas ``k`` is denoised after the prompt ``[BOS]`` +
every earlier token of the text (canvas 0 after ``[BOS]`` alone); the last canvas is filled up with PAD, attended
as in generation (the model always sees a full canvas), special for the probes (outside the real-token mask).
Prompt tokens are never corrupted: they are not part of any canvas the probes see. A text of no tokens is one
canvas of PAD. :class:`Canvases` holds the canvases of many texts and maps per-canvas arrays back to the texts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class Canvases:
    """The canvases of ``n_texts`` texts (SPEC 2c block layout).

    ``seqs`` long ``[n, C]`` (the canvases, PAD-filled last canvas of each text); ``mask`` bool ``[n, C]`` (real
    tokens: inside the text, not a special id); per canvas ``prompts[i]`` (1-D long, ``[BOS]`` + the text's tokens
    before it), ``text[i]`` (its text's index) and ``start[i]`` (its first token's position in the text);
    ``lengths`` long ``[n_texts]`` (tokens per text); ``pad_id`` the fill."""

    seqs: torch.Tensor
    mask: torch.Tensor
    prompts: list[torch.Tensor]
    text: torch.Tensor
    start: torch.Tensor
    lengths: torch.Tensor
    pad_id: int

    @property
    def n_texts(self) -> int:
        return int(self.lengths.numel())

    @property
    def single_canvas(self) -> bool:
        """Every text fits one canvas (one canvas per text, in text order)."""
        return int(self.seqs.shape[0]) == self.n_texts

    def groups(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(prompt, canvas rows)`` per distinct prompt, in order of first appearance: every text's canvas 0
        shares ``[BOS]``; a later canvas's prompt is its text's own (or that of a text with the same beginning)."""
        rows: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(self.prompts):
            rows.setdefault(tuple(p.tolist()), []).append(i)
        return [(torch.tensor(k, dtype=torch.long), torch.tensor(v, dtype=torch.long)) for k, v in rows.items()]

    def per_text(self, x: torch.Tensor, fill: float | int) -> torch.Tensor:
        """Per-canvas ``x [n, C, ...]`` as per-text ``[n_texts, W, ...]`` (``W`` the longest text, at least 1):
        each canvas at its position in its text, the PAD fill left out; ``fill`` after each text's end."""
        W = max(1, int(self.lengths.max()) if self.n_texts else 1)
        out = torch.full((self.n_texts, W, *x.shape[2:]), fill, dtype=x.dtype)
        for i in range(x.shape[0]):
            t, s = int(self.text[i]), int(self.start[i])
            n = max(0, min(x.shape[1], int(self.lengths[t]) - s))
            out[t, s : s + n] = x[i, :n]
        return out

    @staticmethod
    def concat(parts: Sequence[Canvases]) -> Canvases:
        """The canvases of several layouts, their texts numbered on (the first layout's texts first)."""
        offsets = torch.tensor([0] + [p.n_texts for p in parts]).cumsum(0)
        return Canvases(seqs=torch.cat([p.seqs for p in parts]), mask=torch.cat([p.mask for p in parts]),
                        prompts=[q for p in parts for q in p.prompts],
                        text=torch.cat([p.text + int(o) for p, o in zip(parts, offsets[:-1], strict=True)]),
                        start=torch.cat([p.start for p in parts]), lengths=torch.cat([p.lengths for p in parts]),
                        pad_id=parts[0].pad_id)


def lay_out(texts: Sequence[Sequence[int]], canvas_length: int, bos_id: int, pad_id: int,
            special_ids: Sequence[int] = ()) -> Canvases:
    """The canvases of ``texts`` (token ids each; SPEC 2c): ``ceil(len / canvas_length)`` canvases per text (one
    for an empty text), the last filled up with ``pad_id``; ids in ``special_ids`` lie outside the mask."""
    C = int(canvas_length)
    rows: list[list[int]] = []
    prompts: list[torch.Tensor] = []
    text: list[int] = []
    start: list[int] = []
    for j, ids in enumerate(texts):
        ids = [int(i) for i in ids]
        for s in range(0, max(1, len(ids)), C):
            rows.append(ids[s : s + C])
            prompts.append(torch.tensor([bos_id, *ids[:s]], dtype=torch.long))
            text.append(j)
            start.append(s)
    seqs = torch.full((len(rows), C), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), C), dtype=torch.bool)
    for r, ids in enumerate(rows):
        seqs[r, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        mask[r, : len(ids)] = True
    mask &= ~torch.isin(seqs, torch.tensor(sorted(set(special_ids)), dtype=torch.long))
    return Canvases(seqs=seqs, mask=mask, prompts=prompts, text=torch.tensor(text, dtype=torch.long),
                    start=torch.tensor(start, dtype=torch.long),
                    lengths=torch.tensor([len(t) for t in texts], dtype=torch.long), pad_id=int(pad_id))
