"""``models.build``: the one constructor (issue 15), sized by the forward process; time conditioning optional."""

from __future__ import annotations

import torch

from basinlab.config import ModelConfig
from basinlab.diffusion import MaskedProcess
from basinlab.models import build


def test_build_sizes_the_network_by_the_process():
    cfg = ModelConfig(preset="micro", n_layer=1, d_model=32, n_head=2, d_cond=16)
    assert build(cfg, 10, 8).vocab_size == 10
    assert build(cfg, 10, 8, process="masked").vocab_size == 11
    assert build(cfg, 10, 8, process=MaskedProcess(10, mask_index=3)).vocab_size == 10
    arch = build(cfg, 10, 8).arch()
    again = build(arch, 10, 8)  # a checkpoint's arch dict rebuilds the same shapes
    assert {k: v.shape for k, v in again.state_dict().items()} == {
        k: v.shape for k, v in build(cfg, 10, 8).state_dict().items()}


def test_time_conditioning_off_ignores_sigma():
    torch.manual_seed(0)
    cfg = ModelConfig(preset="micro", n_layer=1, d_model=32, n_head=2, d_cond=16, time_conditioning=False)
    model = build(cfg, 10, 8)
    for p in model.parameters():  # adaLN-zero starts as the identity: perturb so the conditioning matters
        torch.nn.init.normal_(p, std=0.2)
    z = torch.randint(0, 10, (3, 8))
    assert not model.arch()["time_conditioning"]
    assert torch.equal(model(z, torch.full((3,), 0.1)), model(z, torch.full((3,), 2.0)))
    model.time_conditioning = True
    assert not torch.allclose(model(z, torch.full((3,), 0.1)), model(z, torch.full((3,), 2.0)))
