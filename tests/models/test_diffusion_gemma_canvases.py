"""DiffusionGemma's block layout (SPEC 2c): texts longer than one canvas fill canvases in order, canvas k denoised
after [BOS] + every earlier token (never corrupted), the last canvas PAD-filled and not scored; the audit scores the
canvases per prompt and gives one row per text. Tiny random models, as tests/models/test_diffusion_gemma.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers.models.diffusion_gemma")

from basinlab.errors import BasinlabError
from basinlab.models.diffusion_gemma import hf_classes
from tests.models import test_diffusion_gemma as dgemma

V, C = dgemma.V, dgemma.C
BOS, PAD = 2, 0
tiny, loaded = dgemma.tiny, dgemma.loaded  # the same tiny random model and its load (module fixtures)


def _text(n: int, seed: int) -> list[int]:
    return torch.randint(3, V, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def prompted_entropies(path: Path, ids: list[int]) -> torch.Tensor:
    """transformers' own forward on each canvas of ``ids``: ``input_ids`` = [BOS] + every earlier token,
    ``decoder_input_ids`` = the clean canvas (the last PAD-filled); the entropy of the softmax of the soft-capped
    logits, float64, at the text's positions only."""
    model = hf_classes()[1].from_pretrained(str(path), dtype=torch.float32).eval()
    out = []
    for s in range(0, len(ids), C):
        canvas = ids[s : s + C] + [PAD] * (C - len(ids[s : s + C]))
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([[BOS, *ids[:s]]]), decoder_input_ids=torch.tensor([canvas])).logits
        lp = torch.log_softmax(logits[0].double(), -1)
        out.append(-(lp.exp() * lp).sum(-1)[: len(ids) - s])
    return torch.cat(out)


def test_layout_fills_canvases_in_order_with_prompts_of_every_earlier_token(loaded):
    long = _text(40, 0)
    lay = loaded.encode_lines(["5 6 7", " ".join(map(str, long))], "ids", "t")
    assert lay.seqs.shape == (4, C) and lay.text.tolist() == [0, 1, 1, 1] and lay.lengths.tolist() == [3, 40]
    assert lay.seqs[0, :3].tolist() == [5, 6, 7] and (lay.seqs[0, 3:] == PAD).all()
    assert torch.equal(torch.cat([lay.seqs[1], lay.seqs[2], lay.seqs[3, :8]]), torch.tensor(long))
    assert (lay.seqs[3, 8:] == PAD).all() and lay.mask[3].tolist() == [True] * 8 + [False] * 8
    assert [p.tolist() for p in lay.prompts] == [[BOS], [BOS], [BOS, *long[:16]], [BOS, *long[:32]]]
    groups = lay.groups()  # every canvas 0 shares [BOS]: one batch
    assert [r.tolist() for _, r in groups] == [[0, 1], [2], [3]]
    text = loaded.encode_lines([" ".join(f"w{i}" for i in long)], "text", "t")  # no longer cut
    assert torch.equal(text.seqs, lay.seqs[1:]) and int(text.mask.sum()) == 40
    short = loaded.encode_lines(["w9 w10"], "text", "t")
    assert short.seqs[0, :2].tolist() == [9, 10] and int(short.mask.sum()) == 2 and short.single_canvas


def test_entropies_of_a_text_of_two_and_a_half_canvases_equal_transformers_with_prompts(tiny, loaded):
    from basinlab.probes.canvases import audit_canvases

    long, short = _text(40, 1), _text(5, 2)
    lay = loaded.encode_lines([" ".join(map(str, short)), " ".join(map(str, long))], "ids", "t")
    res = audit_canvases(loaded.denoiser, lay, ts=(0.5,), steps=3, nelbo_times=2)
    H = res.arrays["tokens/entropy"]
    assert H.shape == (2, 40) and res.arrays["tokens/lengths"].tolist() == [5, 40]
    ref_long, ref_short = prompted_entropies(tiny, long), prompted_entropies(tiny, short)
    assert torch.allclose(H[1], ref_long, atol=1e-5, rtol=0)
    assert torch.allclose(H[0, :5], ref_short, atol=1e-5, rtol=0) and H[0, 5:].isnan().all()
    # the text's entropy score is the mean over all its tokens, whatever canvas they lie in
    assert abs(float(res.arrays["score/entropy"][1]) - float(ref_long.mean())) < 1e-5
    assert res.arrays["score/entropy"].shape == (2,) and res.arrays["n_tokens"].tolist() == [5, 40]


def test_prompts_are_never_corrupted_and_the_pad_fill_is_not_scored(loaded):
    from basinlab.probes.canvases import audit_canvases

    long = _text(40, 3)
    lay = loaded.encode_lines([" ".join(map(str, long))], "ids", "t")
    prompts, canvases = [], []

    def record(module, args, kwargs):
        prompts.extend(kwargs["input_ids"].tolist())
        canvases.append(kwargs["decoder_input_ids"].shape)

    handle = loaded.model.hf.register_forward_pre_hook(record, with_kwargs=True)
    try:
        res = audit_canvases(loaded.denoiser, lay, ts=(1.0,), steps=3, nelbo_times=2)
    finally:
        handle.remove()
    clean = {(BOS,), (BOS, *long[:16]), (BOS, *long[:32])}
    assert {tuple(p) for p in prompts} == clean  # every call: a clean prompt; all three canvases scored
    assert all(shape[1] == C for shape in canvases)  # the model always sees a full canvas
    x, z, out = (res.arrays[k][0] for k in ("tokens/seqs", "tokens/corrupted_id", "tokens/restored_id"))
    assert x.tolist() == long and z.shape == (40,)  # per text: its 40 tokens, the PAD fill left out
    changed = z != x
    assert int(changed.sum()) > 20  # t = 1 redraws almost every token, in every canvas
    pooled = float((changed & (out == x)).sum()) / float(changed.sum())
    assert abs(float(res.arrays["score/recovery@1"][0]) - pooled) < 1e-12  # over the text's tokens, not the PAD
    assert res.arrays["tokens/mask"][0].all() and res.arrays["n_tokens"].tolist() == [40]


def test_one_canvas_texts_score_as_the_plain_audit(loaded):
    from basinlab.probes.audit import audit
    from basinlab.probes.canvases import audit_canvases

    rows = [" ".join(map(str, _text(n, 10 + n))) for n in (16, 7, 12)]
    lay = loaded.encode_lines(rows, "ids", "t")
    groups = ["member", "nonmember", "member"]
    ours = audit_canvases(loaded.denoiser, lay, groups=groups, ts=(0.5,), steps=3, nelbo_times=2, seed=4)
    plain = audit(loaded.denoiser, lay.seqs, groups=groups, real_mask=lay.mask, ts=(0.5,), steps=3, nelbo_times=2,
                  seed=4, attention_mask=lay.seqs != PAD)
    for key in ("score/entropy", "score/recovery@0.5", "score/fixed_point", "score/nelbo"):
        assert torch.allclose(ours.arrays[key], plain.arrays[key], atol=1e-6, equal_nan=True), key


def test_combine_weights_each_canvas_by_its_tokens_and_fixed_points_need_every_canvas():
    from basinlab.probes.canvases import combine

    text = torch.tensor([0, 0, 1, 1, 2])
    v = torch.tensor([1.0, 4.0, math.nan, 2.0, math.nan], dtype=torch.float64)
    got = combine(v, torch.tensor([3, 1, 0, 5, 0]), text, 3)
    assert got[:2].tolist() == [(3 * 1.0 + 4.0) / 4, 2.0] and math.isnan(got[2])
    fixed = combine(torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0]), None, text, 3)
    assert fixed.tolist() == [0.0, 1.0, 1.0]


def test_nelbo_of_a_long_text_is_the_sum_over_its_canvases_per_token(loaded):
    from basinlab.probes.canvases import audit_canvases, nelbo_canvases

    lay = loaded.encode_lines([" ".join(map(str, _text(40, 5)))], "ids", "t")
    whole = nelbo_canvases(loaded.denoiser, lay, n_times=2, seed=6)
    audited = audit_canvases(loaded.denoiser, lay, ts=(0.5,), steps=2, nelbo_times=2, seed=6)
    assert whole["n_tokens"] == 40 and math.isfinite(whole["nelbo"]) and whole["nelbo"] > 0
    assert abs(float(audited.arrays["score/nelbo"][0]) - whole["nelbo"]) < 1e-9


def test_prompted_entropy_bound_sampler_is_generate_after_the_prompt(loaded):
    from basinlab.diffusion import with_sampler
    from basinlab.diffusion.sampler import reverse_chain
    from basinlab.models.prompted import with_prompt

    prompt = torch.tensor([BOS, *_text(16, 7)])
    den = with_prompt(with_sampler(loaded.denoiser, "entropy_bound"), prompt)
    z = torch.randint(3, V, (3, C), generator=torch.Generator().manual_seed(8))
    ours = reverse_chain(den, z, 0.5, 8, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=torch.Generator().manual_seed(0))))
    theirs = loaded.model.hf.generate(input_ids=prompt.expand(3, -1), decoder_input_ids=z, max_new_tokens=C,
                                      max_denoising_steps=4)
    assert torch.equal(ours, theirs.sequences[:, -C:])
    plain = reverse_chain(with_sampler(loaded.denoiser, "entropy_bound"), z, 0.5, 8,
                          generator=torch.Generator().manual_seed(0))
    assert not torch.equal(ours, plain)  # the prompt reached the sampler


def test_a_denoiser_without_prompts_is_refused_in_one_line(loaded):
    from basinlab.models.prompted import with_prompt
    from basinlab.probes.canvases import audit_canvases

    with pytest.raises(BasinlabError, match="cannot denoise after a prompt"):
        with_prompt(object(), [BOS])
    lay = loaded.encode_lines([" ".join(map(str, _text(20, 9)))], "ids", "t")
    with pytest.raises(BasinlabError, match="cannot denoise after a prompt"):
        audit_canvases(type("NoPrompt", (), {"vocab_size": V})(), lay)  # a denoiser with no network
    short = loaded.encode_lines(["5 6 7"], "ids", "t")
    with pytest.raises(BasinlabError, match="--reference needs every audited and reference text to fit one"):
        audit_canvases(loaded.denoiser, short, reference=lay)


def _ids_file(path: Path, rows: list[list[int]]) -> Path:
    path.write_text("".join(" ".join(map(str, r)) + "\n" for r in rows))
    return path


def test_cli_audit_and_nll_of_long_texts(tiny, tmp_path, capsys):
    import pandas as pd

    from basinlab.cli import main

    members = [_text(n, 20 + n) for n in (40, 16, 33)]
    nonmembers = [_text(n, 30 + n) for n in (3, 50)]
    rc = main(["audit", "--checkpoint", str(tiny), "--members", str(_ids_file(tmp_path / "m.txt", members)),
               "--nonmembers", str(_ids_file(tmp_path / "n.txt", nonmembers)), "--format", "ids", "--steps", "3",
               "--nelbo-times", "2", "--device", "cpu", "--quiet", "--out", str(tmp_path / "A")])
    assert rc == 0
    scores = pd.read_csv(tmp_path / "A" / "scores.csv")
    assert scores["n_tokens"].tolist() == [40, 16, 33, 3, 50]  # one row per text
    assert scores["group"].tolist() == ["member"] * 3 + ["nonmember"] * 2
    tokens = pd.read_parquet(tmp_path / "A" / "tokens.parquet")
    for i, ids in enumerate(members + nonmembers):
        rows = tokens[tokens["text_index"] == i]
        assert rows["position"].tolist() == list(range(len(ids))) and rows["token_id"].tolist() == ids
    ref = prompted_entropies(tiny, members[0]).numpy()
    assert abs(tokens[tokens["text_index"] == 0]["entropy"].to_numpy() - ref).max() < 1e-4
    assert json.loads((tmp_path / "A" / "auc.json").read_text())["members"] == 3
    page = (tmp_path / "A" / "audit.html").read_text()
    data = json.loads(page.split('<script type="application/json" id="data">')[1].split("</script>")[0])
    assert [t["ids"] for t in data["texts"]] == members + nonmembers  # each text whole, no PAD
    text = tmp_path / "t.txt"
    text.write_text(" ".join(f"w{i}" for i in members[0]) + "\n")
    assert main(["nll", "--checkpoint", str(tiny), "--texts", str(text), "--format", "text", "--times", "2",
                 "--device", "cpu"]) == 0
    assert "1 sequences, 40 real tokens" in capsys.readouterr().out
