"""LLaDA loaded without its remote code (SPEC 2c, issue 24): tiny random checkpoints in the official key layout,
compared with a float64 restatement of the architecture (tests/models/masked_lm_reference.py)."""

from __future__ import annotations

import json

import pytest
import torch

from basinlab.errors import BasinlabError
from basinlab.models.family import family_for_dir
from basinlab.models.llada import FAMILY, MASK_ID
from basinlab.training.checkpoint import load_trained
from tests.models.masked_lm_reference import check_leave_one_out, check_logits, write


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write("llada", tmp_path_factory.mktemp("llada") / "ckpt", shards=2)


@pytest.fixture(scope="module")
def model(ckpt):
    return load_trained(ckpt, device="cpu")


def _ids(n=3, L=11, seed=1):
    return torch.randint(0, 40, (n, L), generator=torch.Generator().manual_seed(seed))  # below the mask id 40


def test_mask_id_and_family_come_from_the_checkpoint(ckpt, model):
    assert MASK_ID == 126336  # the released checkpoints' (GSAI-ML/LLaDA-8B-*: config.json mask_token_id)
    assert family_for_dir(ckpt) is FAMILY
    assert model.process.mask_index == 40 and model.process.vocab_size == 48 and model.process.n_outputs == 48
    assert model.model.time_conditioning is False and model.model.shift is False


def test_logits_equal_the_float64_architecture(ckpt, model):
    check_logits("llada", ckpt, model, _ids())


def test_attention_is_bidirectional(model):
    ids = _ids(1, 8)
    with torch.no_grad():
        a = model.model(ids, None)
        ids2 = ids.clone()
        ids2[0, -1] = (ids2[0, -1] + 1) % 40
        b = model.model(ids2, None)
    assert not torch.allclose(a[0, 0], b[0, 0])  # the first position sees the last one


def test_leave_one_out_equals_the_architecture_masked_at_one_position(ckpt, model):
    check_leave_one_out("llada", ckpt, model, _ids(2, 9))


@pytest.mark.parametrize("change, message", [
    ({"alibi": True}, "alibi=True is a LLaDA variant"),
    ({"include_bias": True}, "include_bias=True"),
    ({"mask_token_id": 48}, "mask_token_id 48 lies outside the vocabulary"),
    ({"n_layers": 3}, "no tensor for model.transformer.blocks.2"),
    ({"d_model": 16}, "has shape"),
])
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, ckpt, change, message):
    bad = tmp_path / "bad"
    write("llada", bad)
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(BasinlabError, match=message) as err:
        load_trained(bad)
    assert "\n" not in str(err.value)


def test_missing_shard_and_truncated_file_are_refused(tmp_path):
    bad = write("llada", tmp_path / "sharded", shards=2)
    (bad / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(BasinlabError, match="shard model-00002-of-00002.safetensors listed"):
        load_trained(bad)
    one = write("llada", tmp_path / "single")
    data = (one / "model.safetensors").read_bytes()
    (one / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(BasinlabError, match="not a readable safetensors file"):
        load_trained(one)


def test_too_big_a_model_is_refused_before_loading(tmp_path):
    big = tmp_path / "big"
    write("llada", big)
    cfg = json.loads((big / "config.json").read_text())
    (big / "config.json").write_text(json.dumps({**cfg, "d_model": 4096 * 64, "n_heads": 64, "n_layers": 64,
                                                 "mlp_hidden_size": 12288 * 64}))
    with pytest.raises(BasinlabError, match="B parameters need about .* in fp32, more than the .* free on cpu; it "
                                            "would fit"):
        load_trained(big)


def test_convert_says_no_conversion_is_needed(ckpt, tmp_path):
    from basinlab.interop import convert

    with pytest.raises(BasinlabError, match="is a llada checkpoint, which basinlab loads in place"):
        convert(ckpt, tmp_path / "out")
