"""The fast inference path of NetworkDenoiser: t on the model's device, and compiled == eager.

torch.compile of even the micro DiT took ~300 s on the 2-core development CPU (it agreed exactly with eager there),
so the compiled test runs only on CUDA or with BASINLAB_COMPILE_TESTS=1."""

import os

import pytest
import torch

from basinlab.diffusion import LogLinearSchedule
from basinlab.models import NetworkDenoiser, build_model

COMPILE_OK = torch.cuda.is_available() or os.environ.get("BASINLAB_COMPILE_TESTS") == "1"


def test_times_on_any_device_give_the_same_output(gen):
    torch.manual_seed(0)
    model = build_model("micro", 40, 12)
    den = NetworkDenoiser(model, LogLinearSchedule(), device="cpu", precision="fp32", batch_size=3)
    z = torch.randint(0, 40, (5, 12), generator=gen)
    t = torch.rand(5, generator=gen, dtype=torch.float64)
    out = den(z, t)
    assert out.shape == (5, 12, 40) and out.dtype == torch.float32
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(5, 12))
    whole = NetworkDenoiser(model, LogLinearSchedule(), device="cpu", precision="fp32", batch_size=None)(z, t)
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not COMPILE_OK, reason="torch.compile takes minutes on this CPU; CUDA or BASINLAB_COMPILE_TESTS=1")
def test_compiled_denoiser_matches_eager(gen):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = build_model("micro", 64, 16)
    sched = LogLinearSchedule()
    z = torch.randint(0, 64, (8, 16), generator=gen).to(dev)
    t = torch.rand(8, generator=gen, dtype=torch.float64).to(dev)
    for precision in ("fp32", "bf16") if dev == "cuda" else ("fp32",):
        eager = NetworkDenoiser(model, sched, device=dev, precision=precision, batch_size=8)(z, t)
        comp = NetworkDenoiser(model, sched, device=dev, precision=precision, batch_size=8, compile=True)(z, t)
        tol = 1e-4 if precision == "fp32" else 5e-2
        torch.testing.assert_close(comp, eager, rtol=tol, atol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the compiled reverse step is the CUDA fast path")
def test_compiled_packed_step_matches_eager():
    """The compiled reverse step draws the same tokens as the eager one (same uniforms; float rounding may move a
    draw that sits on a CDF boundary, so almost all, not all)."""
    from basinlab.diffusion.packed import _compiled_step, chain_keys, step_chains

    B, L, V = 64, 32, 1000
    g = torch.Generator(device="cuda").manual_seed(0)
    log_x = torch.log_softmax(torch.randn(B, L, V, device="cuda", generator=g), -1)
    z = torch.randint(0, V, (B, L), device="cuda", generator=g)
    a_t = torch.full((B,), 0.3, dtype=torch.float64, device="cuda")
    a_s = torch.full((B,), 0.31, dtype=torch.float64, device="cuda")
    keys = chain_keys(0, torch.arange(B, device="cuda"))
    step = torch.zeros(B, dtype=torch.long, device="cuda")
    eager = step_chains(z, log_x, a_t, a_s, keys, step)
    comp = _compiled_step()(z, log_x, a_t, a_s, keys, step)
    assert (eager == comp).float().mean() > 0.999
