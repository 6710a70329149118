"""Gamma and Poisson draws keyed by each element's place (``distributions/_keyed_draws.py``):
the right distributions, the same whatever the minibatches, and a parameter off in its last
bits (as a GPU's decoder gives) moves only the draws it must. torch's samplers read one
generator and take as many uniforms as each rejection needs: rates one part in a million
apart changed most of a read-out's counts after the first element whose rejection differed.
"""

import warnings

import numpy as np
import pytest
import torch
from scipy import stats

import deltavae as dv
from deltavae.distributions import Likelihood
from deltavae.distributions._draws import CellDraws
from deltavae.distributions._keyed_draws import keyed_uniform, poisson, standard_gamma

_M = (1 << 64) - 1


def _splitmix64(key: int, place: int, slot: int) -> float:
    """SplitMix64 in Python's integers, as Steele, Lea and Flood give it."""
    z = (key + (place * 64 + slot + 1) * 0x9E3779B97F4A7C15) & _M
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M
    return (((z ^ (z >> 31)) >> 11) + 0.5) * 2.0**-53


@pytest.mark.parametrize("key", [0, 12345, 2**63 + 7, 2**64 - 5])
def test_keyed_uniforms_are_splitmix64_in_torchs_integers(key):
    places = [0, 1, 2, 10**9, 2**40]
    got = keyed_uniform(key, torch.tensor(places), 3).tolist()
    assert got == [_splitmix64(key, p, 3) for p in places]


def test_keyed_uniforms_are_uniform_and_unrelated():
    u = keyed_uniform(5, torch.arange(200_000), 0).numpy()
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01
    other = keyed_uniform(5, torch.arange(200_000), 1).numpy()  # another slot
    assert abs(np.corrcoef(u, other)[0, 1]) < 0.01


@pytest.mark.parametrize("shape", [0.01, 0.3, 1.0, 3.0, 50.0, 1e4])
def test_gamma_draws_follow_the_gamma(shape):
    draws = standard_gamma(torch.full((100_000,), shape), key=3).numpy()
    assert stats.kstest(draws, stats.gamma(shape).cdf).pvalue > 1e-3
    assert draws.min() > 0


def test_poisson_below_10_is_the_inverse_of_its_distribution_function():
    rate = torch.exp(torch.randn(20_000, dtype=torch.float64) * 2).clamp(max=9.99)
    u = keyed_uniform(9, torch.arange(rate.numel()), 0).numpy()
    np.testing.assert_array_equal(poisson(rate, key=9).numpy(), stats.poisson.ppf(u, rate.numpy()))


@pytest.mark.parametrize("rate", [10.0, 37.5, 1e3, 1e6, 1e9])
def test_poisson_from_10_follows_the_poisson(rate):
    draws = poisson(torch.full((100_000,), rate), key=4).numpy()
    values = np.unique(draws)  # the distance of the distribution functions where they step
    ecdf = np.searchsorted(np.sort(draws), values, side="right") / draws.size
    assert np.abs(ecdf - stats.poisson(rate).cdf(values)).max() < 0.01
    assert abs(draws.mean() / rate - 1) < 4 / np.sqrt(rate * 100_000)
    assert abs(draws.var() / rate - 1) < 0.02


def test_poisson_of_no_rate_is_zero():
    assert poisson(torch.tensor([0.0, -1.0, 1e-300]), key=0).tolist() == [0.0, 0.0, 0.0]


def _nb_params(n_cells=2000, n_genes=300, seed=0, off=0.0):
    gen = torch.Generator().manual_seed(seed)
    mu = torch.exp(torch.randn(n_cells, n_genes, generator=gen) * 1.5)
    theta = torch.exp(torch.randn(n_genes, generator=gen) * 0.5 + 1.0)
    zi = torch.randn(n_cells, n_genes, generator=gen) - 2.0
    if off:  # each value moved by about ``off`` of itself, as a GPU's rounding moves them
        mu = mu * (1 + off * torch.randn(mu.shape, generator=gen))
        theta = theta * (1 + off * torch.randn(theta.shape, generator=gen))
    return {"mu": mu, "theta": theta, "zi_logits": zi}


@pytest.mark.parametrize("seed", [0, 1])
def test_counts_of_parameters_a_little_apart_move_only_where_they_must(seed):
    """2,000 x 300 ZINB counts of parameters one part in 10,000 apart (a GPU's rounding moves
    them less; more here, so that a small read-out shows it): with torch's samplers 4,766 and
    5,569 counts differed (seeds 1 and 0), in runs after each element whose rejection took
    another number of uniforms; keyed, 142 and 147, each one count whose uniform lies at an
    edge (most by one, a few where a gamma draw's rejection went the other way)."""
    lik = Likelihood("zinb")
    exact = CellDraws(0).sample(lik, _nb_params(seed=seed))
    rounded = CellDraws(0).sample(lik, _nb_params(seed=seed, off=1e-4))
    moved = (exact - rounded)[exact != rounded].abs()
    assert 0 < moved.numel() <= 0.001 * exact.numel()
    assert (moved <= 1).float().mean() > 0.7  # most a step of the distribution function
    assert (exact != CellDraws(1).sample(lik, _nb_params(seed=seed))).float().mean() > 0.2


def test_dirichlet_of_concentrations_off_in_their_last_bits():
    alpha = torch.exp(torch.randn(5000, 8, generator=torch.Generator().manual_seed(0)))
    a = CellDraws(0).dirichlet(alpha, 1, "p")
    b = CellDraws(0).dirichlet(alpha * (1 + 1e-6 * torch.randn(alpha.shape)), 1, "p")
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-8)


def test_keyed_draws_in_parts_are_the_draws_of_the_whole():
    params = _nb_params(n_cells=50, n_genes=20)
    whole = CellDraws(3).sample(Likelihood("nb"), params)
    parts, draws = [], CellDraws(3)
    for cells in (slice(0, 7), slice(7, 8), slice(8, 50)):
        part = {"mu": params["mu"][cells], "theta": params["theta"], "zi_logits": None}
        parts.append(draws.sample(Likelihood("nb"), part))
    assert torch.equal(whole, torch.cat(parts))


def test_posterior_predictive_draws_of_a_model_off_in_its_last_bits():
    """A GPU computes a model's decoder to other last bits than the CPU: the seeded posterior
    predictive counts of a model whose weights are moved by one part in a thousand differ
    from the model's in 0.14% of the values (torch's samplers: 6.3%)."""
    adata = dv.datasets.synthetic_counts(n_cells=300, n_genes=200, n_clusters=3, seed=0)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, accelerator="cpu", enable_progress_bar=False)
    torch.manual_seed(0)
    exact = model.posterior_predictive_sample(n_samples=2).todense()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.module.parameters():
            p.mul_(1 + 1e-3 * torch.randn(p.shape, generator=gen))
    torch.manual_seed(0)
    rounded = model.posterior_predictive_sample(n_samples=2).todense()
    assert exact.sum() > 10_000
    assert (exact != rounded).sum() <= 0.005 * exact.size


def test_parameters_of_a_diverged_model_are_refused_by_name():
    """NaN shapes sent the gamma's rejection round after round to a RuntimeError, and NaN
    rates were drawn as 0 counts: both are refused, naming the likely cause."""
    nan = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"1 of 2 gamma shapes .* diverged training"):
        standard_gamma(nan, key=0)
    with pytest.raises(ValueError, match=r"1 of 2 Poisson rates .* diverged training"):
        poisson(nan, key=0)
    with pytest.raises(ValueError, match="gamma shapes"):
        standard_gamma(torch.tensor([-1.0]), key=0)
    with pytest.raises(ValueError, match="must be finite"):
        poisson(torch.tensor([float("inf")]), key=0)
    params = _nb_params(n_cells=3, n_genes=4)
    params["mu"][1, 2] = float("nan")
    with pytest.raises(ValueError, match="Poisson rates"):
        CellDraws(0).sample(Likelihood("nb"), params)
    assert standard_gamma(torch.tensor([0.0, float("inf")]), key=0).tolist()[1] == float("inf")


def test_draws_in_chunks_are_the_draws_at_once(monkeypatch):
    """CellDraws draws CHUNK elements at a time (bounding the samplers' float64 temporaries):
    any chunk size gives the same counts, gammas and Dirichlet draws."""
    import deltavae.distributions._draws as draws_module

    params = _nb_params(n_cells=40, n_genes=30)
    alpha = torch.exp(torch.randn(40, 5, generator=torch.Generator().manual_seed(2)))

    def read():
        draws = CellDraws(4)
        return (
            draws.sample(Likelihood("zinb"), params),
            draws.gamma(alpha, "g"),
            draws.dirichlet(alpha, 3, "p"),
        )

    at_once = read()
    monkeypatch.setattr(draws_module, "CHUNK", 7)
    for whole, chunked in zip(at_once, read(), strict=True):
        assert torch.equal(whole, chunked)


def test_poisson_sums_end_where_rounding_stops_them_short():
    """Below a rate of 10 the compiled loop sums the mass function until it reaches u; for u
    within 1e-16 of 1 rounding can stop the sum short of u, and the loop ends where the terms
    vanish: every count finite, none below the count at a u a little under it."""
    import deltavae.distributions._keyed_draws as keyed

    rate = np.linspace(0.01, 9.99, 500)
    count, below = np.empty(500), np.empty(500)
    top, under = np.full(500, 1 - 2.0**-53), np.full(500, 1 - 1e-9)
    assert keyed._poisson_loop(rate, top, np.uint64(0), 0, count) == -1
    assert keyed._poisson_loop(rate, under, np.uint64(0), 0, below) == -1
    assert np.isfinite(count).all() and (count >= below).all() and count.max() < 400


@pytest.mark.parametrize("key", [0, 2**63 + 7])
def test_the_compiled_loops_uniforms_are_keyed_uniforms(key):
    """The Poisson's compiled rejection rounds read SplitMix64 as keyed_uniform does."""
    import deltavae.distributions._keyed_draws as keyed

    for place, slot in [(0, 0), (3, 5), (10**9, 63), (2**40, 1)]:
        assert keyed._uniform_at(np.uint64(key), place, slot) == _splitmix64(key, place, slot)


def test_the_compiled_normal_quantiles_are_scipys():
    """The gamma's compiled loop takes its normal candidates from Cephes' ndtri, ported:
    SciPy's values to the bit, at the centre, both tails and the ends."""
    import numba

    from deltavae.distributions._ndtri import ndtri

    @numba.njit
    def quantiles(u, out):
        for i in range(u.size):
            out[i] = ndtri(u[i])

    rng = np.random.default_rng(0)
    u = np.r_[rng.random(100_000), rng.random(20_000) ** 30, 1 - rng.random(20_000) ** 30]
    u = np.r_[u, 0.0, 1.0, 5e-324, np.exp(-2), 1 - np.exp(-2), 0.5, 1 - 2.0**-53]
    out = np.empty(u.size)
    quantiles(u, out)
    np.testing.assert_array_equal(out, stats.norm.ppf(u))


def test_the_loops_compile_where_no_cache_can_be_written(monkeypatch):
    """numba.njit(cache=True) raised at the decoration ("cannot cache function ...: no
    locator available"), so at import deltavae, where neither the package's __pycache__ nor
    a user cache directory was writable: compiled uncached there. numba's own refusal is
    stood in for (its cache locators emptied, a half-built dispatcher was left in the
    process), the real njit compiles the fallback."""
    import numba

    import deltavae.distributions._jit as jit

    real, asked = numba.njit, []

    def no_cache(*args, **options):
        asked.append(options.get("cache", False))
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'halve': no locator available for file")
        return real(*args, **options)

    monkeypatch.setattr(jit.numba, "njit", no_cache)

    @jit.compiled(error_model="numpy")
    def halve(x):
        return x / 2

    assert asked == [True, False]
    assert halve(3.0) == 1.5
    assert type(halve._cache).__name__ == "NullCache"  # numba's dispatcher without a cache
