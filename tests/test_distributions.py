"""Pyro-shaped count likelihoods agree with scvi-tools' and sit inside a cell plate."""

import pyro
import pytest
import torch
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

from deltavae.distributions import LIKELIHOODS, Likelihood, count_distribution


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


def _decoded(name):
    mu, theta, zi, x = _params(2)
    if name in ("zinb", "nb"):
        params = {"mu": mu, "theta": theta, "zi_logits": zi, "scale": mu / mu.sum(-1, True)}
        return params, x
    if name == "normal":
        return {"out": torch.log1p(mu), "log_scale": torch.zeros(11)}, torch.log1p(x)
    return {"out": zi}, (x > 5).float()


@pytest.mark.parametrize("name", LIKELIHOODS)
def test_likelihood_pyro_and_torch_agree(name):
    """One object serves the ELBO (Pyro) and scvi-tools' torch side: the same log-density."""
    lik = Likelihood(name)
    params, x = _decoded(name)
    assert lik.is_count == (name in ("zinb", "nb"))
    torch.testing.assert_close(
        lik.pyro(params).log_prob(x), lik.torch(params).log_prob(x), rtol=1e-4, atol=1e-4
    )
    assert lik.expected(params).shape == x.shape
    library = lik.log_library(x)
    assert (library is not None) == lik.is_count


def test_likelihood_expectations():
    params, _ = _decoded("normal")
    torch.testing.assert_close(Likelihood("normal").expected(params), params["out"])
    params, _ = _decoded("bernoulli")
    torch.testing.assert_close(Likelihood("bernoulli").expected(params), params["out"].sigmoid())
    params, _ = _decoded("zinb")
    torch.testing.assert_close(
        Likelihood("zinb").expected(params), Likelihood("zinb").torch(params).mean
    )


def test_likelihood_refuses_unknown_and_disallowed_names():
    with pytest.raises(ValueError, match="poisson"):
        Likelihood("poisson")
    with pytest.raises(ValueError, match="normal"):
        Likelihood("normal", allowed=("zinb", "nb"))


def test_nb_expectation_ignores_the_untrained_dropout_head():
    """An NB model's E[x | z] is mu; the decoder's dropout logits are never trained for it."""
    import torch

    from deltavae.distributions import Likelihood

    params = {
        "mu": torch.full((2, 3), 4.0),
        "theta": torch.ones(3),
        "zi_logits": torch.zeros(2, 3),
        "scale": torch.full((2, 3), 1 / 3),
    }
    torch.testing.assert_close(Likelihood("nb").expected(params), params["mu"])
    torch.testing.assert_close(Likelihood("zinb").expected(params), params["mu"] / 2)
