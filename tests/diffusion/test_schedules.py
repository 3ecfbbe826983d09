import math

import pytest
import torch

from basinlab.diffusion import CosineSchedule, LogLinearSchedule, get_schedule


@pytest.mark.parametrize("sched", [LogLinearSchedule(1e-3), CosineSchedule(1e-3), CosineSchedule(0.0)])
def test_dalpha_matches_central_differences(sched):
    t = torch.linspace(0.01, 0.99, 41, dtype=torch.float64)
    h = 1e-6
    fd = (sched.alpha(t + h) - sched.alpha(t - h)) / (2 * h)
    assert torch.allclose(sched.dalpha(t), fd, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("sched", [LogLinearSchedule(1e-3), CosineSchedule(1e-3)])
def test_alpha_endpoints_monotone_and_sigma(sched):
    assert float(sched.alpha(0.0)) == pytest.approx(1.0, abs=1e-12)
    # alpha_1 = eps for log-linear; cosine: 1 - cos(pi/2 * eps)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    a = sched.alpha(t)
    assert (a[1:] < a[:-1]).all()
    assert torch.allclose(sched.sigma(t), -torch.log(a))
    assert sched.alpha(t).dtype == torch.float64


def test_loglinear_values():
    s = LogLinearSchedule(1e-3)
    assert float(s.alpha(1.0)) == pytest.approx(1e-3)
    assert float(s.alpha(0.5)) == pytest.approx(1 - 0.999 * 0.5)
    c = CosineSchedule(1e-3)
    assert float(c.alpha(0.3)) == pytest.approx(1 - math.cos(math.pi / 2 * (1 - 0.999 * 0.3)))


def test_get_schedule_unknown():
    with pytest.raises(ValueError, match="unknown schedule"):
        get_schedule("linear")
