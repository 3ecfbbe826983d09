import pytest
import torch

from basinlab.data.markov import MarkovSource
from basinlab.errors import BasinlabError


def test_sparse_default_source():
    m = MarkovSource()
    assert m.vocab_size == 32 and m.P.shape == (32, 32)
    assert ((m.P > 0).sum(1) == 8).all()
    assert torch.allclose(m.P.sum(1), torch.ones(32, dtype=torch.float64))
    assert torch.allclose(m.pi @ m.P, m.pi, atol=1e-10)  # stationary
    assert MarkovSource(seed=0).P.equal(m.P) and not MarkovSource(seed=1).P.equal(m.P)


def test_samples_follow_pi_and_P():
    m = MarkovSource(vocab_size=16, successors=4, seed=3)
    x = m.sample(40_000, 12, generator=torch.Generator().manual_seed(0))
    assert x.shape == (40_000, 12) and x.dtype == torch.long
    assert (m.P[x[:, :-1], x[:, 1:]] > 0).all()
    first = torch.bincount(x[:, 0], minlength=16).double() / x.shape[0]
    assert torch.allclose(first, m.pi, atol=0.01)
    counts = torch.zeros(16, 16, dtype=torch.float64)
    counts.index_put_((x[:, :-1].flatten(), x[:, 1:].flatten()), torch.ones(x[:, 1:].numel(), dtype=torch.float64),
                      accumulate=True)
    visited = counts.sum(1) >= 2000  # rows seen often enough for a 0.03 tolerance
    assert visited.sum() >= 4
    assert torch.allclose((counts / counts.sum(1, keepdim=True))[visited], m.P[visited], atol=0.03)
    again = m.sample(40_000, 12, generator=torch.Generator().manual_seed(0))
    assert again.equal(x)


def test_log_prob_and_entropy():
    pi = torch.tensor([0.25, 0.75], dtype=torch.float64)
    P = torch.tensor([[0.5, 0.5], [0.1, 0.9]], dtype=torch.float64)
    m = MarkovSource.from_matrix(pi, P)
    x = torch.tensor([[0, 1, 1], [1, 0, 0]])
    expected = torch.log(torch.tensor([0.25 * 0.5 * 0.9, 0.75 * 0.1 * 0.5], dtype=torch.float64))
    assert torch.allclose(m.log_prob(x), expected)
    import itertools

    xs = torch.tensor(list(itertools.product(range(2), repeat=3)))
    p = m.log_prob(xs).exp()
    assert float(p.sum()) == pytest.approx(1.0)
    assert m.entropy_per_token(3) == pytest.approx(float(-(p * p.log()).sum()) / 3)


def test_from_matrix_validates():
    with pytest.raises(BasinlabError, match="sum to 1"):
        MarkovSource.from_matrix(torch.tensor([0.5, 0.5]), torch.tensor([[0.5, 0.6], [0.5, 0.5]]))
    with pytest.raises(BasinlabError, match="successors"):
        MarkovSource(vocab_size=4, successors=5)
