"""CGMDVAE.sample as a biologist calls it: clusters and conditions by name, what the drawn
cells record, many cells in parts, and the refusals of values that are not one cluster or one
condition."""

import re
import types
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import deltavae as dv
from deltavae.model._condition_counts import draw_conditions

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "accelerator": "cpu"}


@pytest.fixture(scope="module")
def labelled():
    """Semi-supervised counts: cell types B, NK, T (a third unlabelled), a condition and
    integer donors."""
    adata = dv.datasets.synthetic_counts(
        n_cells=150, n_genes=20, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["donor"] = np.random.default_rng(0).choice([7, 9, 11], adata.n_obs)
    cell_type = adata.obs["cluster"].astype(str).map({"0": "B", "1": "NK", "2": "T"})
    adata.obs["type"] = cell_type.astype(object)
    adata.obs.loc[adata.obs_names[::3], "type"] = "Unknown"
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=["condition", "donor"], labels_key="type")
    model = dv.model.CGMDVAE(adata, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=64, **TRAIN)
    return model, adata


def test_sampled_cells_record_what_was_asked_and_write_to_h5ad(labelled, tmp_path):
    """uns held nothing: cells written to disk did not say which cell type, condition and
    seed they were drawn for, nor that X holds drawn counts (translate's cells say so)."""
    model, adata = labelled
    cells = model.sample(12, cluster="T", condition={"donor": "9"}, seed=3)
    record = cells.uns["sample"]
    assert record["n_cells"] == 12 and record["cluster"] == "T" and record["seed"] == 3
    assert record["condition"] == {"condition": "drawn", "donor": "9"}
    assert "whole counts" in record["X"] and np.array_equal(cells.X, np.round(cells.X))
    assert (cells.obs["cluster"] == "T").all() and (cells.obs["donor"] == 9).all()
    assert cells.obs["donor"].dtype == adata.obs["donor"].dtype  # integers, as trained
    assert model.sample(4).uns["sample"]["cluster"] == "drawn"  # no seed: none recorded
    assert "seed" not in model.sample(4).uns["sample"]
    # scvi-tools' RuntimeError spoke of "the module" not computing a posterior
    with pytest.raises(ValueError, match=r"observed library size, .* pass give_mean=False"):
        model.get_latent_library_size(indices=[0, 1])
    observed = model.get_latent_library_size(indices=[0, 1], give_mean=False).ravel()
    np.testing.assert_allclose(observed, np.asarray(adata.X[:2].sum(1)).ravel(), rtol=1e-5)
    # whole counts in layers["counts"] too, where translate keeps them: set up alike
    np.testing.assert_array_equal(cells.layers["counts"], cells.X)
    # a copy: scanpy's normalize_total and log1p rewrite a dense X in place
    assert not np.shares_memory(cells.layers["counts"], cells.X)
    assert record["counts"] == "the whole counts of X"
    translated = model.translate(adata[:6], {"condition": "stim"}, seed=0)
    for out in (cells, translated):  # a KeyError for the sampled cells
        dv.model.CGMDVAE.setup_anndata(out, layer="counts")
    cells.write_h5ad(tmp_path / "drawn.h5ad")
    back = ad.read_h5ad(tmp_path / "drawn.h5ad")
    assert back.uns["sample"]["condition"]["donor"] == "9"
    np.testing.assert_array_equal(back.X, cells.X)


def test_many_cells_are_decoded_in_parts_that_draw_the_same_cells(labelled, monkeypatch):
    """Every cell was decoded at once (means, dispersions, dropouts and hidden layers of all
    of them: several times the result's memory, on the GPU too), and sample had no
    batch_size; in parts of any size, one seed draws the same cells."""
    model, _ = labelled
    whole = model.sample(90, seed=1, batch_size=90)
    sizes = []
    decode = model.module.decode

    def counted(z, *args, **kwargs):
        sizes.append(z.shape[0])
        return decode(z, *args, **kwargs)

    monkeypatch.setattr(model.module, "decode", counted)
    parts = model.sample(90, seed=1, batch_size=16)
    assert max(sizes) == 16 and sum(sizes) == 90
    assert (parts.X != whole.X).mean() < 1e-3  # counts of means equal to float rounding
    np.testing.assert_allclose(parts.layers["expected"], whole.layers["expected"], rtol=1e-5)
    assert parts.obs.equals(whole.obs)
    made, generate = [], model.module.generate

    def kept(*args, **kwargs):
        made.append(generate(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(model.module, "generate", kept)
    cells = model.sample(30, seed=1, batch_size=8)  # X and expected held twice (5.6 arrays' peak)
    assert np.shares_memory(cells.X, made[0]["x"].numpy())
    assert np.shares_memory(cells.layers["expected"], made[0]["expected"].numpy())
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad}"):
            model.sample(5, batch_size=bad)


def test_several_clusters_or_conditions_are_refused_naming_the_valid_ones(labelled):
    """condition=["ctrl", "stim"] said "Condition condition=['ctrl', 'stim'] was never seen in
    training; conditions seen: ['ctrl', 'stim']"; cluster=["B", "T"] and cluster=9 said "give a
    name or an index 0..2" without naming the clusters; integer donors were listed as sorted
    strings ['11', '7', '9']."""
    model, _ = labelled
    names = r"\['B', 'NK', 'T'\]"
    with pytest.raises(ValueError, match=rf"cluster=\['B', 'T'\] is several clusters.*{names}"):
        model.sample(5, cluster=["B", "T"])
    with pytest.raises(ValueError, match=rf"cluster=9: give a name or an index 0..2; .*{names}"):
        model.sample(5, cluster=9)
    # In another case: the one meant named, as a condition's is.
    hint = rf"cluster='b' is not a cluster; did you mean 'B'\? clusters: {names}"
    with pytest.raises(ValueError, match=hint):
        model.sample(5, cluster="b")
    with pytest.raises(ValueError, match=rf"cluster='zzz' is not a cluster; clusters: {names}"):
        model.sample(5, cluster="zzz")
    several = r"condition=\['ctrl', 'stim'\] is several values.*seen: \['ctrl', 'stim'\]"
    with pytest.raises(ValueError, match=several):
        model.sample(5, condition={"condition": ["ctrl", "stim"]})
    with pytest.raises(ValueError, match=r"donor=8 was never seen .*seen: \[7, 9, 11\]"):
        model.sample(5, condition={"donor": 8})
    many = np.array(["ctrl"] * 1000)  # one value per cell: named in short, not 1000 times
    with pytest.raises(ValueError, match=r"\['ctrl', 'ctrl', 'ctrl', 'ctrl', 'ctrl', \.\.\.\]"):
        model.sample(5, condition={"condition": many})


def test_a_combination_that_never_trained_is_refused_with_those_that_did():
    """ "No training cell carries the conditions {...} together." named none that did."""
    mappings = {"drug": ["A", "B"], "donor": ["d1", "d2"], "dose": ["0", "1"]}
    model = types.SimpleNamespace(
        condition_keys=list(mappings),
        _cat_state=lambda: types.SimpleNamespace(mappings=mappings),
        condition_combinations_={("A", "d1", "0"): 4, ("B", "d2", "1"): 3, ("A", "d2", "1"): 0},
    )
    codes = np.array([[1, 0, -2]] * 3)  # drug B of donor d1, dose drawn
    refusal = r"\{'drug': 'B', 'donor': 'd1'\} together; .*: \[\('A', 'd1'\), \('B', 'd2'\)\]"
    with pytest.raises(ValueError, match=refusal):
        draw_conditions(model, codes, np.random.default_rng(0))
    drawn = draw_conditions(model, np.array([[0, 0, -2]] * 3), np.random.default_rng(0))
    assert (drawn[:, 2] == 0).all()  # drug A of donor d1 trained at dose 0 only


@pytest.mark.parametrize(
    "likelihood, clipped, says",
    [
        ("nb", False, "the mean counts of that draw$"),  # no dropout in a NB
        ("zinb", False, r"the mean counts of that draw \(dropout included\)"),
        ("normal", True, r"the mean of that draw, clipped at 0"),
        ("bernoulli", False, "the probabilities of 1"),
    ],
)
def test_the_record_says_what_each_likelihood_drew(likelihood, clipped, says):
    from deltavae.model._sample_record import sample_record

    mappings = {"dose": [0, 1]}
    model = types.SimpleNamespace(
        cluster_names=["B", "T"],
        condition_keys=["dose"],
        _cat_state=lambda: types.SimpleNamespace(mappings=mappings),
        module=types.SimpleNamespace(likelihood=likelihood),
    )
    record = sample_record(model, 4, None, 1.0, 2**64 - 1, clipped)
    assert record["condition"] == {"dose": "1"} and record["cluster"] == "drawn"
    assert record["seed"] == 2**64 - 1 and record["seed"].dtype == np.uint64  # h5ad writes it
    assert re.search(says, record["expected"]), record["expected"]


def test_sampled_cells_take_the_library_sizes_of_their_condition(tmp_path):
    """Library sizes were drawn from all training cells together: cells sampled under a
    condition sequenced 4x deeper had the depth of ctrl and stim pooled (median totals
    ctrl 877, stim 877 against real 797 and 3662). scvi-tools' library prior is per batch."""
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=2, seed=0
    )
    deep = (adata.obs["condition"] == "stim").to_numpy()
    counts = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X)
    counts[deep] *= 4
    adata.X = counts
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_latent=2, n_hidden=16, likelihood="nb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=64, **TRAIN)

    def depth(cells):
        return np.median(np.asarray(cells.X).sum(1))

    ratio = depth(model.sample(200, condition="stim", seed=0)) / depth(
        model.sample(200, condition="ctrl", seed=0)
    )
    assert 3 < ratio < 6, ratio  # the real cells': 4.6
    # A negative binomial draws its library size: the real cells' totals (ZINB's fall under
    # them by the dropout's share, as scvi-tools' SCVI's: the docstrings say so).
    real = np.median(counts[deep].sum(1))
    assert 0.8 < depth(model.sample(200, condition="stim", seed=0)) / real < 1.25, real
    assert "dropout zeroes" in dv.model.CGMDVAE.posterior_predictive_sample.__doc__
    mixed = model.sample(200, seed=0)
    stim = (mixed.obs["condition"] == "stim").to_numpy()
    assert depth(mixed[stim]) > 3 * depth(mixed[~stim])
    model.save(tmp_path / "m")  # kept with the model, loaded onto the controls alone
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata=adata[~deep].copy())
    np.testing.assert_array_equal(
        loaded.sample(50, condition="stim", seed=1).X, model.sample(50, condition="stim", seed=1).X
    )


def test_a_combination_of_few_cells_draws_its_mean_with_the_spread_of_all():
    """Two cells of a combination gave it their sd (near 0): every cell sampled there had
    one library size."""
    from deltavae.model._library_stats import cell_library_stats, record_library_stats

    obs = pd.DataFrame({"c": ["a"] * 30 + ["b"] * 2}, index=[f"c{i}" for i in range(32)])
    totals = np.r_[np.exp(np.random.default_rng(0).normal(6, 0.5, 30)), [400.0, 401.0]]
    model = types.SimpleNamespace(
        condition_keys=["c"],
        module=types.SimpleNamespace(
            observation=types.SimpleNamespace(is_count=True),
            alpha=torch.ones(2),
            device=torch.device("cpu"),
        ),
        adata=types.SimpleNamespace(obs=obs),
        adata_manager=types.SimpleNamespace(get_from_registry=lambda key: totals[:, None]),
        _cat_state=lambda: types.SimpleNamespace(mappings={"c": ["a", "b", "z"]}),
    )
    record_library_stats(model)
    stats = model.library_log_stats_by_condition_
    assert stats[("b",)] == (pytest.approx(np.log([400, 401]).mean()), None)
    assert stats[("a",)][1] == pytest.approx(np.log(totals[:30]).std())
    # "b" (2 cells) and "z" (no cell, no pooled quantiles kept) log-normal with the sd of all.
    draw = cell_library_stats(model, torch.tensor([[1], [2]]), (5.0, 0.7))
    lib = draw(torch.tensor([[0.0], [1.0]], dtype=torch.float64)).ravel()
    np.testing.assert_allclose(lib, [np.log([400, 401]).mean(), 5.7], rtol=1e-6)
    # "b" log-normal (2 cells), "a" from its 30 cells' libraries, "z" (no cell) from
    # those of all cells, where kept.
    assert model.library_log_quantiles_by_condition_[("a",)][50] == pytest.approx(
        np.median(np.log(totals[:30]))
    )
    model.library_log_quantiles_ = tuple(np.linspace(3.0, 4.0, 101))
    draw = cell_library_stats(model, torch.tensor([[1], [0], [2]]), (5.0, 0.7))
    lib = draw(torch.tensor([[1.0], [0.0], [0.0]], dtype=torch.float64)).ravel()
    assert lib[0] == pytest.approx(np.log([400, 401]).mean() + 0.7)
    assert lib[1] == pytest.approx(np.median(np.log(totals[:30])))
    assert lib[2] == pytest.approx(3.5) and lib.dtype == torch.float32


def test_a_number_of_cells_that_is_not_a_positive_integer_is_named(labelled):
    """n_cells=np.int64(0) was named "np.int64(0)"; 1e4 was refused without the integer."""
    model, _ = labelled
    for bad, named in [(np.int64(0), "0."), (1e4, "10000.0; pass n_cells=10000"), (-3, "-3.")]:
        with pytest.raises(ValueError, match=rf"n_cells must be a positive integer, got {named}"):
            model.sample(bad)


def test_one_value_for_a_model_of_several_keys_shows_it_as_python_would(labelled):
    """The advice showed "{'condition': np.str_('stim')}" for a value read from an obs column
    (and a Series of every cell's value in full)."""
    model, adata = labelled
    with pytest.raises(ValueError, match=r"e\.g\. \{'condition': 'stim'\} \(a key left out"):
        model.sample(5, condition=np.str_("stim"))
    with pytest.raises(ValueError, match=r"\{'condition': \['stim', .*, \.\.\.\] \(150 items\)\}"):
        model.sample(5, condition=adata.obs["condition"])


def test_a_cell_type_sampled_under_a_condition_it_was_held_out_of_is_named(tmp_path):
    """T cells held out of stim (their stim cells unlabelled), sampled under stim: drawn in
    silence, though the model never saw a T cell there, the held-out type whose response a
    user means to predict."""
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=3, n_conditions=2, seed=0
    )
    cell_type = adata.obs["cluster"].astype(str).map({"0": "B", "1": "NK", "2": "T"})
    cell_type = cell_type.astype(object).to_numpy()
    cell_type[(cell_type == "T") & (adata.obs["condition"] == "stim").to_numpy()] = "Unknown"
    adata.obs["type"] = cell_type
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="type")
    model = dv.model.CGMDVAE(adata, n_latent=2, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=64, train_size=1.0, **TRAIN)
    held = r"cells of 'T' under .*: condition='stim' \(6 cells\).*of 'T' carried: \['ctrl'\]"
    with pytest.warns(UserWarning, match=held):
        model.sample(6, cluster="T", condition="stim", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # types seen there, and T under ctrl: no warning
        model.sample(6, cluster="B", condition="stim", seed=0)
        model.sample(6, cluster="T", condition="ctrl", seed=0)
    model.save(tmp_path / "m")  # kept with the model, loaded onto the controls alone
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata=ctrl)
    with pytest.warns(UserWarning, match=held):
        loaded.sample(6, cluster="T", condition="stim", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded.sample(6, cluster="B", condition="stim", seed=0)


def test_sampled_cells_carry_the_labels_column_and_names_of_their_own(labelled):
    """Cells sampled by label had obs['cluster'] only, no labels column to concatenate with
    real cells; and every call named its cells sample_0, sample_1, ..., so that two samples
    concatenated repeated names (anndata: 'Observation names are not unique')."""
    model, adata = labelled
    cells = model.sample(6, cluster="T", seed=3)
    assert (cells.obs["type"] == "T").all()
    drawn = model.sample(30, seed=1)
    assert (drawn.obs["type"].astype(str) == drawn.obs["cluster"].astype(str)).all()
    assert list(model.sample(6, cluster="T", seed=3).obs_names) == list(cells.obs_names)
    assert not set(model.sample(6, cluster="T", seed=4).obs_names) & set(cells.obs_names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        both = ad.concat([model.sample(5), model.sample(5), cells, adata[:5]])
    assert both.obs_names.is_unique and both.obs["type"].notna().all()
    assert re.fullmatch(r"sample_[0-9a-f]{8}_5", cells.obs_names[5])


def test_normal_draws_stay_at_the_floor_of_log_normalized_data():
    """posterior_predictive_sample of a normal likelihood on log-normalized data drew values
    below 0 (-1.8), which sample and translate clip; a novel cluster's sampled cells are
    marked unlabelled in the labels column."""
    adata = dv.datasets.synthetic_counts(n_cells=90, n_genes=15, n_clusters=3, seed=0)
    adata.X = np.log1p(adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X)
    adata.obs["type"] = adata.obs["cluster"].astype(str).where(np.arange(90) % 3 > 0, "Unknown")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    model = dv.model.CGMDVAE(adata, n_clusters=4, likelihood="normal", n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=64, **TRAIN)
    assert model.posterior_predictive_sample().todense().min() == 0
    scaled = adata.copy()
    scaled.X = adata.X - 1.0  # real values below 0 (scaled data): drawn as they come
    assert model.posterior_predictive_sample(scaled).todense().min() < 0
    novel = model.sample(4, cluster="novel_0", seed=0)
    assert (novel.obs["type"] == "Unknown").all() and (novel.obs["cluster"] == "novel_0").all()


def test_sampled_labels_keep_the_order_of_the_models_labels():
    """The labels column of sampled cells had its categories sorted (B, NK, T) where the
    training column's, and obs["cluster"]'s, were T, NK, B: concatenated with real cells,
    scanpy's colours and orders of the labels no longer matched theirs."""
    from deltavae.model._sample_record import sampled_labels

    state = types.SimpleNamespace(categorical_mapping=np.array(["T", "NK", "B", "Unknown"]))
    state.unlabeled_category = "Unknown"
    model = types.SimpleNamespace(
        registry_={"setup_args": {"labels_key": "type"}},
        adata_manager=types.SimpleNamespace(get_state_registry=lambda key: state),
    )
    labels = sampled_labels(model, np.array([2, 0, 3, 2]))
    assert list(labels) == ["B", "T", "Unknown", "B"]
    assert list(labels.categories) == ["T", "B", "Unknown"]  # the model's order, drawn only
    state.categorical_mapping, state.unlabeled_category = np.array([9, 3, -1]), "Unknown"
    mixed = sampled_labels(model, np.array([1, 0, 2]))  # integers and the mark: strings
    assert list(mixed) == ["3", "9", "Unknown"] and list(mixed.categories) == ["9", "3", "Unknown"]
    assert list(sampled_labels(model, np.array([1, 0])).categories) == [9, 3]


def test_a_cell_type_of_skewed_depths_is_sampled_at_its_observed_totals(tmp_path):
    """Library sizes were drawn log-normal from each group's mean and sd of log libraries:
    a type with a tail of shallow cells (as most of 10x data's: PBMC 3k's FCGR3A+ monocytes
    came 10% under their median, DCs 13%) got totals under its real ones, here 30% under
    the median. Drawn from the group's observed libraries: its median and tails, kept by
    save and load, the same for a seed."""
    adata = dv.datasets.synthetic_counts(
        n_cells=160, n_genes=20, n_clusters=2, n_conditions=2, seed=0
    )
    counts = np.asarray(adata.X.todense() if hasattr(adata.X, "todense") else adata.X)
    a = (adata.obs["cluster"].astype(str) == "0").to_numpy()
    deep = a & (np.random.default_rng(0).random(adata.n_obs) < 0.75)
    counts[deep] *= 8  # three quarters of type A deep, a quarter shallow
    adata.X = counts
    adata.obs["type"] = np.where(a, "A", "B")
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="type")
    model = dv.model.CGMDVAE(adata, n_latent=2, n_hidden=8, likelihood="nb")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, batch_size=80, train_size=1.0, **TRAIN)
    cells = model.sample(400, label="A", seed=0)
    drawn = cells.layers["expected"].sum(1)  # each cell's library size
    real = counts[a].sum(1)
    for q in (0.1, 0.5, 0.9):  # log-normal: median 0.70, 10% 1.9 of the real ones'
        assert np.quantile(drawn, q) / np.quantile(real, q) == pytest.approx(1, abs=0.06), q
    assert set(model.library_log_quantiles_by_cluster_) == {
        (t, c) for t in "AB" for c in ("ctrl", "stim")
    }
    every = np.quantile(np.log(counts.sum(1)), np.linspace(0, 1, 101))
    np.testing.assert_allclose(model.library_log_quantiles_, every)  # a novel cluster's
    model.save(tmp_path / "m")
    loaded = dv.model.CGMDVAE.load(tmp_path / "m", adata=adata)
    assert loaded.library_log_quantiles_ == model.library_log_quantiles_
    assert loaded.library_log_quantiles_by_cluster_ == model.library_log_quantiles_by_cluster_
    assert loaded.fit_records_ == model.fit_records_
    np.testing.assert_array_equal(loaded.sample(400, label="A", seed=0).X, cells.X)


def test_the_quantiles_of_two_fits_are_those_of_their_cells_together():
    """Each AnnData's last fit is kept on its own (fit_records_); the quantiles sample draws
    from are those of every AnnData's cells together, weighted by their cells."""
    from deltavae.model._library_quantiles import (
        LEVELS,
        group_quantiles,
        mixture,
        record_quantiles,
    )

    rng = np.random.default_rng(0)
    first, second = rng.normal(6, 0.3, 300), rng.normal(7.5, 0.6, 100)
    parts = [group_quantiles(v, [np.zeros(len(v), int)])[("0",)] for v in (first, second)]
    n, joined = mixture(parts)
    assert n == 400 and len(joined) == LEVELS
    both = np.quantile(np.r_[first, second], np.linspace(0, 1, LEVELS))
    np.testing.assert_allclose(joined, both, atol=0.05)
    assert mixture(parts[:1]) == parts[0]
    # A fit's moments pooled with those of an AnnData whose libraries were not kept (a model
    # saved before): its group drawn log-normal from the moments, not from the new cells.
    model = types.SimpleNamespace(adata=types.SimpleNamespace(obs=pd.DataFrame(index=["a"])))
    for pooled, kept in ((300, True), (500, False)):
        record_quantiles(model, "cluster", {("0",): parts[0]}, 10, {("0",): pooled})
        assert (("0",) in model.library_log_quantiles_by_cluster_) is kept
