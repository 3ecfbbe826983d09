"""Issue 18's hostile-user findings 2, 4, 5, 6, 8 and 10 that end in a refusal: ``convert``/``export`` into a run or
a foreign directory, damaged or absurd weights, odd ``--out`` paths (a file, ``/dev/null``, a symlink loop) of
convert/export/audit/probe/sweep, odd audit input (a directory, fifo or device as a text file, NUL bytes, too
much text, ``--train-vs-test`` above N) and a model too large for a multi-worker sweep. Each is refused with exit
code 2 and one line on stderr naming the problem, without a traceback, and nothing is written or deleted.

CASES is the table that docs/RELIABILITY.md counts (scripts/reliability_counts.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from basinlab.interop.duo import convert
from tests.interop.duo_reference import random_duo_params
from tests.reliability._refusal import NB, NH, TOY, C, D, L, V, assert_refused_in_one_line, train_toy, write_hf

pytestmark = pytest.mark.reliability

HUGE = ["model.d_model=16384", "model.n_head=64", "model.n_layer=64"]
AUDIT = ["audit", "--checkpoint", "{CK}", "--format", "ids"]

# (id, argv, words the one line must contain). {CK}: a trained toy run (L=12, V=12, N=16); {HF*}: Duo Hugging Face
# directories ({HF} sound, the others damaged); {CONV}: a conversion of another source; {FILE}: a regular file;
# {LOOP}: a symlink loop; {FIFO}: a named pipe; {IDS}: 4 lines of 12 token ids; {T}: the toy data overrides.
CASES = [
    ("convert-out-trained-run", ["convert", "{HF}", "--out", "{CK}"], ["not empty", "never overwrites"]),
    ("convert-out-other-conversion", ["convert", "{HF}", "--out", "{CONV}"], ["not empty", "a conversion of"]),
    ("convert-out-is-a-file", ["convert", "{HF}", "--out", "{FILE}"], ["is a file"]),
    ("convert-out-dev-null", ["convert", "{HF}", "--out", "/dev/null"], ["/dev/null", "special file"]),
    ("convert-out-symlink-loop", ["convert", "{HF}", "--out", "{LOOP}"], ["loop"]),
    ("convert-nan-weight", ["convert", "{HFNAN}", "--out", "new"], ["backbone.blocks.0.attn_qkv.weight", "NaN"]),
    ("convert-inf-weight", ["convert", "{HFINF}", "--out", "new"], ["backbone.output_layer.linear.bias", "inf"]),
    ("convert-ema-nan-weight", ["convert", "{CKPTNAN}", "--out", "new"], ["(ema)", "NaN"]),
    ("convert-vocab-size-huge", ["convert", "{HFVOCAB}", "--out", "new"], ["vocab_size=1000000000"]),
    ("convert-model-length-huge", ["convert", "{HFLEN}", "--out", "new"], ["needs about", "model_length"]),
    ("convert-int8-weights", ["convert", "{HFINT}", "--out", "new"], ["dtype int8"]),
    ("export-out-trained-run", ["export", "--checkpoint", "{CK}", "--out", "{CONV}", "--format", "duo-hf"],
     ["not empty", "never overwrites"]),
    ("export-into-its-own-run", ["export", "--checkpoint", "{CK}", "--out", "{CK}", "--format", "duo-hf"],
     ["not empty"]),
    ("export-out-is-a-file", ["export", "--checkpoint", "{CK}", "--out", "{FILE}", "--format", "duo-hf"],
     ["is a file"]),
    ("export-out-dev-null", ["export", "--checkpoint", "{CK}", "--out", "/dev/null", "--format", "duo-hf"],
     ["special file"]),
    ("export-out-symlink-loop", ["export", "--checkpoint", "{CK}", "--out", "{LOOP}", "--format", "duo-hf"],
     ["loop"]),
    ("audit-out-is-a-file", [*AUDIT, "--texts", "{IDS}", "--out", "{FILE}"], ["is a file"]),
    ("audit-out-dev-null", [*AUDIT, "--texts", "{IDS}", "--out", "/dev/null"], ["special file"]),
    ("audit-out-symlink-loop", [*AUDIT, "--texts", "{IDS}", "--out", "{LOOP}"], ["loop"]),
    ("audit-out-under-a-file", [*AUDIT, "--texts", "{IDS}", "--out", "{FILE}/a"], ["not a directory"]),
    ("audit-members-directory", [*AUDIT, "--members", "{EMPTY}", "--nonmembers", "{IDS}", "--out", "a"],
     ["is a directory"]),
    ("audit-members-fifo", [*AUDIT, "--members", "{FIFO}", "--nonmembers", "{IDS}", "--out", "a"], ["is a fifo"]),
    ("audit-members-dev-zero", [*AUDIT, "--members", "/dev/zero", "--nonmembers", "{IDS}", "--out", "a"],
     ["is a device"]),
    ("audit-members-symlink-loop", [*AUDIT, "--members", "{LOOP}", "--nonmembers", "{IDS}", "--out", "a"],
     ["leads nowhere"]),
    ("audit-texts-nul-byte", [*AUDIT, "--texts", "{NUL}", "--out", "a"], ["line 2", "NUL"]),
    ("audit-file-too-big", [*AUDIT, "--texts", "{BIG}", "--out", "a"], ["at most 64 MB", "split -l"]),
    ("audit-too-many-texts", [*AUDIT, "--texts", "{MANY}", "--out", "a"], ["at most 100,000", "split -l"]),
    ("audit-train-vs-test-above-n", ["audit", "--checkpoint", "{CK}", "--train-vs-test", "100", "--out", "a"],
     ["N=16", "M <= 16"]),
    ("probe-out-symlink-loop", ["probe", "basins", "--checkpoint", "{CK}", "--out", "{LOOP}"], ["loop"]),
    ("probe-out-dev-null", ["probe", "basins", "--checkpoint", "{CK}", "--out", "/dev/null"], ["special file"]),
    ("sweep-out-symlink-loop", ["sweep", "--preset", "markov", "--out", "{LOOP}"], ["loop"]),
    ("sweep-workers-model-too-big", ["sweep", "--preset", "markov", "--out", "s", "--devices", "cpu,cpu", "{T}",
                                     *HUGE, "sweep.sizes=[16]", "sweep.oracles=false"],
     ["needs about", "train.batch_size"]),
    ("sweep-one-process-model-too-big", ["sweep", "--preset", "markov", "--out", "s", "--devices", "cpu", "{T}",
                                         *HUGE, "sweep.sizes=[16]", "sweep.oracles=false"], ["needs about"]),
    ("sweep-workers-n-over-pool", ["sweep", "--preset", "markov", "--out", "s", "--devices", "cpu,cpu", "{T}",
                                   "sweep.sizes=[16,100000]"], ["N=100000", "pool"]),
]


def _sources(base: Path) -> dict[str, str]:
    """Duo sources: sound, with a NaN / inf weight, absurd sizes, int8 weights, a Lightning .ckpt with a NaN EMA."""
    params = random_duo_params(V, D, C, NB, NH)
    nan, inf = dict(params), dict(params)
    nan["blocks.0.attn_qkv.weight"] = params["blocks.0.attn_qkv.weight"].clone()
    nan["blocks.0.attn_qkv.weight"][1, 2] = float("nan")
    inf["output_layer.linear.bias"] = params["output_layer.linear.bias"].clone()
    inf["output_layer.linear.bias"][0] = float("inf")
    ints = {k: (v * 10).to(torch.int8) for k, v in params.items()}
    ckpt = base / "nan.ckpt"
    from tests.interop.duo_reference import duo_param_names

    shadow = [nan[n].clone() for n in duo_param_names(NB)]
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in params.items()},
                "ema": {"decay": 0.999, "num_updates": 1, "shadow_params": shadow}, "global_step": 3,
                "hyper_parameters": {"config": {"model": {"n_heads": NH, "length": L}}}}, ckpt)
    return {"{HF}": write_hf(base / "hf", params), "{HFNAN}": write_hf(base / "hf-nan", nan),
            "{HFINF}": write_hf(base / "hf-inf", inf),
            "{HFVOCAB}": write_hf(base / "hf-vocab", params, vocab_size=10**9),
            "{HFLEN}": write_hf(base / "hf-len", params, model_length=10**12),
            "{HFINT}": write_hf(base / "hf-int", ints), "{CKPTNAN}": str(ckpt)}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile")
    cache = base / "cache"
    train_toy(base / "ck", cache)
    fx = {"{CK}": str(base / "ck"), "cache": str(cache), "base": base, **_sources(base)}
    other = base / "other-hf"
    write_hf(other, random_duo_params(V, D, C, NB, NH, seed=1))
    convert(other, base / "conv")
    (base / "file.txt").write_text("not a directory\n")
    (base / "empty").mkdir()
    (base / "loop").symlink_to(base / "loop")
    os.mkfifo(base / "fifo")
    ids = " ".join(str(i % 12) for i in range(L))
    (base / "ids.txt").write_text(f"{ids}\n" * 4)
    (base / "nul.txt").write_bytes(f"{ids}\n1 2\0 3\n".encode())
    with open(base / "big.txt", "wb") as fh:  # sparse: 65 MB on paper, nothing on disk
        fh.truncate(65 * 2**20)
    (base / "many.txt").write_text("1 2\n" * 100_001)
    fx.update({"{CONV}": str(base / "conv"), "{FILE}": str(base / "file.txt"), "{EMPTY}": str(base / "empty"),
               "{LOOP}": str(base / "loop"), "{FIFO}": str(base / "fifo"), "{IDS}": str(base / "ids.txt"),
               "{NUL}": str(base / "nul.txt"), "{BIG}": str(base / "big.txt"), "{MANY}": str(base / "many.txt")})
    return fx


@pytest.mark.parametrize(("argv", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_input_is_refused_in_one_line(fixtures, tmp_path, monkeypatch, capsys, argv, words):
    assert_refused_in_one_line(argv, words, fixtures, TOY, tmp_path, monkeypatch, capsys)
