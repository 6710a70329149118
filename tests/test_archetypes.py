"""Archetypes: recovery on known mixtures, auto count, merging, markers, matching, save/load."""

import copy
import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import torch
from _torch_elbo import assert_torch_elbo_is_pyros

import deltavae as dv
from deltavae.metrics import matched_profile_correlation
from deltavae.model._stable_matching import stable_matching

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
# The warning that archetypes 0 and 1 (made duplicates) merged as alike.
ALIKE = r"raw archetypes \(0, 1\) point the same way"


@pytest.fixture(scope="module")
def fitted():
    mix = dv.datasets.convex_mixtures(n_spots=300, n_genes=120, n_archetypes=4, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes="auto", max_archetypes=7)
    model.train(max_epochs=80, **TRAIN)
    return model, mix


def test_recovers_archetypes_and_weights(fitted):
    model, mix = fitted
    assert abs(model.elbow_["chosen"] - 4) <= 1
    names = model.archetype_names()
    assert abs(len(names) - 4) <= 1
    profiles = model.get_archetype_profiles()
    np.testing.assert_allclose(profiles.sum(0), 1.0, rtol=1e-5)
    matched = matched_profile_correlation(mix.varm["profiles_true"].T, profiles.to_numpy().T)
    assert matched["correlation"].mean() >= 0.9, matched
    weights = model.get_archetype_weights()
    np.testing.assert_allclose(weights.sum(1), 1.0, atol=1e-5)
    truth = mix.obsm["weights_true"]
    for true_k, found_k in enumerate(matched["matched"]):
        assert np.corrcoef(truth[:, true_k], weights.iloc[:, found_k])[0, 1] > 0.9


def test_write_to_adata_layout_and_scanpy_plot(fitted, tmp_path):
    model, mix = fitted
    adata = mix.copy()
    keys = model.write_to_adata(adata, n_anchors=10)
    assert keys == [
        "obsm/archetype_weights",
        "varm/archetype_profiles",
        "obs/archetype_anchor",
        "obs/archetype_dominant",
        "uns/archetype_markers",
        "uns/archetypes",
    ]
    k = len(model.archetype_names())
    assert adata.varm["archetype_profiles"].shape == (adata.n_vars, k)
    anchors = adata.obs["archetype_anchor"]
    assert anchors.notna().sum() <= 10 * k and anchors.isna().any()
    # Categorical with every archetype, as archetype_dominant (it was text: scanpy coloured
    # the two differently and dropped archetypes without anchors).
    assert isinstance(anchors.dtype, pd.CategoricalDtype)
    assert list(anchors.cat.categories) == list(adata.obs["archetype_dominant"].cat.categories)
    dominant = adata.obs["archetype_dominant"].astype(str)
    assert (dominant[anchors.notna()] == anchors[anchors.notna()].astype(str)).all()
    uns = adata.uns["archetypes"]
    assert uns["merge_tree"].shape == (model.n_archetypes_raw_ - 1, 4)
    assert list(uns["elbow"]["n_archetypes"]) == list(range(2, 8))
    axes = sc.pl.rank_genes_groups(adata, key="archetype_markers", n_genes=5, show=False)
    assert len(axes) == k
    frame = sc.get.rank_genes_groups_df(adata, group="A0", key="archetype_markers")
    assert frame["scores"].is_monotonic_decreasing
    ax = dv.pl.archetype_elbow(adata, show=False)
    assert ax.get_xlabel() == "number of archetypes"
    adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_allclose(back.obsm["archetype_weights"], adata.obsm["archetype_weights"])
    assert back.uns["archetypes"]["n_archetypes_raw"] == model.n_archetypes_raw_


def test_write_to_adata_takes_the_training_spots_and_genes_in_any_order(fitted):
    model, mix = fitted
    ref = mix.copy()
    model.write_to_adata(ref, n_anchors=10)
    rng = np.random.default_rng(0)
    shuffled = mix[rng.permutation(mix.n_obs)][:, rng.permutation(mix.n_vars)].copy()
    model.write_to_adata(shuffled, n_anchors=10)
    spots, genes = shuffled.obs_names, shuffled.var_names
    np.testing.assert_array_equal(
        shuffled.obsm["archetype_weights"], ref.obsm["archetype_weights"].loc[spots]
    )
    ref_profiles = pd.DataFrame(ref.varm["archetype_profiles"], index=ref.var_names)
    np.testing.assert_array_equal(shuffled.varm["archetype_profiles"], ref_profiles.loc[genes])
    for key in ("archetype_anchor", "archetype_dominant"):
        pd.testing.assert_series_equal(shuffled.obs[key], ref.obs[key].loc[spots])
    # A second fit's keys under a prefix: its markers name its own dominant column.
    keys = model.write_to_adata(ref, n_anchors=10, key_added="k4")
    assert ref.uns["k4_archetype_markers"]["params"]["groupby"] == "k4_archetype_dominant"
    assert "obs/k4_archetype_dominant" in keys
    assert ref.uns["archetype_markers"]["params"]["groupby"] == "archetype_dominant"
    # A subset said "has 299, 0 of them not among the training spots".
    subset = r"training spots \(300, in any order\); this AnnData has 299 spots: lacking 1 of them"
    with pytest.raises(ValueError, match=subset):
        model.write_to_adata(mix[1:].copy())
    other = mix.copy()
    other.var_names = [f"x{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match=r"training genes .*has 120 genes: lacking 120 of them\. "):
        model.write_to_adata(other)
    assert "archetype_weights" not in other.obsm
    # Trained on some genes of a whole (adata[:, hvg]): the whole, its spots by name, was
    # refused; its spots' results are written, the profiles NaN on genes the model never read.
    whole = ad.concat([mix, other], axis=1, merge="first")[spots].copy()
    model.write_to_adata(whole, n_anchors=10)
    pd.testing.assert_frame_equal(
        whole.obsm["archetype_weights"], shuffled.obsm["archetype_weights"]
    )
    profiles = pd.DataFrame(whole.varm["archetype_profiles"], index=whole.var_names)
    np.testing.assert_array_equal(profiles.loc[genes], shuffled.varm["archetype_profiles"])
    assert profiles.loc[other.var_names].isna().all().all()
    # Read as new spots, the whole was refused too (every other model reads its genes by name).
    np.testing.assert_allclose(
        model.get_archetype_weights(whole), whole.obsm["archetype_weights"], rtol=1e-5
    )
    pd.testing.assert_series_equal(whole.obs["archetype_anchor"], shuffled.obs["archetype_anchor"])
    # Some training genes missing, or repeated: refused by name.
    with pytest.raises(ValueError, match=r"has 119 genes: lacking 1 of them\. "):
        model.write_to_adata(mix[:, 1:].copy())
    whole.var_names = [*whole.var_names[:-1], mix.var_names[0]]
    with pytest.raises(ValueError, match=r"training genes .*has 240 genes: some repeated\. "):
        model.write_to_adata(whole)


def test_markers_are_the_true_marker_genes(fitted):
    model, mix = fitted
    matched = matched_profile_correlation(
        mix.varm["profiles_true"].T, model.get_archetype_profiles().to_numpy().T
    )
    markers = model.get_markers(n_genes=10)
    truth = pd.DataFrame(mix.varm["profiles_true"], index=mix.var_names)
    for true_k, found_k in enumerate(matched["matched"]):
        expected = set((truth[true_k] / truth.drop(columns=true_k).mean(1)).nlargest(15).index)
        found = set(markers["names"][f"A{found_k}"])
        assert len(found & expected) >= 8


def test_stable_matching_differs_from_max_sum():
    # Signature 0 and archetype 0 prefer each other: stable matching keeps them together,
    # although pairing them crosswise would give a larger total (0.8 + 0.7 > 0.9 + 0.1).
    assert stable_matching(np.array([[0.9, 0.8], [0.7, 0.1]])) == [(0, 0), (1, 1)]
    assert stable_matching(np.array([[0.1, 0.9, 0.2], [0.2, 0.8, 0.7]])) == [(0, 1), (1, 2)]


def test_match_signatures_and_novel_states(fitted):
    model, mix = fitted
    matched = matched_profile_correlation(
        mix.varm["profiles_true"].T, model.get_archetype_profiles().to_numpy().T
    )
    truth = pd.DataFrame(mix.varm["profiles_true"], index=mix.var_names)
    signatures = {}
    for true_k in range(2):  # signatures for two true archetypes only; the rest are novel
        top = (truth[true_k] / truth.drop(columns=true_k).mean(1)).nlargest(10).index
        signatures[f"state{true_k}"] = [*top, "NOT_A_GENE"]
    # One warning per signature (state0, state1) naming the gene it lacks.
    with pytest.warns(UserWarning, match=r"state[01].*\['NOT_A_GENE'\]"):
        table = model.match_signatures(signatures)
    for true_k in range(2):
        assert table["signature"].iloc[matched["matched"][true_k]] == f"state{true_k}"
    novel = table[table["signature"].isna()]
    assert sorted(novel["novel_rank"]) == list(range(1, len(novel) + 1))
    assert novel.sort_values("novel_rank")["score"].is_monotonic_increasing
    # A signature without any of its genes is left out; the others are matched as before.
    # The genes are looked up among the model's genes ("not in the data" was said of genes of
    # the AnnData the model was not trained on, as highly variable genes leave them).
    ghost = "'ghost': 2 of 2 genes are not among the model's 120 genes, .*the signature is left"
    with pytest.warns(UserWarning) as record:
        with_ghost = model.match_signatures({**signatures, "ghost": ["NOPE1", "NOPE2"]})
    assert any(re.search(ghost, str(w.message)) for w in record)
    pd.testing.assert_frame_equal(with_ghost, table)
    with pytest.warns(UserWarning) as record:  # numpy's names were shown as np.str_('NOPE1')
        model.match_signatures({**signatures, "ghost": np.array(["NOPE1", "NOPE2"])})
    assert any("has none): ['NOPE1', 'NOPE2']" in str(w.message) for w in record)
    # Genes written in another case ('GENE_3' for the model's 'gene_3', mouse against human
    # symbols) were blamed on the training genes (highly variable genes); the case is named.
    shouted = {**signatures, "state0": [g.upper() for g in signatures["state0"]]}
    with pytest.warns(UserWarning) as record:
        model.match_signatures(shouted)
    cased = r"'state0': 11 of 11 genes .*\(10 of them are the model's genes ignoring case \(e.g. '"
    assert any(re.search(cased, str(w.message)) for w in record), [str(w.message) for w in record]
    assert not any(
        "highly variable" in str(w.message) for w in record if "state0" in str(w.message)
    )
    with pytest.warns(UserWarning) as record:  # a signature listing no genes, as a filter leaves
        with_empty = model.match_signatures({**signatures, "empty": []})
    assert any("'empty' lists no genes; it is left out" in str(w.message) for w in record)
    pd.testing.assert_frame_equal(with_empty, table)
    with (
        pytest.warns(UserWarning, match=ghost),
        pytest.raises(ValueError, match="no signature has any of its genes among the model's "),
    ):
        model.match_signatures({"ghost": ["NOPE1", "NOPE2"]})
    # Every signature emptied by a filter on the model's genes (as the tutorial's): not "use the
    # same gene identifiers", there were none to compare.
    with (
        pytest.warns(UserWarning, match="lists no genes; it is left out"),
        pytest.raises(ValueError, match=r"every signature lists no genes \(\['a', 'b'\]\)"),
    ):
        model.match_signatures({"a": [], "b": []})
    # A cell types x genes table, as NMFDeconv.get_signatures returns (pandas' "truth value
    # of a DataFrame is ambiguous" before).
    with pytest.raises(TypeError, match=r"got a DataFrame.*nlargest"):
        model.match_signatures(truth.T)
    # One signature as a plain list of genes (an AttributeError from dict's items before).
    with pytest.raises(TypeError, match=r"got a list\. One signature of these genes: \{'my_type'"):
        model.match_signatures(list(truth.index[:3]))
    adata = mix.copy()
    with pytest.warns(UserWarning, match=r"state[01].*\['NOT_A_GENE'\]"):
        model.match_signatures(signatures)
    model.write_to_adata(adata)
    assert "signature_map" in adata.uns["archetypes"]
    # Other archetypes since (merged here): the old map named them wrongly, silently.
    clone = copy.deepcopy(model)
    with torch.no_grad():
        clone.module.B_logits[1] = clone.module.B_logits[0]
    with pytest.warns(UserWarning, match=ALIKE):
        with pytest.warns(UserWarning, match="changed after match_signatures"):
            clone.write_to_adata(adata)
    assert "signature_map" not in adata.uns["archetypes"]


def test_signatures_as_a_pandas_index_or_series(fitted):
    """Gene lists taken from pandas (df.index[:10], a column of names) as scanpy takes them:
    refused before as 'must be a list of gene names', with advice to wrap them in a list."""
    model, _ = fitted
    profiles = model.get_archetype_profiles()
    top = {f"s{k}": profiles.iloc[:, k].nlargest(8).index for k in range(2)}
    table = model.match_signatures({name: list(genes) for name, genes in top.items()})
    pd.testing.assert_frame_equal(model.match_signatures(top), table)
    as_series = {name: pd.Series(genes) for name, genes in top.items()}
    pd.testing.assert_frame_equal(model.match_signatures(as_series), table)
    # A gene listed twice (lists merged from two sources) weighed twice in the mean.
    twice = {name: [genes[0], *genes] for name, genes in top.items()}
    pd.testing.assert_frame_equal(model.match_signatures(twice), table)
    # Signatures of symbols where var_names are other IDs: read in a var column as scanpy's
    # gene_symbols (refused before as 'use the same gene identifiers', naming no column).
    var = model.adata.var
    var["symbol"] = "SYM_" + var.index.str.upper()
    try:
        symbols = {name: list("SYM_" + genes.str.upper()) for name, genes in top.items()}
        with (
            pytest.warns(UserWarning, match="8 of 8 genes are not among the model's 120 genes, "),
            pytest.raises(ValueError, match=r"var\['symbol'\] names 16 of them: pass gene_"),
        ):
            model.match_signatures(symbols)
        pd.testing.assert_frame_equal(model.match_signatures(symbols, gene_symbols="symbol"), table)
        extra = {**symbols, "s0": [*symbols["s0"], "SYM_NOPE"]}
        by_symbol = r"1 of 9 genes are not among the model's 120 genes \(by their var\['symbol'\]\)"
        with pytest.warns(UserWarning, match=by_symbol):
            model.match_signatures(extra, gene_symbols="symbol")
        with pytest.raises(KeyError, match=r"gene_symbols='sym' is not a column .*'symbol'"):
            model.match_signatures(symbols, gene_symbols="sym")
    finally:
        var.pop("symbol")


def test_a_signature_gene_named_only_by_a_var_column_is_pointed_to_gene_symbols(fitted):
    """Kang's CD79A (var_name 'CD79A_ENSG00000105369', var['SYMBOL'] 'CD79A') in a signature
    of var_names was said to be 'left out of training, as by a highly variable gene
    selection', though the model has its profile under another name."""
    model, _ = fitted
    genes = list(model.get_archetype_profiles().iloc[:, 0].nlargest(4).index)
    var = model.adata.var
    var["symbol"] = var.index.astype(str)
    var.loc[genes[0], "symbol"] = "CD79A"
    try:
        with pytest.warns(UserWarning, match="") as record:
            model.match_signatures({"B": ["CD79A", *genes[1:]]})
        text = " ".join(str(w.message) for w in record)
        assert "var['symbol'] names 1 of them: pass gene_symbols='symbol'" in text
        assert "highly variable" not in text
    finally:
        var.pop("symbol")


def test_a_loaded_signature_map_is_not_written_for_other_archetypes(fitted, tmp_path):
    """Matched, saved, loaded, then other archetypes (more training, another merge): the old
    map, naming archetypes that were gone, was written as if current (assumed for a load)."""
    model, mix = fitted
    profiles = model.get_archetype_profiles()
    model.match_signatures({f"s{k}": list(profiles.iloc[:, k].nlargest(8).index) for k in (0, 1)})
    model.save(tmp_path / "a")
    loaded = dv.model.Archetypes.load(tmp_path / "a", mix)
    adata = mix.copy()
    loaded.write_to_adata(adata)
    assert "signature_map" in adata.uns["archetypes"]
    with torch.no_grad():
        loaded.module.B_logits[1] = loaded.module.B_logits[0]
    with pytest.warns(UserWarning, match=ALIKE):
        with pytest.warns(UserWarning, match="changed after match_signatures"):
            loaded.write_to_adata(adata)
    assert "signature_map" not in adata.uns["archetypes"]


def test_merging_duplicates_counts_and_tree(fitted):
    model, mix = fitted
    raw = model.n_archetypes_raw_
    assert len(model.archetype_names()) == raw  # distinct archetypes stay apart
    clone = copy.deepcopy(model)
    clone.signature_map_ = None  # matched, by another test, to the archetypes changed here
    with torch.no_grad():  # make archetype 1 a duplicate of archetype 0
        clone.module.B_logits[1] = clone.module.B_logits[0]
    # Said (it was silent): fewer archetypes than fitted, and which merged.
    message = rf"{raw} raw archetypes were merged into {raw - 1}: raw archetypes \(0, 1\) point"
    with pytest.warns(UserWarning, match=message):
        assert len(clone.archetype_names()) == raw - 1
    adata = mix.copy()
    clone.write_to_adata(adata)
    groups = adata.uns["archetypes"]["merge_groups"]
    assert groups[0] == groups[1] and len(set(groups)) == raw - 1
    assert adata.obsm["archetype_weights"].shape[1] == raw - 1
    np.testing.assert_allclose(adata.obsm["archetype_weights"].sum(1), 1.0, atol=1e-5)
    clone.merge_threshold = 1.0  # 1 never merges
    assert len(clone.archetype_names()) == raw


def test_save_load_and_new_spots(fitted, tmp_path):
    model, mix = fitted
    model.save(tmp_path / "arch")
    loaded = dv.model.Archetypes.load(tmp_path / "arch", mix)
    pd.testing.assert_frame_equal(loaded.get_archetype_weights(), model.get_archetype_weights())
    assert loaded.train_args_ == model.train_args_
    assert (model.train_args_["max_epochs"], model.train_args_["lr"]) == (80, 5e-3)
    new = dv.datasets.convex_mixtures(n_spots=40, n_genes=120, n_archetypes=4, seed=0)
    dv.model.Archetypes.setup_anndata(new)
    assert loaded.get_archetype_weights(new).shape[0] == 40
    before = loaded.module.B_logits.detach().clone()
    loaded.train(max_epochs=1, **TRAIN)
    assert not np.allclose(before.numpy(), loaded.module.B_logits.detach().numpy())
    assert loaded.train_args_["max_epochs"] == 1 and model.train_args_["max_epochs"] == 80


def _deeper(spots: ad.AnnData, factor: int) -> ad.AnnData:
    """The spots' counts times ``factor`` (the same profiles, sequenced deeper), renamed."""
    deeper = spots.copy()
    deeper.X = deeper.X * factor
    deeper.obs_names = [f"deep_{name}" for name in spots.obs_names]
    return deeper


def test_new_spots_weights_follow_their_profile_not_their_depth(fitted):
    """The likelihood's mean is l_s (w_s A): the same profile at three times the depth is the
    same mixture. The encoder read log1p counts, so it gave it other weights (on the
    olfactory bulb thinned to 20%, another dominant archetype in 14 to 19% of the spots)."""
    model, mix = fitted
    spots = mix[:40].copy()
    weights = model.get_archetype_weights(spots)
    deeper = model.get_archetype_weights(_deeper(spots, 3))
    np.testing.assert_allclose(deeper.to_numpy(), weights.to_numpy(), atol=1e-5)


def test_a_model_saved_reading_log_counts_loads_reading_them(fitted, tmp_path):
    """A model saved before its encoder read counts per 10,000 keeps reading log1p counts
    (its encoder was trained on them), and loads without a state-dict error."""
    model, mix = fitted
    model.save(tmp_path / "arch")
    saved = torch.load(tmp_path / "arch" / "model.pt", weights_only=False)
    del saved["model_state_dict"]["reads_cp10k"]
    del saved["attr_dict"]["weights_digest_"]["reads_cp10k"]  # as such a model saved it
    torch.save(saved, tmp_path / "arch" / "model.pt")
    old = dv.model.Archetypes.load(tmp_path / "arch", mix)
    assert not old.module.cp10k_input
    spots = mix[:40].copy()
    x = torch.as_tensor(spots.X.toarray() if hasattr(spots.X, "toarray") else spots.X)
    with torch.no_grad():
        old.module.eval()
        qz, _ = old.module.encoder(torch.log1p(x.float()))
    expected = torch.distributions.StickBreakingTransform()(qz.loc).numpy()
    raw = old._raw_weights(spots, None)
    np.testing.assert_allclose(raw, expected, atol=1e-5)
    assert dv.model.Archetypes.load(tmp_path / "arch", mix).module.cp10k_input is False
    assert model.module.cp10k_input


def test_bad_input():
    mix = dv.datasets.convex_mixtures(n_spots=20, n_genes=40, n_archetypes=2, n_markers=5)
    dv.model.Archetypes.setup_anndata(mix)
    with pytest.raises(ValueError, match="n_archetypes=25 is larger than the number of spots"):
        dv.model.Archetypes(mix, n_archetypes=25)
    with pytest.raises(ValueError, match="n_archetypes must be an integer or 'auto'"):
        dv.model.Archetypes(mix, n_archetypes="many")
    # Fewer candidate spots than archetypes: identical archetypes, or numpy's "argmax of an
    # empty sequence" for "auto".
    with pytest.raises(ValueError, match="max_candidates=3 is too few for n_archetypes=4"):
        dv.model.Archetypes(mix, n_archetypes=4, max_candidates=3)
    with pytest.raises(ValueError, match="max_candidates=2 is too few for n_archetypes='auto'"):
        dv.model.Archetypes(mix, n_archetypes="auto", max_candidates=2)
    with pytest.raises(ValueError, match="max_candidates must be a positive integer"):
        dv.model.Archetypes(mix, n_archetypes=2, max_candidates="all")


def test_likelihood_is_the_negative_binomial():
    """The obs site (the fused count log-density) gives Pyro's NB log-likelihood and its
    gradients, with the mean l_s * (w_s A)_g."""
    from pyro import poutine

    from deltavae.distributions import negative_binomial
    from deltavae.module import ArchetypesModule

    gen = torch.Generator().manual_seed(0)
    profiles = torch.softmax(torch.randn(30, 12, generator=gen), dim=-1)
    module = ArchetypesModule(profiles, torch.softmax(torch.randn(3, 30, generator=gen), dim=-1))
    x = torch.poisson(torch.full((16, 12), 2.0), generator=gen)
    weights = torch.softmax(torch.randn(16, 3, generator=gen), dim=-1)
    model = poutine.condition(module.model, data={"weights": weights})
    fused = poutine.trace(model).get_trace(x).nodes["obs"]["fn"].log_prob(x).sum()
    mean = x.sum(-1, keepdim=True) * (weights @ module.archetype_profiles())
    pyro_nb = negative_binomial(mean, torch.exp(module.log_theta)).log_prob(x).sum()
    params = [module.B_logits, module.log_theta]
    grads = [torch.autograd.grad(value, params) for value in (fused, pyro_nb)]
    torch.testing.assert_close(fused, pyro_nb, rtol=1e-5, atol=1e-3)
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_samples", [1, 2])
def test_torch_elbo_is_pyros_trace_elbo(n_samples):
    """negative_elbo, which training uses, gives Pyro's Trace_ELBO of model and guide from the
    same draws (dropout included): value and gradients, with and without technology factors."""
    from deltavae.module import ArchetypesModule

    torch.manual_seed(0)
    profiles = torch.softmax(torch.randn(20, 8), dim=-1)
    module = ArchetypesModule(
        profiles,
        torch.softmax(torch.randn(3, 20), dim=-1),
        n_hidden=16,
        prior_concentration=0.8,
        n_samples=n_samples,
    )
    if n_samples > 1:
        with torch.no_grad():
            module.log_technology.normal_(0.0, 0.3)
    module.n_obs = 60
    x = torch.poisson(torch.rand(12, 8) * 20)
    sample = torch.randint(0, 2, (12, 1)) if n_samples > 1 else None
    _, terms, _ = assert_torch_elbo_is_pyros(module, (x, sample), kl_weight=0.3)
    assert set(terms) == {"reconstruction_loss", "kl_weights"}


def test_log_stick_breaking_is_torchs_map_and_jacobian():
    from torch.distributions.transforms import StickBreakingTransform

    from deltavae.module._archetypes import log_stick_breaking

    u = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 3
    log_w, log_det = log_stick_breaking(u)
    sb = StickBreakingTransform()
    w = sb(u)
    assert torch.allclose(log_w.exp(), w, rtol=1e-10)
    assert torch.allclose(log_det, sb.log_abs_det_jacobian(u, w), rtol=1e-10)


def test_stick_breaking_under_deterministic_algorithms_is_the_same():
    """The map, its Jacobian and the log-space weights without a float cumsum (which CUDA
    refuses under deterministic algorithms): torch's to rounding; torch's own map otherwise."""
    from torch.distributions.transforms import StickBreakingTransform

    from deltavae.module._archetypes import StickBreaking, log_stick_breaking

    u = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)) * 3
    torchs = StickBreakingTransform()
    w, log_det = torchs(u), torchs.log_abs_det_jacobian(u, torchs(u))
    assert torch.equal(StickBreaking()(u), w)
    usual = log_stick_breaking(u)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.testing.assert_close(StickBreaking()(u), w)
        torch.testing.assert_close(StickBreaking().log_abs_det_jacobian(u, w), log_det)
        for ours, expected in zip(log_stick_breaking(u), usual, strict=True):
            torch.testing.assert_close(ours, expected)
    finally:
        torch.use_deterministic_algorithms(before)


def test_the_objective_of_a_spot_near_one_archetype_is_exact():
    """A spot almost wholly of one archetype (first weight 1 - 1e-7) with a confident
    posterior: the float32 objective equals the float64 one. Inverting the stick-breaking map
    from the weights (Pyro's log density, as before) put the KL estimates of the two such
    spots 15 and 208 nats off in float32; on an H200 such spots turned the loss NaN."""
    from torch.distributions import Normal

    from deltavae.module._archetypes import ArchetypesModule

    g = torch.Generator().manual_seed(1)
    profiles = torch.softmax(torch.randn(12, 30, generator=g), -1)
    module = ArchetypesModule(profiles, torch.softmax(torch.randn(5, 12, generator=g), -1))
    loc = torch.tensor([[16.0, 0.0, 0.0, 0.0], [0.0, 15.0, 0.0, 0.0], [0.5, -0.2, 0.1, 0.3]])
    x = torch.poisson(torch.full((3, 30), 4.0, dtype=torch.float64), generator=g)

    class Fixed(torch.nn.Module):
        def forward(self, x, *covariates):
            return Normal(loc.to(x.dtype), 1e-2), None

    def objective(m, dtype):
        m.encoder = Fixed()
        torch.manual_seed(0)
        return m.negative_elbo(x.to(dtype))

    wide = copy.deepcopy(module).double()
    value32, terms32 = objective(module, torch.float32)
    value64, terms64 = objective(wide, torch.float64)
    assert torch.isfinite(value32).all()
    assert torch.allclose(terms32["kl_weights"].double(), terms64["kl_weights"], atol=0.05)
    assert torch.allclose(value32.double(), value64, rtol=1e-4, atol=0.05)


@pytest.mark.slow
def test_slides_with_technical_factors_share_the_archetypes(tmp_path):
    """The same olfactory-bulb spots on two slides, one with gene-wise technical factors:
    the archetypes, mixtures of raw candidate spots, kept their slide's factors (the model
    applied the spots' factors on top), so each slide got archetypes of its own; the same
    spot's dominant archetype agreed across slides for 49% of the spots (8% on all genes)."""
    import scipy.sparse as sps

    try:
        mob = dv.datasets.mob_spatial()
    except FileNotFoundError as err:
        pytest.skip(f"shared data folder not available: {err}")
    one = mob[:, np.argsort(-np.asarray(mob.X.sum(0)).ravel())[:500]].copy()
    one = one[np.asarray(one.X.sum(1)).ravel() > 0].copy()
    rng = np.random.default_rng(0)
    factors = np.exp(rng.normal(0.0, 0.5, one.n_vars))
    other = one.copy()
    other.obs_names = [f"{name}_b" for name in one.obs_names]
    other.X = sps.csr_matrix(rng.poisson(one.X.toarray() * factors))
    one.obs["slide"], other.obs["slide"] = "a", "b"
    both = ad.concat([one, other])
    both.obs["slide"] = both.obs["slide"].astype("category")
    dv.model.Archetypes.setup_anndata(both, sample_key="slide")
    model = dv.model.Archetypes(both, n_archetypes=4)
    model.train(max_epochs=40, **TRAIN)
    weights = model.get_archetype_weights().to_numpy()
    first, second = weights[: one.n_obs], weights[one.n_obs :]
    assert (first.argmax(1) == second.argmax(1)).mean() > 0.75
    model.save(tmp_path / "slides")
    loaded = dv.model.Archetypes.load(tmp_path / "slides", both)
    np.testing.assert_allclose(loaded.get_archetype_weights().to_numpy(), weights, atol=1e-6)


def test_sample_factors_of_numbered_slides_are_named_by_strings(tmp_path):
    """Slides numbered 0 and 1 (integer categories): the factors' columns were integers, and
    an AnnData holding them (varm) could not be written (h5ad takes string names only)."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=40, n_archetypes=2, n_markers=5)
    mix.obs["slide"] = pd.Categorical(np.arange(mix.n_obs) % 2)
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    model = dv.model.Archetypes(mix, n_archetypes=2, min_spots=1)
    model.train(max_epochs=1, **TRAIN)
    factors = model.get_sample_factors()
    assert list(factors.columns) == ["0", "1"]
    mix.varm["sample_factors"] = factors
    mix.write_h5ad(tmp_path / "slides.h5ad")
    back = ad.read_h5ad(tmp_path / "slides.h5ad")
    np.testing.assert_allclose(back.varm["sample_factors"][["0", "1"]].to_numpy(), factors)
    spots = mix.copy()
    spots.obs["slide"] = spots.obs["slide"].astype(float)  # were new samples "0.0", "1.0"
    with pytest.raises(ValueError, match=r"samples as another type.*astype\(int\)"):
        model.get_archetype_weights(spots)


def test_a_load_under_another_seed_keeps_the_candidates_slides(tmp_path):
    """More spots than 5 x max_candidates: load builds the model again, which drew another
    pool of candidates under another scvi.settings.seed, and took the saved candidates'
    profiles for those other spots' slides: the loaded archetypes were not the saved ones."""
    import scvi

    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=30, n_archetypes=2, n_markers=5)
    mix.obs["slide"] = pd.Categorical(np.where(np.arange(60) % 3, "a", "b"))
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    model = dv.model.Archetypes(mix, n_archetypes=2, max_candidates=8, min_spots=1, n_hidden=8)
    with torch.no_grad():
        model.module.log_technology.normal_(0.0, 0.5)
    model.save(tmp_path / "slides")
    scvi.settings.seed = 1
    loaded = dv.model.Archetypes.load(tmp_path / "slides", mix)
    assert torch.equal(loaded.module.candidate_samples, model.module.candidate_samples)
    torch.testing.assert_close(
        loaded.module.archetype_profiles(), model.module.archetype_profiles()
    )


def test_loading_onto_other_spots_counts_the_training_spots(tmp_path):
    """The refusal counted B's columns, the candidate spots (8), as the spots fitted (60)."""
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=30, n_archetypes=2, n_markers=5)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=2, max_candidates=8, min_spots=1, n_hidden=8)
    model.save(tmp_path / "a")
    with pytest.raises(ValueError, match="for each of its 60 spots.*got 50 spots"):
        dv.model.Archetypes.load(tmp_path / "a", mix[:50].copy())


@pytest.mark.filterwarnings("ignore:min_spots=1 was not fully applied")
@pytest.mark.filterwarnings("ignore:archetype A. has no anchors")
def test_loaded_onto_reordered_spots_writes_into_the_adata_given(tmp_path):
    """Loaded onto its spots in another order, the model reads a copy in the fitted order:
    write_to_adata() wrote into that copy and returned its keys, the AnnData given got none."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=30, n_archetypes=2, n_markers=5)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=2, min_spots=1, n_hidden=8)
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "a")
    spots = mix[::-1].copy()
    with pytest.warns(UserWarning, match="in another order"):
        loaded = dv.model.Archetypes.load(tmp_path / "a", spots)
    loaded.write_to_adata()
    weights = spots.obsm["archetype_weights"]
    assert weights.index.equals(spots.obs_names)
    expected = model.get_archetype_weights().loc[spots.obs_names]
    np.testing.assert_allclose(weights.to_numpy(), expected.to_numpy(), atol=1e-6)
    assert "archetype_dominant" in spots.obs and "archetypes" in spots.uns


def test_spots_named_by_numbers_loaded_in_another_order_are_told_to_name_them_by_text(tmp_path):
    """Integer spot names (a table's index) loaded in another order failed inside anndata
    ("Don't call _normalize_index with non-categorical/string names"); the refusal says how
    to name them, and the model loads once they are named so."""
    mix = dv.datasets.convex_mixtures(n_spots=40, n_genes=30, n_archetypes=2, n_markers=5)
    spots = mix[::-1].copy()  # anndata reorders no AnnData named by numbers
    mix.obs.index, spots.obs.index = pd.Index(np.arange(40)), pd.Index(np.arange(40)[::-1])
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=2, min_spots=1, n_hidden=8)
    model.save(tmp_path / "a")
    with pytest.raises(ValueError, match=r"obs_names are numbers .*astype\(str\)"):
        dv.model.Archetypes.load(tmp_path / "a", spots)
    spots.obs_names = spots.obs_names.astype(str)  # as the refusal says
    with pytest.warns(UserWarning, match="in another order"):
        dv.model.Archetypes.load(tmp_path / "a", spots)


def test_write_to_adata_checks_its_arguments_before_reading_the_spots(fitted):
    """A bad n_anchors or key_added was refused only after a pass over every spot (a million
    spots from disk) had encoded them."""
    model, mix = fitted
    clone = copy.deepcopy(model)  # nothing computed for it yet
    clone.signature_map_ = None

    def encode(*args, **kwargs):
        raise AssertionError("the spots were read before the arguments were checked")

    clone._encode = encode
    with pytest.raises(ValueError, match="n_anchors must be a positive integer"):
        clone.write_to_adata(mix.copy(), n_anchors=0)
    with pytest.raises(ValueError, match="key_added"):
        clone.write_to_adata(mix.copy(), key_added="a/b")


def test_weights_of_some_new_spots_encode_only_those(fitted, monkeypatch):
    """get_archetype_weights(new, indices=[...]) encoded every new spot, then kept the few
    asked for: 3 of 2,000 spots cost a pass over all 2,000."""
    model, mix = fitted
    new = mix[::-1].copy()
    new.obs_names = [f"new_{i}" for i in range(new.n_obs)]
    full = model.get_archetype_weights(new)
    encoded, inference = [], model.module.inference
    monkeypatch.setattr(
        model.module, "inference", lambda **kw: encoded.append(kw) or inference(**kw)
    )
    part = model.get_archetype_weights(new, indices=[250, 3, -1])
    assert sum(len(next(iter(kw.values()))) for kw in encoded) == 3
    pd.testing.assert_frame_equal(part, full.iloc[[250, 3, -1]])


def test_weights_sum_to_one_in_float64(fitted):
    """The rows summed to 1 within the encoder's float32 (1.00000003), not as the proportions
    of NMFDeconv and SpatialImputer, which sum to 1 in float64."""
    model, mix = fitted
    for weights in (model.get_archetype_weights(), model.get_archetype_weights(mix[::-1].copy())):
        assert np.abs(weights.sum(axis=1) - 1).max() < 1e-12


def test_merge_settings_set_after_training_are_checked_and_saved(fitted, tmp_path):
    """merge_threshold and min_spots set after training (the archetypes merge again) were lost
    at save/load: the loaded model merged with the constructor's values, other archetypes, and
    its signature map was dropped as 'changed'. They were not checked when set either."""
    model, mix = fitted
    clone = copy.deepcopy(model)
    clone.signature_map_ = None
    with torch.no_grad():  # archetype 1 a duplicate of archetype 0: merged at 0.9
        clone.module.B_logits[1] = clone.module.B_logits[0]
    raw = clone.n_archetypes_raw_
    with pytest.warns(UserWarning, match=ALIKE):
        assert len(clone.archetype_names()) == raw - 1
    assert ", merge threshold 0.9\nTraining status: Trained" in clone.summary_string
    clone.merge_threshold, clone.min_spots = 1.0, 1  # keep every raw archetype
    assert len(clone.archetype_names()) == raw
    # print(model) shows the threshold it merges with now (it showed the constructor's 0.9).
    assert ", merge threshold 1\nTraining status: Trained" in clone.summary_string
    clone.save(tmp_path / "a")
    loaded = dv.model.Archetypes.load(tmp_path / "a", mix)
    assert (loaded.merge_threshold, loaded.min_spots) == (1.0, 1)
    assert loaded.archetype_names() == clone.archetype_names()
    assert loaded.summary_string == clone.summary_string
    adata = mix.copy()
    loaded.write_to_adata(adata)
    assert (adata.uns["archetypes"]["merge_threshold"], adata.uns["archetypes"]["min_spots"]) == (
        1.0,
        1,
    )
    for value in (1.5, 0, float("nan"), "0.9"):
        with pytest.raises(ValueError, match=r"merge_threshold must lie in \(0, 1\]"):
            loaded.merge_threshold = value
    for value in (0, 2.5, True):
        with pytest.raises(ValueError, match="min_spots must be a positive integer"):
            loaded.min_spots = value
    assert (loaded.merge_threshold, loaded.min_spots) == (1.0, 1)


def test_signature_names_that_are_one_name_as_text_are_refused(fitted):
    """{1: [...], "1": [...]}: the results name signatures by str, and the second silently
    replaced the first (one signature matched, no word of the other)."""
    model, _ = fitted
    genes = list(model.get_archetype_profiles().index)
    before = model.signature_map_
    signatures = {1: genes[:5], "1": genes[5:10], "x": genes[10:15], 2.0: genes[:3]}
    signatures["2.0"] = genes[3:6]
    with pytest.raises(ValueError, match=r"same as text: 1 and '1'; 2.0 and '2.0'\. .*rename"):
        model.match_signatures(signatures)
    assert model.signature_map_ is before  # nothing kept


def test_a_signature_left_without_an_archetype_is_said(fitted, tmp_path):
    """More signatures than archetypes, or two for one state: the one left out was in no
    row of the table (one per archetype), without a word."""
    model, mix = fitted
    profiles = model.get_archetype_profiles()
    signatures = {f"s{k}": list(profiles.iloc[:, k].nlargest(8).index) for k in range(2)}
    signatures["s0_again"] = signatures["s0"][:3] + signatures["s1"][:3]  # scores below both
    message = r"1 of 3 signatures matched no archetype: 's0_again' \(best A[01]: .*to 's[01]' at"
    with pytest.warns(UserWarning, match=message):
        table = model.match_signatures(signatures)
    assert table.attrs["unmatched_signatures"] == ["s0_again"]
    assert set(table["signature"].dropna()) == {"s0", "s1"}
    adata = mix.copy()
    model.write_to_adata(adata)
    assert list(adata.uns["archetypes"]["unmatched_signatures"]) == ["s0_again"]
    adata.write_h5ad(tmp_path / "a.h5ad")  # the list is written as h5ad takes it
    del signatures["s0_again"]
    assert model.match_signatures(signatures).attrs["unmatched_signatures"] == []


def test_a_signature_matched_no_better_than_random_genes_is_said(fitted, tmp_path):
    """A signature of genes that mark no archetype (a state the data lack) took its best
    archetype, at a score of about 0, reported "matched" without a word."""
    model, mix = fitted
    profiles = model.get_archetype_profiles()
    log = np.log1p(profiles * 1e4)
    z = log.sub(log.mean(1), axis=0).div(log.std(1, ddof=0), axis=0)
    # Two markers of every archetype: a signature no archetype stands out in.
    flat = [g for c in z.columns for g in z[c].nlargest(2).index]
    top = list(z["A0"].nlargest(6).index)
    message = r"1 of 1 signatures matched an archetype no more than random genes .*'flat' \(A"
    with pytest.warns(UserWarning, match=message):
        table = model.match_signatures({"flat": flat})
    row = table[table["signature"] == "flat"]
    assert (row["status"] == "matched").any() and row["score"].abs().max() < 0.2
    assert table.attrs["weak_matches"] == ["flat"]
    adata = mix.copy()
    model.write_to_adata(adata)
    assert list(adata.uns["archetypes"]["weak_matches"]) == ["flat"]
    adata.write_h5ad(tmp_path / "a.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # a marker signature: nothing said
        assert model.match_signatures({"A0s": top}).attrs["weak_matches"] == []


def test_an_unmatched_signature_is_told_the_gene_that_pulls_it_down(fitted):
    """A signature of A0's top marker and of the gene lowest in A0 (an anti-marker, higher in
    the other archetypes) scores about 0 in A0 and best in another archetype, whose own
    signature takes it: the warning named that best archetype only, not the gene without
    which the signature is A0's."""
    model, _ = fitted
    profiles = model.get_archetype_profiles()
    log = np.log1p(profiles * 1e4)
    z = log.sub(log.mean(1), axis=0).div(log.std(1, ddof=0), axis=0)
    marker, anti = z["A0"].idxmax(), z["A0"].idxmin()
    signatures = {c: list(profiles[c].nlargest(8).index) for c in profiles.columns}
    signatures["GC"] = [marker, anti]
    without = f"without {anti} ({z.loc[anti, 'A0']:.2f} in A0), its best is A0 at "
    message = rf"'GC' \(best A[1-9]: .*; {re.escape(without)}{z.loc[marker, 'A0']:.2f}\)"
    with pytest.warns(UserWarning, match=message):
        table = model.match_signatures(signatures)
    assert table.attrs["unmatched_signatures"] == ["GC"]
    from deltavae.model._archetype_signatures import pulled_down

    # Nothing to add for one gene, nor where no gene lies below 0 where it would score best.
    assert pulled_down(z.loc[[anti]].to_numpy(), [anti], list(z.columns)) == ""
    both = z.loc[[marker, marker]].to_numpy()
    assert pulled_down(both, ["a", "b"], list(z.columns)) == ""


def test_a_refused_match_keeps_the_old_map_marked_as_stale(fitted):
    """match_signatures(variant_ratio=2) after the archetypes changed: refused, but it had
    already taken today's profiles as the map's, so the old map was written as current."""
    model, mix = fitted
    clone = copy.deepcopy(model)
    profiles = clone.get_archetype_profiles()
    clone.match_signatures({f"s{k}": list(profiles.iloc[:, k].nlargest(8).index) for k in (0, 1)})
    with torch.no_grad():
        clone.module.B_logits[2] = clone.module.B_logits[3]
    with pytest.warns(UserWarning, match=r"raw archetypes \(2, 3\) point the same way"):
        with pytest.raises(ValueError, match=r"variant_ratio must lie in \(0, 1\]"):
            clone.match_signatures({"s0": list(profiles.index[:5])}, variant_ratio=2)
    adata = mix.copy()
    with pytest.warns(UserWarning, match="changed after match_signatures"):
        clone.write_to_adata(adata)
    assert "signature_map" not in adata.uns["archetypes"]


def test_a_signature_of_most_genes_and_a_weak_variant_are_marked(fitted):
    """A signature of every gene (or nearly every) was reported matched without a word: random
    sets of as many genes are the same genes, so its score never fell below theirs; and
    variant rows were never judged, one under random genes kept as a variant unmarked."""
    from deltavae.model._archetype_signatures import weak_matches

    model, _ = fitted
    genes = list(model.get_archetype_profiles().index)
    for name, chosen in (("every", genes), ("most", genes[: int(0.7 * len(genes))])):
        with pytest.warns(UserWarning, match=rf"'{name}' \(A\d: {len(chosen)} of the model's"):
            table = model.match_signatures({name: chosen})
        assert table.attrs["weak_matches"] == [name]
        assert table.loc[table["signature"] == name, "weak"].all()
    # A variant (variant_ratio=0.2) under random genes (their median best: 0.35), its match
    # well above them.
    z = np.array([[1.4, 0.1, -0.7, -0.8], [-0.7, 1.4, -0.6, -0.1], [-0.7, -0.7, 1.3, 0.1]] * 4)
    table = pd.DataFrame(
        {"signature": ["a", "a", np.nan], "score": [1.4, 0.3, 0.0]},
        index=["A0", "A1", "A2"],
    ).assign(status=["matched", "variant", "novel"])
    with pytest.warns(UserWarning, match=r"'a' \(A1, a variant: 0.30, random sets of 2 genes 0.35"):
        assert weak_matches(table, z, {"a": np.array([0, 3])}) == ["a"]
    assert table["weak"].tolist() == [False, True, False]


def test_too_few_spots_for_validation_are_told_in_the_users_terms():
    """Archetypes of 5 spots, trained with no train_size given, was refused with 'With 5
    spots and train_size=0.9, no spot is left ...': a value the user never passed (and
    Archetypes.train does not name). It now says train() holds 10% of the spots out by
    default for the validation ELBO, that 5 spots leave none, that 10 are needed, and the
    argument that trains on every spot, which runs."""
    mix = dv.datasets.convex_mixtures(n_spots=5, n_genes=30, n_archetypes=2, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=2, n_hidden=8)
    told = (
        r"^Training holds 10% of the spots out to compute the validation ELBO \(the default "
        r"train_size=0\.9\): of 5 spots that is none; it takes at least 10 spots\. Pass "
        r"train_size=1\.0 to train on every spot without validation, or use more spots\.$"
    )
    with pytest.raises(ValueError, match=told):
        model.train(max_epochs=1, **TRAIN)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # 5 spots: small-data advice
        model.train(max_epochs=1, train_size=1.0, **TRAIN)
    assert model.is_trained
