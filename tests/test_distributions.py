"""Pyro-shaped count likelihoods agree with scvi-tools' and sit inside a cell plate."""

import pyro
import pytest
import torch
from scvi.distributions import NegativeBinomial, ZeroInflatedNegativeBinomial

from deltavae.distributions import (
    LIKELIHOODS,
    CountDistribution,
    Likelihood,
    count_distribution,
    count_log_prob,
)


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
    # one value per cell: scvi-tools' ZINB log-density summed over the cell's 11 genes
    expected = ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi).log_prob(x).sum(-1)
    torch.testing.assert_close(trace.nodes["obs"]["log_prob"], expected, rtol=1e-4, atol=1e-3)


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


# ----------------------------------------------------------------------------- fused log-density
def _hard_params(dtype, seed=0):
    """Random counts with zeros, very large counts and means, tiny and huge theta."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(9, 40, generator=g, dtype=torch.float64) * 30 + 1e-3
    mu[0], mu[1] = 1e-7, 1e5
    theta = torch.rand(40, generator=g, dtype=torch.float64) * 5 + 1e-4
    theta[:3] = torch.tensor([1e-6, 1e-3, 1e4], dtype=torch.float64)
    zi = torch.randn(9, 40, generator=g, dtype=torch.float64) * 3
    x = torch.poisson(mu.clamp(max=1e4), generator=g)
    x[:, 5] = 0
    x[2] = 1e4
    return [t.to(dtype) for t in (x, mu, theta, zi)]


def _scvi_log_prob(x, mu, theta, zi):
    if zi is None:
        return NegativeBinomial(mu=mu, theta=theta).log_prob(x)
    return ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=zi).log_prob(x)


@pytest.mark.parametrize("zinb", [True, False])
@pytest.mark.parametrize("sparse", [True, False])
def test_fused_log_prob_is_scvi_tools(zinb, sparse):
    """The same numbers as scvi-tools' log_prob (to 1e-5, float32) and gradients at least as
    close to float64's as scvi-tools' own, on zeros, large counts and tiny theta."""
    x, mu, theta, zi = _hard_params(torch.float32)
    zi = zi if zinb else None
    ours = count_log_prob(x, mu, theta, zi, sparse=sparse)
    ref = _scvi_log_prob(x, mu, theta, zi)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert (x == 0).any() and (x == 1e4).any() and ours.shape == x.shape

    def grads(fn, dtype):
        leaves = [t.to(dtype).requires_grad_() for t in (mu, theta) + ((zi,) if zinb else ())]
        weights = torch.linspace(-1, 1, x.numel(), dtype=dtype).view_as(x)
        (fn(x.to(dtype), *leaves) * weights).sum().backward()
        return [t.grad.double() for t in leaves]

    def fused(x, *args):
        return count_log_prob(x, *args, sparse=sparse)

    truth = grads(
        _scvi_log_prob if zinb else lambda x, m, t: _scvi_log_prob(x, m, t, None), torch.float64
    )
    ours64 = grads(fused, torch.float64)
    ours32 = grads(fused, torch.float32)
    ref32 = grads(
        _scvi_log_prob if zinb else lambda x, m, t: _scvi_log_prob(x, m, t, None), torch.float32
    )
    for t, o64, o32, r32 in zip(truth, ours64, ours32, ref32, strict=True):
        torch.testing.assert_close(o64, t, rtol=1e-9, atol=1e-9)
        scale = t.abs().clamp(min=1)
        assert ((o32 - t).abs() / scale).max() <= max(((r32 - t).abs() / scale).max(), 1e-6)


def test_fused_log_prob_broadcasts_theta_per_cell_and_samples():
    x, mu, theta, zi = _hard_params(torch.float64, seed=1)
    per_cell = theta.expand_as(mu) * torch.linspace(0.5, 2, 9, dtype=torch.float64)[:, None]
    torch.testing.assert_close(
        count_log_prob(x, mu, per_cell, zi), _scvi_log_prob(x, mu, per_cell, zi)
    )
    # Samples of cells first, as in importance sampling: (samples, cells, genes).
    stacked = torch.stack([mu, 2 * mu])
    torch.testing.assert_close(
        count_log_prob(x, stacked, theta, zi.expand_as(stacked))[1],
        _scvi_log_prob(x, 2 * mu, theta, zi),
    )
    theta = theta.clone().requires_grad_()
    count_log_prob(x, stacked, theta, zi.expand_as(stacked)).sum().backward()
    assert theta.grad.shape == theta.shape and torch.isfinite(theta.grad).all()


def test_count_distribution_class_in_a_plate():
    mu, theta, zi, x = _params()
    d = CountDistribution(mu, theta, zi)

    def model():
        with pyro.plate("cells", 7):
            pyro.sample("obs", d.to_event(1), obs=x)

    trace = pyro.poutine.trace(model).get_trace()
    trace.compute_log_prob()
    torch.testing.assert_close(
        trace.nodes["obs"]["log_prob"], _scvi_log_prob(x, mu, theta, zi).sum(-1)
    )
    torch.testing.assert_close(d.mean, mu * torch.sigmoid(-zi))
    assert d.sample().shape == (7, 11) and d.expand((2, 7, 11)).batch_shape == (2, 7, 11)


def test_count_log_prob_computes_half_precision_inputs_in_float32():
    """Under mixed precision a linear layer hands the dropout logits over in bfloat16: the
    log-density is computed in float32 from them (as from their exact float32 values), not in
    bfloat16, whose 8 bits of mantissa put softplus 0.4% off. Gradients reach the logits."""
    from deltavae.distributions import count_log_prob

    g = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((50, 30), 3.0), generator=g)
    mu = torch.rand(50, 30, generator=g) * 5 + 0.1
    theta = torch.rand(30, generator=g) * 3 + 0.5
    zi = (torch.randn(50, 30, generator=g) * 3).to(torch.bfloat16).requires_grad_()
    got = count_log_prob(x, mu, theta, zi)
    want = count_log_prob(x, mu, theta, zi.detach().float())
    assert got.dtype == torch.float32
    assert torch.allclose(got, want, rtol=1e-6, atol=1e-6)
    got.sum().backward()
    assert zi.grad is not None and zi.grad.dtype == torch.bfloat16


def test_zinb_draws_and_moments_where_float32_rounds_probs_to_one():
    """mu / theta past ~2e7 makes sigmoid(logits) exactly 1 in float32: Pyro's parameter check
    (on outside training) refused the ZINB's draws, mean and variance."""
    mu, theta = torch.tensor([1e5, 2.0]), torch.tensor([1e-4, 1.0])
    d = CountDistribution(mu, theta, torch.zeros(2))
    with pyro.validation_enabled(True):
        draws, mean, variance = d.sample((500,)), d.mean, d.variance
    assert torch.isfinite(draws).all() and (draws >= 0).all()
    torch.testing.assert_close(mean, mu / 2, rtol=1e-3, atol=0.0)
    torch.testing.assert_close(
        variance,
        ZeroInflatedNegativeBinomial(mu=mu, theta=theta, zi_logits=torch.zeros(2)).variance,
        rtol=1e-3,
        atol=0.0,
    )


def test_count_distribution_checks_values_and_parameters_when_asked():
    """validate_args=True was ignored: a negative count scored as a ZINB zero."""
    mu, theta, zi, x = _params()
    d = CountDistribution(mu, theta, zi, validate_args=True)
    torch.testing.assert_close(d.log_prob(x), _scvi_log_prob(x, mu, theta, zi))
    for bad in (-x - 1, x + 0.5):
        with pytest.raises(ValueError, match="support"):
            d.log_prob(bad)
    with pytest.raises(ValueError, match="support"):
        d.expand((2, 7, 11)).log_prob(-x - 1)
    with pytest.raises(ValueError, match="theta"):
        CountDistribution(mu, torch.zeros_like(theta), validate_args=True)
    with pytest.raises(ValueError, match="mu"):
        CountDistribution(-mu, theta, validate_args=True)
    with pyro.validation_enabled(True):  # unasked, nothing is checked (the models' fast path)
        assert CountDistribution(mu, theta, zi).log_prob(x + 0.5).shape == x.shape


def test_bernoulli_site_scores_grey_values_with_pyro_validation_on():
    """train(validate_distributions=True) on MNIST's grey pixels raised Pyro's support error."""
    lik = Likelihood("bernoulli")
    params, x = {"out": torch.randn(4, 6)}, torch.rand(4, 6)
    with pyro.validation_enabled(True):
        got = lik.pyro(params).log_prob(x)
        total = lik.log_prob(params, x)
    torch.testing.assert_close(got, lik.torch(params).log_prob(x))
    torch.testing.assert_close(total, got.sum(-1))


def test_count_distribution_mean_and_variance_are_scvi_tools_at_extremes():
    """Pyro's moments (logits with an eps) put the mean 1e-4 low at theta 1e-4, and its ZINB
    variance E[x^2] - E[x]^2 0.4% off in float32 at mu 1e5, theta 1e6."""
    mu, theta = torch.tensor([1e5, 1e5, 3.0]), torch.tensor([1e-4, 1e6, 2.0])
    zi = torch.tensor([0.0, -30.0, 1.0])
    for logits in (None, zi):
        ours = CountDistribution(mu, theta, logits)
        scvi = (
            NegativeBinomial(mu=mu.double(), theta=theta.double())
            if logits is None
            else ZeroInflatedNegativeBinomial(
                mu=mu.double(), theta=theta.double(), zi_logits=logits.double()
            )
        )
        torch.testing.assert_close(ours.mean.double(), scvi.mean, rtol=1e-6, atol=0.0)
        torch.testing.assert_close(ours.variance.double(), scvi.variance, rtol=1e-6, atol=0.0)
