"""Archetypes that mean something: no archetype on one outlying spot, thin archetypes merged
with a warning, unmatched archetypes called variants of a signature rather than novel."""

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
import scipy.sparse as sp

import deltavae as dv
from deltavae.model._archetypal_analysis import carriers

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def with_outlier():
    """300 mixtures of 4 archetypes, and one spot whose counts sit on 5 genes of its own."""
    mix = dv.datasets.convex_mixtures(n_spots=300, n_genes=120, n_archetypes=4, seed=2)
    outlier = np.zeros((1, mix.n_vars), dtype=np.float32)
    outlier[0, :5] = 800.0
    X = mix.X.toarray() if sp.issparse(mix.X) else np.asarray(mix.X)
    spots = ad.AnnData(np.vstack([X, outlier]).astype(np.float32))
    spots.var_names = mix.var_names
    spots.obs_names = [*mix.obs_names, "outlier"]
    return spots


def test_an_outlying_spot_gets_no_archetype_of_its_own(with_outlier):
    spots = with_outlier.copy()
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes="auto", max_archetypes=6)
    start = model.module.B().detach().numpy()  # archetypes x candidate spots, at the start
    assert start[:, -1].max() <= 0.2  # the outlier weighs little in every archetype
    explained = model.elbow_["explained_variance"]
    assert np.all(np.diff(explained) >= 0), explained
    model.train(max_epochs=30, **TRAIN)
    weights = model.get_archetype_weights()  # no min_spots warning: errors under pytest
    assert carriers(weights.to_numpy()).min() >= model.min_spots


def test_spots_of_a_few_reads_are_no_candidates():
    """A spot of 2 reads is an extreme profile (half of each of 2 genes) through sampling
    noise alone; on the olfactory bulb two such spots each became an archetype."""
    mix = dv.datasets.convex_mixtures(n_spots=200, n_genes=80, n_archetypes=3, seed=4)
    X = mix.X.toarray() if sp.issparse(mix.X) else np.asarray(mix.X).copy()
    X[0], X[1] = 0, 0
    X[0, [7, 9]], X[1, [3, 5, 11, 13]] = 1, 1
    spots = ad.AnnData(X.astype(np.float32), obs=mix.obs[[]].copy(), var=mix.var[[]].copy())
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=3)
    assert sorted(model.candidate_rows_) == list(range(2, 200))
    model.train(max_epochs=30, **TRAIN)
    weights = model.get_archetype_weights()
    assert carriers(weights.to_numpy()).min() >= model.min_spots


def test_a_thin_archetype_is_merged_with_a_warning(with_outlier):
    spots = with_outlier.copy()
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes=5, smooth_neighbors=1, merge_threshold=1.0)
    assert model.module.B().detach().numpy()[:, -1].max() > 0.9  # unsmoothed: its own archetype
    model.train(max_epochs=30, **TRAIN)
    with pytest.warns(UserWarning, match=r"merged.*fewer than min_spots=5 spots"):
        names = model.archetype_names()
    assert len(names) == 4
    weights = model.get_archetype_weights()
    assert carriers(weights.to_numpy()).min() >= 5
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-5)
    model.min_spots = 1  # keeps every archetype
    assert len(model.archetype_names()) == 5


# 6-13 s: in the slow stage (python -m pytest -m slow), which CI also runs.
@pytest.mark.slow
def test_no_thin_archetype_on_the_tutorial_spots():
    """Tutorial 03's pseudo-spots (PBMC 3k): before, archetype A0 sat on one spot. 'auto'
    chooses the 5 broad types, each followed by an archetype."""
    cells = dv.datasets.pbmc3k()
    log = sc.pp.log1p(sc.pp.normalize_total(cells, target_sum=1e4, copy=True), copy=True)
    sc.pp.highly_variable_genes(log, n_top_genes=300)
    cells = cells[:, log.var["highly_variable"]].copy()
    broad = {"Naive CD4 T": "CD4 T", "Memory CD4 T": "CD4 T", "FCGR3A+ Mono": "Mono"}
    broad |= {"CD14+ Mono": "Mono", "DC": "Mono", "CD8 T": "CD8 T", "NK": "NK", "B": "B"}
    cells.obs["cell_type"] = cells.obs["cell_type"].map(broad).astype("category")
    cells = cells[cells.obs["cell_type"].notna()].copy()  # as the tutorial: no platelets
    spots, _ = dv.datasets.pseudo_spots(
        cells, "cell_type", n_spots=200, cells_per_spot=(4, 12), grid=True, depth=2000, seed=0
    )
    sc.pp.filter_genes(spots, min_cells=1)
    dv.model.Archetypes.setup_anndata(spots)
    model = dv.model.Archetypes(spots, n_archetypes="auto", max_archetypes=8)
    model.train(max_epochs=20, **TRAIN)
    weights = model.get_archetype_weights()
    assert len(weights.columns) == model.n_archetypes_raw_  # nothing thin to merge
    assert carriers(weights.to_numpy()).min() >= 5
    # The 5 broad types (the elbow's largest gap above its chord chose 3 here, which left
    # CD8 T and NK to no archetype of their own: mean best correlation per type 0.50).
    assert model.elbow_["chosen"] == 5
    truth = spots.obsm["proportions_true"].to_numpy()
    k = weights.shape[1]
    best = np.corrcoef(weights.to_numpy().T, truth.T)[:k, k:].max(axis=0)
    assert best.mean() >= 0.55, best  # each type followed by an archetype (0.58 in 3 runs)


def test_slides_share_archetypes_with_a_technical_factor_each(tmp_path):
    """Two slides of the same 3 archetypes; slide B scales each gene by a known factor."""
    rng = np.random.default_rng(0)
    slides = []
    for name, seed in (("A", 3), ("B", 4)):
        mix = dv.datasets.convex_mixtures(n_spots=200, n_genes=80, n_archetypes=3, seed=seed)
        mix.obs["slide"] = name
        slides.append(mix)
    # the same archetype profiles on both slides (seed 3's), mixed with each slide's weights
    profiles = slides[0].varm["profiles_true"].T
    log_factor = rng.normal(0.0, 0.5, size=profiles.shape[1])
    for mix, scale in zip(slides, (np.zeros_like(log_factor), log_factor), strict=True):
        mean = mix.obsm["weights_true"] @ profiles * np.exp(scale)
        mean = 3000 * mean / mean.sum(axis=1, keepdims=True)
        mix.X = rng.poisson(mean).astype(np.float32)
    spots = ad.concat(slides, index_unique="-")
    dv.model.Archetypes.setup_anndata(spots, sample_key="slide")
    model = dv.model.Archetypes(spots, n_archetypes=3)
    model.train(max_epochs=80, **TRAIN)
    factors = np.log(model.get_sample_factors())
    assert list(factors.columns) == ["A", "B"]
    np.testing.assert_allclose(factors.sum(axis=1), 0.0, atol=1e-5)  # centred over slides
    difference = (factors["B"] - factors["A"]).to_numpy()
    assert np.corrcoef(difference, log_factor)[0, 1] > 0.8
    weights = model.get_archetype_weights().to_numpy()
    truth = np.vstack([mix.obsm["weights_true"] for mix in slides])
    best = np.corrcoef(weights.T, truth.T)[:3, 3:].max(axis=1)
    assert best.min() > 0.8, best  # one set of archetypes fits both slides
    model.save(tmp_path / "slides")
    loaded = dv.model.Archetypes.load(tmp_path / "slides", spots)
    np.testing.assert_array_equal(loaded.get_archetype_weights().to_numpy(), weights)
    np.testing.assert_array_equal(loaded.get_sample_factors(), model.get_sample_factors())
    new = spots[:5].copy()
    new.obs["slide"] = "C"
    with pytest.raises(ValueError, match="slide"):
        model.get_archetype_weights(new)
