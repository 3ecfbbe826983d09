"""Dream loaded without its remote code (SPEC 2c, issue 24): a tiny random checkpoint in the official (Qwen2) key
layout against a float64 restatement of the architecture, and Dream's logit shift pinned."""

from __future__ import annotations

import json

import pytest
import torch

from basinlab.errors import BasinlabError
from basinlab.models.dream import FAMILY, MASK_ID
from basinlab.models.family import family_for_dir
from basinlab.training.checkpoint import load_trained
from tests.models.masked_lm_reference import check_leave_one_out, check_logits, write


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return write("dream", tmp_path_factory.mktemp("dream") / "ckpt")


@pytest.fixture(scope="module")
def model(ckpt):
    return load_trained(ckpt, device="cpu")


def _ids(n=3, L=11, seed=2):
    return torch.randint(0, 44, (n, L), generator=torch.Generator().manual_seed(seed))  # below the mask id 44


def test_mask_id_and_family_come_from_the_checkpoint(ckpt, model):
    assert MASK_ID == 151666  # the released checkpoints' (Dream-org/Dream-v0-*: config.json mask_token_id)
    assert family_for_dir(ckpt) is FAMILY
    assert model.process.mask_index == 44 and model.process.vocab_size == 48
    assert model.model.time_conditioning is False


def test_logits_equal_the_float64_architecture(ckpt, model):
    check_logits("dream", ckpt, model, _ids())


def test_the_shift_reads_position_l_at_l_minus_1(model):
    """Dream's own evaluation: ``cat([logits[:, :1], logits[:, :-1]])``: the row for position l is the module's
    output at l - 1, position 0 its own."""
    ids = _ids(2, 7)
    with torch.no_grad():
        shifted = model.model(ids, None)
        model.model.shift = False
        try:
            plain = model.model(ids, None)
        finally:
            model.model.shift = True
    assert torch.equal(shifted[:, 0], plain[:, 0])
    assert torch.equal(shifted[:, 1:], plain[:, :-1])
    assert not torch.allclose(shifted[:, 1:], plain[:, 1:])


def test_leave_one_out_equals_the_architecture_masked_at_one_position(ckpt, model):
    check_leave_one_out("dream", ckpt, model, _ids(2, 9))


@pytest.mark.parametrize("change, message", [
    ({"use_sliding_window": True}, "use_sliding_window=true"),
    ({"mask_token_id": None}, "mask_token_id must be a non-negative integer"),
    ({"hidden_size": 0}, "hidden_size must be a positive integer"),
])
def test_bad_checkpoints_are_refused_in_one_line(tmp_path, change, message):
    bad = write("dream", tmp_path / "bad")
    cfg = json.loads((bad / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps({**cfg, **change}))
    with pytest.raises(BasinlabError, match=message) as err:
        load_trained(bad)
    assert "\n" not in str(err.value)


def test_a_foreign_tensor_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    bad = write("dream", tmp_path / "foreign")
    t = load_file(str(bad / "model.safetensors"))
    t["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)
    save_file(t, str(bad / "model.safetensors"))
    with pytest.raises(BasinlabError, match="unexpected tensor 'model.layers.0.self_attn.q_norm.weight'"):
        load_trained(bad)
