"""Pyro-shaped count likelihoods agree with scvi-tools' and sit inside a cell plate."""

import pyro
import pytest
import torch
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

from deltavae.distributions import count_distribution


def _params(seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(7, 11, generator=g) * 20 + 0.01
    theta = torch.rand(11, generator=g) * 5 + 0.1
    zi = torch.randn(7, 11, generator=g)
    x = torch.poisson(mu)
    x[:, 0] = 0
    return mu, theta, zi, x


def test_zinb_log_prob_matches_scvi():
    mu, theta, zi, x = _params()
    ours = count_distribution("zinb", mu, theta, zi).log_prob(x)
    ref = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi).log_prob(x)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_nb_log_prob_and_mean_match_scvi():
    mu, theta, _, x = _params(1)
    ours = count_distribution("nb", mu, theta)
    ref = NegativeBinomial(mu=mu, theta=theta)
    torch.testing.assert_close(ours.log_prob(x), ref.log_prob(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.mean, mu, rtol=1e-4, atol=1e-4)


def test_batch_shape_works_in_plate():
    mu, theta, zi, x = _params()

    def model():
        with pyro.plate("cells", 7):
            pyro.sample("obs", count_distribution("zinb", mu, theta, zi).to_event(1), obs=x)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    assert trace.nodes["obs"]["log_prob"].shape == (7,)


def test_unknown_likelihood_raises():
    mu, theta, _, _ = _params()
    with pytest.raises(ValueError, match="poisson"):
        count_distribution("poisson", mu, theta)
