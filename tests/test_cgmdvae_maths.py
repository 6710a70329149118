"""CGMDVAE's mathematics checked by hand: ELBO terms, full-covariance components, the moved
latent, the mixture start's covariances, and the Pyro ELBO against the torch loss."""

import numpy as np
import pytest
import torch
from _torch_elbo import assert_torch_elbo_is_pyros
from pyro import poutine
from scipy.special import digamma, gammaln
from scipy.stats import multivariate_normal, norm
from test_cgmdvae import _labelled_counts  # noqa: E402 - one labelled data set for both files

import deltavae as dv
from deltavae.module import CGMDVAEModule
from deltavae.nn import MixturePrior
from deltavae.train._mixture_init import fit_cluster_head, initialize_mixture, refit_mixture

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 64}


def _tiny_module(n_latent: int, n_latent_w: int, **kwargs) -> CGMDVAEModule:
    """A 2-cluster module on 3 normal features, small enough to check terms by hand."""
    return CGMDVAEModule(
        n_input=3,
        n_clusters=2,
        n_latent=n_latent,
        n_latent_w=n_latent_w,
        n_hidden=8,
        likelihood="normal",
        **kwargs,
    )


def test_elbo_terms_match_hand_computation():
    torch.manual_seed(0)
    module = _tiny_module(1, 1, dirichlet_alpha=[0.5, 2.0], prior_covariance="diag").eval()
    z = torch.tensor([[0.3], [-1.2]])
    w = torch.tensor([[0.5], [0.1]])
    terms = {k: v.detach().numpy() for k, v in module.mixture_terms(z, w).items()}
    logits, beta = (t.detach().numpy() for t in module.cluster_posterior(z))
    prior = module.prior(w)
    loc, scale = prior.mean.detach().numpy(), prior.stddev.detach().numpy()
    alpha = np.array([0.5, 2.0])
    for i in range(2):
        qy = np.exp(logits[i]) / np.exp(logits[i]).sum()
        log_pz = norm.logpdf(z[i, 0].item(), loc[i, :, 0], scale[i, :, 0])
        e_log_d = digamma(beta[i]) - digamma(beta[i].sum())
        kl_dir = (
            gammaln(beta[i].sum())
            - gammaln(beta[i]).sum()
            - gammaln(alpha.sum())
            + gammaln(alpha).sum()
            + ((beta[i] - alpha) * e_log_d).sum()
        )
        assert terms["log_pz"][i] == pytest.approx((qy * log_pz).sum(), rel=1e-5)
        assert terms["y_term"][i] == pytest.approx(
            (qy * (np.log(qy) - e_log_d)).sum(), rel=1e-5, abs=1e-6
        )
        assert terms["d_term"][i] == pytest.approx(kl_dir, rel=1e-5)
    # A labelled cell: its q(y) is the label, its y-term is -E[log d_label].
    labelled = module.mixture_terms(z, w, y_obs=torch.tensor([1, -1]))
    e_log_d0 = digamma(beta[0]) - digamma(beta[0].sum())
    assert labelled["y_term"][0].item() == pytest.approx(-e_log_d0[1], rel=1e-5)
    assert labelled["log_pz"][0].item() == pytest.approx(
        norm.logpdf(0.3, loc[0, 1, 0], scale[0, 1, 0]), rel=1e-5
    )
    assert labelled["classifier"][1].item() == 0.0
    assert labelled["classifier"][0].item() == pytest.approx(
        -(logits[0, 1] - np.log(np.exp(logits[0]).sum())), rel=1e-5
    )


def test_a_normal_likelihood_is_bounded_for_a_feature_equal_in_every_cell():
    """A feature the same in every cell has a Normal density without bound as its scale
    shrinks (log_scale ran to -2 in 400 epochs on blobs with zero columns, still falling);
    the scale's floor bounds it: sigma = exp(log_scale) + MIN_SCALE, the numbers of
    scipy's Normal."""
    from deltavae.nn._blocks import MIN_SCALE

    module = _tiny_module(2, 1)
    z = torch.randn(4, 2)
    with torch.no_grad():
        module.decoder.log_scale.copy_(torch.tensor([-50.0, 0.0, -1.0]))
    params = module.decode(z)
    x = params["out"].detach().clone()  # every cell at its mean: the density's peak
    x[:, 1:] += 0.5
    sigma = np.exp([-50.0, 0.0, -1.0]) + MIN_SCALE
    expected = norm.logpdf(x.numpy(), params["out"].detach().numpy(), sigma).sum(-1)
    got = module.observation.log_prob(params, x).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got.max() < -np.log(MIN_SCALE) + 2  # 49 nats higher without the floor


def test_full_covariance_components_match_hand_computation():
    """log p(z | w, y) of correlated components against scipy's multivariate normal."""
    torch.manual_seed(0)
    module = _tiny_module(3, 2, prior_covariance="full").eval()
    with torch.no_grad():
        module.prior.unmix_lower.normal_()
    z, w = torch.randn(4, 3), torch.randn(4, 2)
    prior = module.prior(w)
    loc, scale = prior.mean.detach().numpy(), prior.scale.detach().numpy()
    unmix = module.prior.unmix().detach().numpy()
    assert np.allclose(np.triu(unmix, 1), 0) and np.allclose(np.diagonal(unmix, 0, 1, 2), 1)
    log_pz = prior.log_prob(z.unsqueeze(-2)).detach().numpy()
    for i in range(4):
        for k in range(2):
            factor = np.diag(scale[i, k]) @ np.linalg.inv(unmix[k])
            expected = multivariate_normal.logpdf(z[i].numpy(), loc[i, k], factor @ factor.T)
            assert log_pz[i, k] == pytest.approx(expected, rel=1e-5)
            np.testing.assert_allclose(
                prior.variance[i, k].detach().numpy(), np.diag(factor @ factor.T), rtol=1e-5
            )
    # Samples have that covariance too.
    draws = prior.sample((20000,))[:, 0, 1].numpy()
    factor = np.diag(scale[0, 1]) @ np.linalg.inv(unmix[1])
    cov = factor @ factor.T
    np.testing.assert_allclose(np.cov(draws.T), cov, rtol=0.1, atol=0.05 * np.abs(cov).max())


@pytest.mark.parametrize("covariance", ["full", "diag"])
def test_move_latent_keeps_each_cells_place_within_its_component(covariance):
    """Moving z to another condition whitens it under p(z | w, y, c) and recolours under c'."""
    torch.manual_seed(0)
    module = _tiny_module(3, 2, n_cats_per_cov=[2], prior_covariance=covariance).eval()
    if covariance == "full":
        with torch.no_grad():
            module.prior.unmix_lower.normal_()
    z, w = torch.randn(6, 3), torch.randn(6, 2)
    own = torch.tensor([[0], [1], [0], [1], [0], [1]])
    target = torch.ones_like(own)
    p_own, p_new = module.prior_distribution(w, own), module.prior_distribution(w, target)
    unmix = module.prior.unmix() if covariance == "full" else torch.eye(3).expand(2, 3, 3)

    def whitened(p, x, k):
        scale = p.scale if covariance == "full" else p.base_dist.scale
        return ((x - p.mean[:, k]) / scale[:, k]) @ unmix[k].T

    for k in range(2):
        one_hot = torch.zeros(6, 2)
        one_hot[:, k] = 1.0
        moved = module.move_latent(z, w, one_hot, own, target)
        torch.testing.assert_close(whitened(p_new, moved, k), whitened(p_own, z, k))
        # Cells already in the target condition stay; the scales differ for the others, so a
        # pure shift of the means would not keep their place.
        torch.testing.assert_close(moved[1::2], z[1::2])
        assert not torch.allclose(
            moved[::2], z[::2] + p_new.mean[::2, k] - p_own.mean[::2, k], atol=1e-4
        )
    # Soft assignments average the moves.
    probs = torch.softmax(torch.randn(6, 2), -1)
    by_k = [module.move_latent(z, w, torch.eye(2)[[k] * 6], own, target) for k in range(2)]
    torch.testing.assert_close(
        module.move_latent(z, w, probs, own, target),
        probs[:, :1] * by_k[0] + probs[:, 1:] * by_k[1],
    )


def test_diagonal_parameters_load_into_the_full_prior_unchanged():
    """Models saved with diagonal components (or before correlations existed) still load."""
    torch.manual_seed(0)
    diagonal = MixturePrior(2, 4, 3, covariance="diag").eval()
    full = MixturePrior(2, 4, 3, covariance="full").eval()
    full.load_state_dict(diagonal.state_dict())
    w, z = torch.randn(5, 2), torch.randn(5, 1, 4)
    torch.testing.assert_close(full(w).log_prob(z), diagonal(w).log_prob(z))
    with pytest.raises(ValueError, match="covariance must be 'diag' or 'full'"):
        MixturePrior(2, 4, 3, covariance="low-rank")


def test_full_covariance_start_reproduces_each_cluster_covariance():
    rng = np.random.default_rng(0)
    mixing = [np.array([[1.0, 0.0], [1.5, 0.3]]), np.array([[0.5, -0.8], [0.0, 0.4]])]
    z = np.vstack([rng.normal(size=(400, 2)) @ m.T + 5 * j for j, m in enumerate(mixing)])
    z = torch.as_tensor(z, dtype=torch.float32)
    assignments = torch.repeat_interleave(torch.arange(2), 400)
    module = _tiny_module(2, 1, prior_covariance="full")
    with torch.no_grad():  # components independent of w, to read them off directly
        module.prior.mean.weight.zero_()
        module.prior.log_var.weight.zero_()
    z_var = torch.full_like(z, 0.05)
    initialize_mixture(module, z, assignments, None, z_var=z_var, n_steps=5)
    prior = module.eval().prior(torch.zeros(1, 1))
    for j in range(2):
        member = z[assignments == j].numpy()
        factor = np.diag(prior.scale[0, j].detach().numpy()) @ np.linalg.inv(
            module.prior.unmix()[j].detach().numpy()
        )
        np.testing.assert_allclose(prior.mean[0, j].detach().numpy(), member.mean(0), atol=1e-5)
        np.testing.assert_allclose(
            factor @ factor.T, np.cov(member.T) + 0.05 * np.eye(2), rtol=2e-3
        )


def test_full_covariance_start_with_fewer_cells_than_dimensions():
    """A cluster too small for a covariance starts uncorrelated instead of failing."""
    torch.manual_seed(0)
    module = CGMDVAEModule(n_input=5, n_clusters=2, n_latent=6, n_latent_w=2, likelihood="normal")
    z = torch.randn(23, 6)
    assignments = torch.tensor([0] * 3 + [1] * 20)
    initialize_mixture(module, z, assignments, None, n_steps=2)
    lower = module.prior.unmix_lower.detach()
    assert torch.isfinite(lower).all() and torch.isfinite(module.prior.log_var.bias).all()
    assert lower[0].abs().max() == 0 and lower[1].abs().max() > 0


def test_pyro_elbo_equals_torch_loss():
    """Pyro's single-sample ELBO and the torch-side term split agree for the same samples."""
    adata = _labelled_counts()
    adata.obs.loc[adata.obs_names[::2], "label"] = "Unknown"
    dv.model.CGMDVAE.setup_anndata(
        adata, condition_key="condition", labels_key="label", unlabeled_category="Unknown"
    )
    model = dv.model.CGMDVAE(adata, likelihood="zinb", **SMALL)
    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(adata, batch_size=64)))
    args, kwargs = module._get_fn_args_from_batch(tensors)
    guide_trace = poutine.trace(module.guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(module.model, trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    elbo = model_trace.log_prob_sum() - guide_trace.log_prob_sum()
    z, w = guide_trace.nodes["z"]["value"], guide_trace.nodes["w"]["value"]
    inference = module.inference(**module._get_inference_input(tensors))
    inference.update(z=z, w=w)
    generative = module.generative(**module._get_generative_input(tensors, inference))
    losses = module.loss(tensors, inference, generative)
    covs = tensors["extra_categorical_covs"]
    terms = module.mixture_terms(z, w, covs, module.observed_clusters(tensors["labels"]))
    # Labelled counts: condition_alignment="auto" turns the alignment penalty on (a minibatch
    # statistic, charged to every cell).
    assert module.condition_alignment > 0
    alignment = module.condition_alignment * module.alignment_penalty(z, covs, terms["qy"])
    per_cell = (
        losses.reconstruction_loss["reconstruction_loss"]
        + sum(losses.kl_local.values())
        + module.classifier_weight * terms["classifier"]
        + alignment
    )
    torch.testing.assert_close(-elbo, per_cell.sum(), rtol=1e-3, atol=1e-2)


@pytest.mark.parametrize(
    ("likelihood", "n_cats", "labelled", "alignment"),
    [("zinb", [2, 3], True, 10.0), ("bernoulli", None, False, 0.0), ("normal", [2], False, 5.0)],
)
def test_torch_elbo_is_pyros_trace_elbo(likelihood, n_cats, labelled, alignment):
    """negative_elbo, which training uses, gives Pyro's Trace_ELBO of model and guide from the
    same draws (dropout included): value, gradients and the terms outside the ELBO."""
    torch.manual_seed(0)
    module = CGMDVAEModule(
        n_input=30,
        n_clusters=4,
        n_cats_per_cov=n_cats,
        n_hidden=16,
        likelihood=likelihood,
        label_to_cluster=[0, 1, -1] if labelled else None,
        condition_alignment=alignment,
    )
    module.n_obs = 500  # the cell plate's size: 16 of 500 training cells
    x = {
        "zinb": torch.poisson(torch.rand(16, 30) * 5),
        "bernoulli": (torch.rand(16, 30) > 0.5).float(),
        "normal": torch.randn(16, 30),
    }[likelihood]
    covs = torch.stack([torch.randint(0, c, (16,)) for c in n_cats], -1) if n_cats else None
    args = (x, covs, torch.randint(0, 3, (16, 1)) if labelled else None)
    _, terms, (pyro_penalty, torch_penalty) = assert_torch_elbo_is_pyros(module, args, 0.3)
    torch.testing.assert_close(torch_penalty, pyro_penalty)
    kl = {"z_term", "w_term", "y_term", "d_term"}
    beside = {"classifier"} | ({"alignment"} if alignment else set())
    assert set(terms) == {"reconstruction_loss"} | kl | beside
    assert set(module.terms_beside_elbo) >= beside and not kl & set(module.terms_beside_elbo)
    assert all(t.shape == (16,) for t in terms.values())


def test_training_logs_the_elbo_from_the_torch_pass(monkeypatch):
    """CGMDVAE trains on its torch-side ELBO, and its history keeps the classifier term
    beside the ELBO: kl_local is the sum of the four KL terms alone."""
    adata = _labelled_counts()
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    model = dv.model.CGMDVAE(adata, likelihood="zinb", **SMALL)
    calls = []
    negative_elbo = CGMDVAEModule.negative_elbo
    monkeypatch.setattr(
        CGMDVAEModule, "negative_elbo", lambda *a, **k: calls.append(1) or negative_elbo(*a, **k)
    )
    model.train(max_epochs=2, batch_size=64, enable_progress_bar=False, mixture_init_epoch=1)
    assert calls
    history = model.history
    for split in ("train", "validation"):
        terms = [history[f"{t}_term_{split}"].to_numpy(float).ravel() for t in ("z", "w", "y", "d")]
        kl = history[f"kl_local_{split}"].to_numpy(float).ravel()
        np.testing.assert_allclose(kl, sum(terms), rtol=1e-5)
        assert (history[f"classifier_{split}"].to_numpy(float) > 0).all()


@pytest.mark.parametrize("covariance", ["diag", "full"])
def test_refit_moves_components_onto_new_clusters_and_keeps_condition_shifts(covariance):
    """refit_mixture: each component's mean over its cluster's cells becomes their mean of z,
    cluster numbers follow the components' current partition, and the shifts the prior
    learned between conditions and along w are untouched."""
    torch.manual_seed(0)
    module = CGMDVAEModule(
        n_input=5,
        n_clusters=3,
        n_cats_per_cov=[2],
        n_latent=2,
        n_latent_w=2,
        likelihood="normal",
        prior_covariance=covariance,
    ).eval()
    rng = np.random.default_rng(0)
    z = torch.as_tensor(
        np.vstack([rng.normal(size=(300, 2)) * [1.0, 0.5] + 6 * j for j in range(3)]),
        dtype=torch.float32,
    )
    w = torch.randn(900, 2) * 0.3
    cats = torch.as_tensor(rng.integers(0, 2, size=(900, 1)))
    z_var = torch.full_like(z, 0.05)
    truth = torch.repeat_interleave(torch.arange(3), 300)
    # The head currently calls the clusters 2, 0, 1: the refit must keep those numbers.
    fit_cluster_head(module, z, (truth + 2) % 3, cats, n_steps=150)
    with torch.no_grad():
        before = module.prior_distribution(w, cats).mean
        shift_before = module.prior_distribution(w, 1 - cats).mean - before
    refit_mixture(module, z, w, z_var, truth, cats)
    with torch.no_grad():
        after = module.prior_distribution(w, cats)
        shift_after = module.prior_distribution(w, 1 - cats).mean - after.mean
        logits, _ = module.cluster_posterior(z, cats)
    assert (logits.argmax(-1) == (truth + 2) % 3).float().mean() > 0.99
    torch.testing.assert_close(shift_after, shift_before, atol=1e-5, rtol=1e-5)
    for j in range(3):
        member = truth == j
        component = (j + 2) % 3
        torch.testing.assert_close(
            after.mean[member, component].mean(0), z[member].mean(0), atol=1e-4, rtol=1e-4
        )
        if j:  # clusters 1 and 2 lie far from where the untrained prior put its components
            assert (before[member, component].mean(0) - z[member].mean(0)).abs().max() > 3


def test_cgmdvae_refits_its_mixture_only_without_labels(monkeypatch):
    """train(refit_mixture="auto") refits unsupervised models whose mixture started in the
    call, and neither labelled models nor a continued training."""
    calls = []
    monkeypatch.setattr(dv.model.CGMDVAE, "_refit_mixture", lambda self, m: calls.append(m))
    adata = dv.datasets.synthetic_blobs(n_cells=120, n_features=6, n_clusters=2, seed=0)
    dv.model.CGMDVAE.setup_anndata(adata)
    model = dv.model.CGMDVAE(adata, n_clusters=2, likelihood="normal")
    model.train(max_epochs=4, enable_progress_bar=False)
    assert calls == ["leiden"]
    model.train(max_epochs=2, enable_progress_bar=False)  # continued: no start, no refit
    assert calls == ["leiden"]
    labelled = _labelled_counts()
    dv.model.CGMDVAE.setup_anndata(labelled, labels_key="label")
    model = dv.model.CGMDVAE(labelled, likelihood="nb")
    with pytest.raises(ValueError, match="this model has labels"):
        model.train(max_epochs=4, refit_mixture=True)
    model.train(max_epochs=4, enable_progress_bar=False)
    assert calls == ["leiden"]


def test_condition_mixing_skips_each_point_itself_among_duplicates():
    """Duplicate points: the search may list a twin before the point itself; the point must
    still be the one dropped, so two groups sitting on the same coordinates mix fully."""
    from deltavae.train._graph_clusters import condition_mixing

    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 3))
    points = np.repeat(base, 4, axis=0)  # every location 4 times: 2 of each group
    group = np.tile([0, 0, 1, 1], 30)
    # Each point's 3 twins (1 same group, 2 other) come first: 2 / 3 of them are from the
    # other group, over a chance share of 1 / 2.
    assert condition_mixing(points, group, n_neighbors=3) == pytest.approx((2 / 3) / 0.5)
    apart = points + 50 * group[:, None]
    assert condition_mixing(apart, group, n_neighbors=3) == 0.0
