"""Seeded read-outs (generated cells, translated and shifted counts) draw their random numbers
on the CPU, cell after cell (:class:`deltavae.distributions._draws.CellDraws`): the same seed
gives the same numbers whatever the ``batch_size``, and on a GPU as on the CPU. A GPU's
generator draws other numbers than the CPU's, which :class:`_device_tracker.DeviceTracker`
(``draws=True``) catches on a CPU: any random draw made on the model's device."""

import functools
import warnings

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from _device_tracker import DeviceTracker, on_device, track_moves

import deltavae as dv
from deltavae.distributions import Likelihood
from deltavae.module import CGMDVAEModule

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 64}


@pytest.fixture(scope="module")
def trained():
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, mixture_init="kmeans", mixture_init_epoch=0, **TRAIN)
    return model, adata[adata.obs["condition"] == "ctrl"].copy()


def _readouts(model, ctrl, batch_size=None):
    """Every seeded read-out that draws counts from minibatches, by name."""
    return {
        "translate (averaged with the observed responses)": lambda: model.translate(
            ctrl, "stim", batch_size=batch_size, seed=0
        ),
        "translate (residual)": lambda: model.translate(
            ctrl, "stim", batch_size=batch_size, seed=0, response_weight=0
        ),
        "translate (decoded, one posterior predictive draw)": lambda: model.translate(
            ctrl, "stim", batch_size=batch_size, seed=0, residual=False, response_weight=0
        ),
        "latent shift": lambda: model.predict_perturbation(
            ctrl, "stim", method="latent_shift", batch_size=batch_size, seed=0
        ),
    }


def _tracked(module, call):
    """``call()`` with ``module`` marked as on the device, under a tracker of device draws
    (warnings of the tiny models silenced): the tracker, its mixes and report."""
    on_device(module)
    tracker = DeviceTracker(draws=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with tracker:
            call()
    return tracker


def _draws_nothing_on_the_device(module, call, name: str = "") -> None:
    """``call()`` (under :func:`_tracked`) makes no random draw on ``module``'s device nor
    mixes devices; the tracker's report, after ``name``, says where it did."""
    tracker = _tracked(module, call)
    assert not tracker.mixes, f"{name}: {tracker.report()}" if name else tracker.report()


def _model(request, kind: str):
    """The trained model of the fixture named ``kind`` (``trained`` holds it with cells)."""
    model = request.getfixturevalue(kind)
    return model[0] if isinstance(model, tuple) else model


def _scvi_seed_4():
    scvi.settings.seed = 4  # torch's generator and numpy's (DE's choice of cells)


def _at_one_seed(read, seed=lambda: torch.manual_seed(4), quiet=True):
    """``read(batch_size=7)`` after ``seed()``, then ``read()`` after ``seed()`` again and
    ``read()`` once more (another seed): ``(first, again, other)``; ``quiet``: the tiny
    models' warnings silenced meanwhile."""
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        seed()
        first = read(batch_size=7)
        seed()
        again = read()
        return first, again, read()


def test_seeded_counts_do_not_depend_on_batch_size(trained):
    """The draws followed the minibatches: a NB draw (gamma, then Poisson, per minibatch)
    interleaved the streams by batch_size, and 2/3 of the decoded and shifted counts changed
    between batch_size=16 and 64."""
    model, ctrl = trained
    small, large = _readouts(model, ctrl, 16), _readouts(model, ctrl, 64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in small:
            a, b = small[name]().layers["counts"], large[name]().layers["counts"]
            assert np.array_equal(a, b), f"{name}: {(a != b).sum()} counts differ"


def test_seeded_read_outs_draw_nothing_on_the_device(trained, monkeypatch):
    """On a GPU the counts were drawn with the GPU's generator (other numbers than the CPU's),
    and translate's average with the observed responses drew its rounding from the CPU's
    generator, which the CPU path had advanced past the model's draws and a GPU had not."""
    model, ctrl = trained
    track_moves(monkeypatch)
    calls = {
        **_readouts(model, ctrl),
        "sample": lambda: model.sample(20, seed=0),
        "sample (cluster and condition given)": lambda: model.sample(
            20, cluster=1, condition="stim", seed=0
        ),
    }
    # inference() drew z and w from q on the device also for these read-outs, which take
    # the posterior means: draws that reached no result. They draw nothing there now.
    found = {}
    for name, call in calls.items():
        tracker = _tracked(model.module, call)
        if tracker.mixes:
            found[name] = [at for _, at in tracker.mixes]
    assert not found, "\n".join(f"{name}: {report}" for name, report in found.items())


@pytest.mark.parametrize(
    "likelihood, covariance", [("normal", "diag"), ("bernoulli", "full"), ("nb", "diag")]
)
def test_generated_cells_of_every_likelihood_are_drawn_on_the_cpu(likelihood, covariance):
    """Each likelihood's draw and both prior covariances; the same seed, the same cells."""
    from deltavae.distributions._draws import CellDraws

    module = CGMDVAEModule(
        12, 3, [2], n_latent=3, n_hidden=8, likelihood=likelihood, prior_covariance=covariance
    ).eval()
    on_device(module)
    cats = torch.zeros(40, 1, dtype=torch.long)
    stats = (5.0, 0.3) if likelihood == "nb" else None
    tracker = DeviceTracker(draws=True)
    with tracker:
        first = module.generate(40, cats, None, stats, CellDraws(3))
    assert not tracker.mixes, tracker.report()
    again = module.generate(40, cats, None, stats, CellDraws(3))
    for key in ("y", "z", "x"):
        assert torch.equal(first[key], again[key]), key
    if likelihood == "bernoulli":
        assert set(first["x"].unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name", ["zinb", "nb"])
def test_count_draws_in_parts_are_the_draws_of_the_whole(name):
    """The CPU kernels read each generator element by element: minibatches of any size draw
    what one batch of every cell draws. The counts have the distribution's mean and variance."""
    from deltavae.distributions._draws import CellDraws

    gen = torch.Generator().manual_seed(0)
    mu = torch.rand(600, 20, generator=gen) * 20 + 0.1
    theta = torch.rand(20, generator=gen) * 3 + 0.5
    params = {"mu": mu, "theta": theta, "zi_logits": torch.full((600, 20), -1.0)}
    lik = Likelihood(name)
    whole = CellDraws(7).sample(lik, params)
    parts = CellDraws(7)
    rows = [slice(0, 1), slice(1, 250), slice(250, 600)]
    split = torch.cat(
        [
            parts.sample(lik, {k: v[r] if v.dim() == 2 else v for k, v in params.items()})
            for r in rows
        ]
    )
    assert torch.equal(whole, split)
    assert not torch.equal(whole, CellDraws(8).sample(lik, params))
    dist = lik.torch({**params, "scale": mu})
    many = torch.stack([CellDraws(s).sample(lik, params) for s in range(40)])
    ratio = many.mean(0).mean() / dist.mean.mean()
    assert abs(float(ratio) - 1) < 0.02
    assert abs(float(many.var(0).mean() / dist.variance.mean()) - 1) < 0.1


def test_the_other_seeded_read_outs_draw_nothing_on_the_device(monkeypatch):
    """The seeded read-outs the test above leaves out: ZINBVAE's latent shift (balanced by
    a column) and nearest responses, and of a labelled CGMDVAE of two condition keys cells
    of a label (``sample(label=...)``, in parts), conditions drawn jointly, and a translation
    to both keys."""
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["cell_type"] = "t" + adata.obs["cluster"].astype(str)
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2, "d1", "d2")
    vae_data, cgmd_data = adata.copy(), adata.copy()
    dv.model.ZINBVAE.setup_anndata(vae_data, batch_key="condition")
    vae = dv.model.ZINBVAE(vae_data, n_latent=3, n_hidden=16)
    dv.model.CGMDVAE.setup_anndata(
        cgmd_data, condition_key=["condition", "donor"], labels_key="cell_type"
    )
    model = dv.model.CGMDVAE(cgmd_data, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        vae.train(max_epochs=1, **TRAIN)
        model.train(max_epochs=1, **TRAIN)
    ctrl = vae_data[vae_data.obs["condition"] == "ctrl"].copy()
    pp = {"condition_key": "condition", "balance_key": "cell_type", "seed": 0}
    calls = {
        vae: {
            "latent shift": lambda: vae.predict_perturbation(
                ctrl, "stim", method="latent_shift", **pp
            ),
            "nearest response": lambda: vae.predict_perturbation(
                ctrl, "stim", method="nearest_response", **pp
            ),
        },
        model: {
            "sample by label": lambda: model.sample(20, label="t1", seed=0, batch_size=6),
            "sample, conditions drawn": lambda: model.sample(20, seed=1, batch_size=6),
            "translate to both keys": lambda: model.translate(
                cgmd_data[cgmd_data.obs["condition"] == "ctrl"].copy(),
                {"condition": "stim", "donor": "d1"},
                seed=0,
            ),
        },
    }
    track_moves(monkeypatch)
    found = {}
    for owner, reads in calls.items():
        for name, call in reads.items():
            tracker = _tracked(owner.module, call)
            if tracker.mixes:
                found[name] = tracker.report()
    assert not found, "\n".join(f"{name}: {report}" for name, report in found.items())


def test_spot_posterior_predictive_draws_nothing_on_the_device(monkeypatch):
    """The spot models' posterior_predictive_sample draws every number (Archetypes' weights,
    the imputers' proportions and latents, the counts) on the CPU, so a GPU gives the
    draws a CPU gives: the tracker finds no draw on the device, and the draws repeat."""
    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=24, seed=0)
    mix = dv.datasets.convex_mixtures(n_spots=24, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        models = [
            dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster"),
            dv.model.Archetypes(mix, n_archetypes=3, min_spots=1),
        ]
        for design in ("deconvolution", "latent"):
            models.append(
                dv.model.SpatialImputer.from_reference(
                    spots[:, :20].copy(), ref, labels_key="cluster", design=design
                )
            )
        for model in models:
            model.train(max_epochs=1, **TRAIN)
    track_moves(monkeypatch)
    found = {}
    for model in models:
        name = f"{type(model).__name__} {getattr(model, 'design_', '')}"
        tracker = _tracked(model.module, lambda m=model: m.posterior_predictive_sample(n_samples=2))
        if tracker.mixes:
            found[name] = tracker.report()
        torch.manual_seed(3)
        first = model.posterior_predictive_sample(n_samples=2, batch_size=5).todense()
        torch.manual_seed(3)
        assert np.array_equal(first, model.posterior_predictive_sample(n_samples=2).todense())
    assert not found, "\n".join(f"{name}: {report}" for name, report in found.items())


@pytest.fixture(scope="module")
def zinbvae():
    """A ZINBVAE of a latent library size and two batches (trained one epoch)."""
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=30, n_clusters=3, n_conditions=2, seed=0
    )
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, use_observed_lib_size=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    return model


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_posterior_predictive_sample_draws_on_the_cpu(request, monkeypatch, kind):
    """ZINBVAE's and CGMDVAE's posterior_predictive_sample drew z (and the latent library)
    and the counts on the model's device, minibatch by minibatch: a GPU drew other counts
    than the CPU under one seed, and batch_size=7 changed 97% of the counts not 0. Now no
    draw is made on the device, the same seed repeats the draws, and batch_size does not
    change them (also with several transform_batch, each drawn by generators of its own)."""
    model = _model(request, kind)

    def draws(**kwargs):
        return model.posterior_predictive_sample(indices=np.arange(60), **kwargs).todense()

    track_moves(monkeypatch)
    both = ["ctrl", "stim"]  # the batches; CGMDVAE's: its conditions
    _draws_nothing_on_the_device(model.module, lambda: draws(n_samples=2, transform_batch=both))
    for kwargs in ({}, {"n_samples": 3}, {"transform_batch": both}):
        first, again, other = _at_one_seed(functools.partial(draws, **kwargs), quiet=False)
        assert np.array_equal(first, again), kwargs
        assert not np.array_equal(first, other), kwargs  # another seed: others


@pytest.mark.parametrize("likelihood", ["normal", "bernoulli", "zinb"])
def test_predictive_draws_of_every_likelihood_are_the_same_in_parts(likelihood):
    """A CGMDVAE of values or binary data draws them on the CPU too: a normal's noise from
    uniforms (randn fills 16 values at a time, so minibatches of other sizes drew other
    numbers), the same draws for the cells in parts as in one minibatch, none on the device."""
    from deltavae.distributions._draws import CellDraws

    module = CGMDVAEModule(12, 3, [2], n_latent=3, n_hidden=8, likelihood=likelihood).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.poisson(torch.full((30, 12), 3.0), generator=gen)
    if likelihood == "bernoulli":
        x = (x > 2).float()
    tensors = {"X": x, "extra_categorical_covs": torch.randint(2, (30, 1), generator=gen)}
    on_device(module)
    tracker = DeviceTracker(draws=True)
    with tracker:
        whole = module.predictive_draws(tensors, 2, cell_draws=CellDraws(5))
    assert not tracker.mixes, tracker.report()
    parts = CellDraws(5)
    split = torch.cat(
        [
            module.predictive_draws({k: v[rows] for k, v in tensors.items()}, 2, cell_draws=parts)
            for rows in (slice(0, 13), slice(13, 30))
        ]
    )
    assert whole.shape == (30, 12, 2)
    # the decoder's values differ in their last bits between minibatch sizes (BLAS); the
    # draws, made of the same noise, by as little
    torch.testing.assert_close(whole, split, rtol=1e-5, atol=1e-5)
    assert not torch.equal(whole[..., 0], whole[..., 1])
    if likelihood == "bernoulli":
        assert set(whole.unique().tolist()) <= {0.0, 1.0}


def _random_reads(model) -> dict:
    """Every read-out of ``model`` that may draw, by method name, reading 40 cells."""
    cells = np.arange(40)
    reads = {
        "posterior_predictive_sample": lambda: model.posterior_predictive_sample(
            indices=cells
        ).todense(),
        "get_normalized_expression": lambda: model.get_normalized_expression(
            indices=cells, return_numpy=True
        ),
        "differential_expression": lambda: model.differential_expression(
            groupby="cluster", group1="0", group2="1", n_samples_overall=200
        )["scale1"].to_numpy(),
        "get_feature_correlation_matrix": lambda: model.get_feature_correlation_matrix(
            indices=cells, n_samples=2
        ).to_numpy(),
        "get_likelihood_parameters": lambda: model.get_likelihood_parameters(indices=cells)["mean"],
        "get_latent_library_size": lambda: model.get_latent_library_size(
            indices=cells, give_mean=False
        ),
        "get_latent_representation": lambda: model.get_latent_representation(
            indices=cells, give_mean=False
        ),
        "get_elbo": lambda: model.get_elbo(indices=cells),
        "get_reconstruction_error": lambda: model.get_reconstruction_error(indices=cells)[
            "reconstruction_loss"
        ],
        "get_marginal_ll": lambda: model.get_marginal_ll(indices=cells, n_mc_samples=2),
    }
    return reads


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_docstrings_say_which_read_outs_draw_on_the_device(request, monkeypatch, kind):
    """The read-outs left drawing on the model's device (cheap to draw there; scvi-tools'
    numbers) say so in their docstrings, and only those: a read-out whose value changes with
    the seed and that draws on the device under the tracker says "made on the model's
    device"; posterior_predictive_sample, drawn on the CPU, says that instead."""
    model = _model(request, kind)
    track_moves(monkeypatch)
    wrong = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, read in _random_reads(model).items():
            torch.manual_seed(0)
            first = np.asarray(read())
            torch.manual_seed(1)
            random = not np.array_equal(first, np.asarray(read()))
            tracker = _tracked(model.module, read)
            on_device = any(what == "random draw on the device" for what, _ in tracker.mixes)
            doc = " ".join(getattr(type(model), name).__doc__.split())
            if ("made on the model's device" in doc) != (random and on_device):
                wrong[name] = f"random={random}, drawn on the device={on_device}"
    assert not wrong, wrong
    doc = " ".join(type(model).posterior_predictive_sample.__doc__.split())
    assert "drawn on the CPU" in doc


def _latent_reads(model) -> dict:
    """The read-outs that draw z (and a latent library) on the CPU, by name, reading 60
    cells: each takes ``batch_size``."""
    cells, both = np.arange(60), ["ctrl", "stim"]  # the batches; CGMDVAE's: its conditions
    normalized = model.get_normalized_expression
    reads = {
        "get_normalized_expression": lambda **kw: normalized(indices=cells, **kw).to_numpy(),
        "get_normalized_expression (3 draws, both batches)": lambda **kw: normalized(
            indices=cells, n_samples=3, transform_batch=both, return_mean=False, **kw
        ),
        "get_likelihood_parameters": lambda **kw: model.get_likelihood_parameters(
            indices=cells, n_samples=2, **kw
        )["mean"],
        "get_latent_representation": lambda **kw: model.get_latent_representation(
            indices=cells, give_mean=False, **kw
        ),
        "differential_expression": lambda **kw: model.differential_expression(
            groupby="cluster", group1="0", group2="1", n_samples_overall=200, **kw
        )[["scale1", "scale2"]].to_numpy(),
    }
    if not getattr(model.module, "use_observed_lib_size", True):  # a ZINBVAE's latent library
        reads["get_latent_library_size"] = lambda **kw: model.get_latent_library_size(
            indices=cells, give_mean=False, **kw
        )
    return reads


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_latent_draws_of_the_read_outs_are_made_on_the_cpu(request, monkeypatch, kind):
    """get_normalized_expression (also for n_samples=1: a draw of z is decoded), through it
    differential_expression's scales, get_likelihood_parameters, a drawn latent
    representation and latent library drew z (and the library) on the model's device
    minibatch by minibatch, as scvi-tools draws them: a GPU gave other values than the CPU
    under one seed, and batch_size=7 changed every value. Now none is drawn on the device,
    the seed repeats them, and batch_size changes them by the last bits of the networks'
    values only."""
    model = _model(request, kind)
    track_moves(monkeypatch)
    for name, read in _latent_reads(model).items():
        _draws_nothing_on_the_device(model.module, read, name)
        first, again, other = (
            np.asarray(values) for values in _at_one_seed(read, seed=_scvi_seed_4)
        )
        np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-7, err_msg=name)
        assert not np.allclose(first, other, rtol=1e-3, atol=0), name


def _fit_reads(model) -> dict:
    """The held-out fit measures, per cell, by name, reading 60 cells: each takes
    ``batch_size``; get_marginal_ll's draws taken two passes of two."""
    cells = np.arange(60)
    per_cell = {"indices": cells, "return_mean": False}
    return {
        "get_elbo": lambda **kw: model.get_elbo(**per_cell, **kw),
        "get_reconstruction_error": lambda **kw: model.get_reconstruction_error(**per_cell, **kw)[
            "reconstruction_loss"
        ],
        "get_marginal_ll": lambda **kw: model.get_marginal_ll(
            n_mc_samples=4, n_mc_samples_per_pass=2, **per_cell, **kw
        ),
    }


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_fit_measures_draw_the_guides_latents_on_the_cpu(request, monkeypatch, kind):
    """get_elbo, get_reconstruction_error and get_marginal_ll (its importance draws) drew z
    (a latent library, CGMDVAE's w) on the model's device minibatch by minibatch, as
    scvi-tools draws them: a GPU gave other values than the CPU under one seed, and
    batch_size=7 changed every cell's value. Now none is drawn on the device, the seed
    repeats them, batch_size changes them by the networks' last bits only, and the results
    keep scvi-tools' types."""
    model = _model(request, kind)
    track_moves(monkeypatch)
    for name, read in _fit_reads(model).items():
        _draws_nothing_on_the_device(model.module, read, name)
        first, again, other = _at_one_seed(read)
        assert isinstance(first, torch.Tensor) and first.device.type == "cpu", name
        assert first.shape == (60,), name
        np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-4, err_msg=name)
        assert not np.allclose(first, other, rtol=1e-3, atol=0), name
    assert isinstance(model.get_elbo(indices=np.arange(9)), np.float64)
    assert isinstance(model.get_marginal_ll(indices=np.arange(9), n_mc_samples=2), np.float64)


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_feature_correlation_matrix_draws_on_the_cpu(request, monkeypatch, kind):
    """get_feature_correlation_matrix drew z (a latent library, CGMDVAE's w) and the denoised
    counts' gammas on the model's device, minibatch by minibatch: a GPU gave another matrix
    than the CPU under one seed, and batch_size=7 changed it. Now nothing is drawn on the
    device, the seed repeats the matrix for any batch_size (also over both batches, each by
    generators of its own), another seed gives another, and it is scvi-tools' DataFrame."""
    model = _model(request, kind)
    cells, both = np.arange(60), ["ctrl", "stim"]  # the batches; CGMDVAE's: its conditions

    def matrix(**kwargs):
        return model.get_feature_correlation_matrix(indices=cells, **kwargs)

    track_moves(monkeypatch)
    _draws_nothing_on_the_device(model.module, lambda: matrix(n_samples=2, transform_batch=both))
    for kwargs in ({"n_samples": 1}, {"n_samples": 3}, {"n_samples": 2, "transform_batch": both}):
        first, again, other = _at_one_seed(functools.partial(matrix, **kwargs), seed=_scvi_seed_4)
        assert isinstance(first, pd.DataFrame)
        assert list(first.index) == list(first.columns) == list(model.adata.var_names)
        np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-6, err_msg=str(kwargs))
        assert not np.allclose(first, other, rtol=1e-3, atol=0), kwargs


def test_imputer_latent_draws_are_made_on_the_cpu(monkeypatch):
    """SpatialImputer.get_latent_representation(give_mean=False) drew z with rsample on the
    model's device: another z on a GPU for one seed, and others for another batch_size."""
    cells = dv.datasets.synthetic_counts(n_cells=120, n_genes=30, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=24, seed=0)
    model = dv.model.SpatialImputer.from_reference(
        spots[:, :20].copy(), ref, labels_key="cluster", design="latent"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    track_moves(monkeypatch)
    _draws_nothing_on_the_device(
        model.module, lambda: model.get_latent_representation(give_mean=False)
    )
    for reference in (False, True):
        torch.manual_seed(5)
        whole = model.get_latent_representation(give_mean=False, reference=reference)
        torch.manual_seed(5)
        parts = model.get_latent_representation(give_mean=False, reference=reference, batch_size=7)
        np.testing.assert_allclose(whole, parts, rtol=1e-5, atol=1e-6)  # the encoder's sums
        mean, var = model.get_latent_representation(return_dist=True, reference=reference)
        assert not np.allclose(whole, mean)
        assert np.abs((whole - mean) / np.sqrt(var)).max() < 6


def test_archetype_weights_draw_nothing(monkeypatch):
    """get_archetype_weights reads q's median, but the encoder drew a sample on the device
    (and scvi-tools' Encoder another) and dropped it: the device's generator moved on
    for nothing. The tracker finds no draw on the device."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3, min_spots=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    track_moves(monkeypatch)
    _draws_nothing_on_the_device(model.module, lambda: model.get_archetype_weights(mix[:25].copy()))
    weights = model.get_archetype_weights(mix[:25].copy())
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)


def _mean_reads(model) -> dict:
    """Read-outs that draw nothing (means, probabilities), by name, reading 60 cells."""
    cells = np.arange(60)
    reads = {
        "get_latent_representation": lambda: model.get_latent_representation(indices=cells),
    }
    if not getattr(model.module, "use_observed_lib_size", True):  # a ZINBVAE's latent library
        reads["get_latent_library_size"] = lambda: model.get_latent_library_size(indices=cells)
    if isinstance(model, dv.model.CGMDVAE):
        reads["predict_clusters(soft=True)"] = lambda: model.predict_clusters(
            indices=cells, soft=True
        )
        reads["get_latent_representation(condition=)"] = lambda: model.get_latent_representation(
            indices=cells, condition="ctrl"
        )
    return reads


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_read_outs_leave_torchs_generator_where_it_was(request, kind):
    """torch's DataLoader draws each iteration's base seed from torch's global generator, so a
    mean read-out (which draws nothing) moved the user's seeded stream: after
    torch.manual_seed(0), a latent read before posterior_predictive_sample changed its counts,
    and a training after it started elsewhere. The read-outs' loaders have a generator of
    their own: the global one is where it was, and the drawn read-out after them the same."""
    model = _model(request, kind)
    for name, read in _mean_reads(model).items():
        torch.manual_seed(0)
        before = torch.get_rng_state()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read()
        assert torch.equal(torch.get_rng_state(), before), name

    def counts(after_a_mean_read: bool):
        torch.manual_seed(0)
        if after_a_mean_read:
            model.get_latent_representation(indices=np.arange(60))
        return model.posterior_predictive_sample(indices=np.arange(60)).todense()

    assert np.array_equal(counts(True), counts(False))


def test_importance_weighted_expression_draws_z_on_the_cpu(zinbvae, monkeypatch):
    """weights="importance" kept scvi-tools' loop, which draws z on the model's device
    minibatch by minibatch: a GPU weighted and chose other draws than the CPU under one seed,
    and batch_size changed them. Now the loop's z are the CPU's (the same seed repeats the
    cells chosen and batch_size=7 does not change them), and their weights are importance
    weights: the draws chosen are not the uniform weights' under the same seed."""
    model = zinbvae
    weighting = {"n_mc_samples": 4, "n_mc_samples_per_pass": 2}

    def read(weights="importance", **kw):
        if weights == "importance":
            kw.update(weighting)
        expression = model.get_normalized_expression(
            indices=np.arange(60), weights=weights, n_samples_overall=80, **kw
        )
        return np.asarray(expression)

    track_moves(monkeypatch)
    _draws_nothing_on_the_device(model.module, read)
    first, again, other = _at_one_seed(read, seed=_scvi_seed_4)
    np.testing.assert_allclose(first, again, rtol=1e-5, atol=1e-7)
    assert not np.allclose(first, other, rtol=1e-3, atol=0)
    _scvi_seed_4()
    uniform = read("uniform")
    assert first.shape == uniform.shape == (80, model.adata.n_vars)
    assert not np.allclose(first, uniform, rtol=1e-3, atol=0)


def test_importance_weights_do_not_read_the_scaled_expression(zinbvae):
    """The expression scaled by library_size was scaled in place, and with it the count
    distributions' scale that the importance weights read (as in scvi-tools' loop): with
    library_size=10,000 the weights, and so the cells drawn, were others than with 1. Now
    the same seed draws the same cells, scaled."""
    model = zinbvae

    def read(library_size):
        _scvi_seed_4()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.asarray(
                model.get_normalized_expression(
                    indices=np.arange(60), weights="importance", n_samples_overall=80,
                    library_size=library_size, n_mc_samples=4, n_mc_samples_per_pass=2,
                )
            )  # fmt: skip

    np.testing.assert_allclose(read(10_000), read(1) * 10_000, rtol=1e-5)


@pytest.mark.parametrize("kind", ["zinbvae", "trained"])
def test_load_leaves_torchs_generator_where_it_was(request, kind, tmp_path):
    """load builds the module (fresh random weights, then the saved ones over them) and so
    moved torch's global generator: a seeded draw after loading a model was another than
    before it. The fresh weights now come from a fork of the generator."""
    model = _model(request, kind)
    model.save(tmp_path / "model", overwrite=True, save_anndata=True)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = type(model).load(tmp_path / "model")
    assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
