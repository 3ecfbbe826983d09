"""The DiT: shapes, adaLN-zero initialisation, rotary positions, presets, the denoiser wrapper."""

from __future__ import annotations

import math

import pytest
import torch

from basinlab.config import ModelConfig
from basinlab.diffusion import get_schedule
from basinlab.errors import BasinlabError
from basinlab.models import PRESETS, DiT, NetworkDenoiser, build_model, count_flops_per_token, resolve_arch
from basinlab.models.dit import Rotary


def _small(V: int = 32, L: int = 16, **kw) -> DiT:
    torch.manual_seed(0)
    args = {"n_layer": 2, "d_model": 32, "n_head": 4, "d_cond": 16}
    args.update(kw)
    return DiT(V, L, **args)


def _randomise(model: DiT) -> None:
    """Give the zero-initialised layers random weights so that the network computes something."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_forward_shapes_and_dtype() -> None:
    model = _small()
    z = torch.randint(0, 32, (3, 16))
    logits = model(z, torch.rand(3))
    assert logits.shape == (3, 16, 32) and logits.dtype == torch.float32
    # longer inputs than the rotary cache still work
    assert model(torch.randint(0, 32, (2, 40)), torch.rand(2)).shape == (2, 40, 32)


def test_adaln_zero_init() -> None:
    model = _small()
    for block in model.blocks:
        assert torch.count_nonzero(block.adaLN.weight) == 0
        assert torch.count_nonzero(block.adaLN.bias) == 0
    assert torch.count_nonzero(model.final.head.weight) == 0
    # every block is the identity at initialisation, and the logits are zero (uniform x_theta)
    x = torch.randn(2, 16, 32)
    c = torch.randn(2, 16)
    for block in model.blocks:
        assert torch.equal(block(x, c), x)
    z = torch.randint(0, 32, (2, 16))
    assert torch.count_nonzero(model(z, torch.rand(2))) == 0
    # gradients still reach the head and the modulation at initialisation
    model(z, torch.rand(2)).logsumexp(-1).sum().backward()
    (model(z, torch.rand(2))[..., 0].sum()).backward()
    assert model.final.head.weight.grad.abs().sum() > 0


def test_conditioning_on_sigma_matters() -> None:
    model = _small()
    _randomise(model)
    z = torch.randint(0, 32, (1, 16)).expand(2, 16)
    out = model(z, torch.tensor([0.1, 3.0]))
    assert not torch.allclose(out[0], out[1])


def test_rotary_scores_depend_only_on_relative_position() -> None:
    torch.manual_seed(0)
    rot = Rotary(head_dim=16, seq_len=64)
    q = torch.randn(16)
    k = torch.randn(16)
    L = 40
    qs = q.expand(1, 1, L, 16).contiguous()
    ks = k.expand(1, 1, L, 16).contiguous()
    rq, rk = rot(qs, ks)
    scores = (rq[0, 0] @ rk[0, 0].T).double()  # scores[m, n] = <R_m q, R_n k>
    for shift in (1, 5, 17):
        assert torch.allclose(scores[shift:, shift:], scores[: L - shift, : L - shift], atol=1e-4)
    # and rotation preserves norms (it is a rotation)
    assert torch.allclose(rq.norm(dim=-1), qs.norm(dim=-1), atol=1e-5)
    # a position-free model would give a constant score; rotary does not
    assert scores[0].std() > 1e-3


def test_network_sees_order_through_rotary() -> None:
    """Permuting the input changes the outputs non-trivially (no absolute embeddings, yet positional)."""
    model = _small()
    _randomise(model)
    model.eval()
    z = torch.randint(0, 32, (1, 16))
    sigma = torch.tensor([0.5])
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(3))
    a = model(z[:, perm], sigma)
    b = model(z, sigma)[:, perm]
    assert not torch.allclose(a, b, atol=1e-4)


def test_dropout_only_in_training() -> None:
    model = _small(dropout=0.5)
    _randomise(model)
    z = torch.randint(0, 32, (2, 16))
    s = torch.rand(2)
    model.eval()
    assert torch.equal(model(z, s), model(z, s))
    model.train()
    assert not torch.equal(model(z, s), model(z, s))


def test_preset_parameter_counts() -> None:
    micro = build_model("micro", 8192, 32)
    assert 1e6 <= micro.num_params() <= 5e6
    for name, (n_layer, d) in {"tiny": (8, 256), "small": (12, 768), "medium": (24, 1024)}.items():
        arch = resolve_arch(name)
        assert (arch["n_layer"], arch["d_model"]) == (n_layer, d)
        model = build_model(name, 8192, 32) if name != "medium" else None
        if model is None:  # count medium without allocating it twice: meta device
            with torch.device("meta"):
                model = build_model(name, 8192, 32)
        g = model.param_groups()
        body = g["blocks"] + g["adaln"] + g["cond"]  # the transformer without embedding and head
        ref = 12 * n_layer * d * d
        # adaLN adds d_cond * 6 d per block: 25% of 12 d^2 for tiny (d_cond 128, d 256), 8% for small
        assert abs(body / ref - 1) < 0.3, (name, body, ref)
        assert abs(g["blocks"] / ref - 1) < 0.01


def test_flops_formula() -> None:
    model = build_model("micro", 32, 32)
    g = model.param_groups()
    expected = 6 * (g["blocks"] + g["head"]) + 12 * 4 * 128 * 32 + 6 * (g["adaln"] + g["cond"]) / 32
    assert model.flops_per_token() == pytest.approx(expected)
    assert model.flops_per_token(training=False) == pytest.approx(expected / 3)
    assert count_flops_per_token(100, 1, 8, 4) == 6 * 100 + 12 * 8 * 4


def test_presets_and_overrides() -> None:
    assert set(PRESETS) == {"micro", "tiny", "small", "medium"}
    study = {  # the published study's sizes (SPEC 5 "Protocols")
        "tiny": {"n_layer": 8, "d_model": 256, "n_head": 8, "d_cond": 128, "dropout": 0.1},
        "small": {"n_layer": 12, "d_model": 768, "n_head": 12, "d_cond": 128, "dropout": 0.1},
        "medium": {"n_layer": 24, "d_model": 1024, "n_head": 16, "d_cond": 128, "dropout": 0.1},
    }
    for name, arch in study.items():
        assert resolve_arch(name) == arch
    arch = resolve_arch(ModelConfig(preset="tiny", n_layer=3, dropout=0.2))
    assert arch["n_layer"] == 3 and arch["d_model"] == 256 and arch["dropout"] == 0.2
    with pytest.raises(BasinlabError, match="unknown model preset 'huge'.*micro, tiny, small, medium"):
        build_model(ModelConfig(preset="huge"), 32, 32)
    with pytest.raises(BasinlabError, match="n_head"):
        resolve_arch(ModelConfig(preset="micro", n_head=3))


def test_network_denoiser_protocol() -> None:
    model = _small()
    _randomise(model)
    model.train()
    sched = get_schedule("loglinear")
    den = NetworkDenoiser(model, sched, device="cpu", batch_size=2)
    z = torch.randint(0, 32, (5, 16))
    t = torch.rand(5, dtype=torch.float64)
    logp = den(z, t)
    assert logp.shape == (5, 16, 32) and logp.dtype == torch.float32
    assert torch.allclose(logp.exp().sum(-1), torch.ones(5, 16), atol=1e-5)
    assert not logp.requires_grad
    assert model.training  # mode restored
    # the chunked result equals one big call, and t enters through sigma_t = -log alpha_t
    model.eval()
    full = torch.log_softmax(model(z, sched.sigma(t).float()), -1)
    assert torch.allclose(logp, full, atol=1e-5)
    assert den.vocab_size == 32 and den.schedule is sched
    assert torch.allclose(den(z, 0.5), den(z, torch.full((5,), 0.5, dtype=torch.float64)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_denoiser_matches_fp32() -> None:
    model = _small(V=64, L=32, d_model=64)
    _randomise(model)
    sched = get_schedule("loglinear")
    z = torch.randint(0, 64, (4, 32))
    t = torch.rand(4, dtype=torch.float64)
    ref = NetworkDenoiser(model, sched, device="cpu", precision="fp32")(z, t)
    gpu = NetworkDenoiser(model, sched, device="cuda", precision="auto")
    out = gpu(z, t)
    assert out.device == z.device and out.dtype == torch.float32
    assert math.isclose(float((out.exp() - ref.exp()).abs().max()), 0.0, abs_tol=0.05)
    out32 = NetworkDenoiser(model, sched, device="cuda", precision="fp32")(z.cuda(), t.cuda())
    assert out32.is_cuda and torch.allclose(out32.cpu(), ref, atol=1e-3)
