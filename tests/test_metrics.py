"""Tests for deltavae.metrics clustering scores, on hand-computed cases."""

from __future__ import annotations

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import deltavae as dv
from deltavae.metrics import ari, cluster_scores, clustering_accuracy, nmi, purity


def test_permuted_labels_score_perfectly():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=200)
    permutation = np.array([2, 0, 3, 1])
    predicted = permutation[truth]
    scores = cluster_scores(truth, predicted)
    assert scores == {"ari": 1.0, "nmi": 1.0, "accuracy": 1.0, "purity": 1.0}


def test_known_contingency_accuracy_and_purity():
    # contingency (classes x clusters):
    #        p0 p1 p2
    #   a     4  1  0
    #   b     3  0  2
    # Hungarian picks a->p0 (4) and b->p2 (2): accuracy 6/10. Purity takes column maxima: 4+1+2.
    truth = ["a"] * 5 + ["b"] * 5
    predicted = ["p0"] * 4 + ["p1"] + ["p0"] * 3 + ["p2"] * 2
    assert clustering_accuracy(truth, predicted) == pytest.approx(0.6)
    assert purity(truth, predicted) == pytest.approx(0.7)


def test_more_predicted_clusters_than_classes():
    truth = [0, 0, 0, 0, 1, 1, 1, 1]
    predicted = [0, 0, 1, 1, 2, 2, 3, 3]
    # Only two clusters can be matched; the other two clusters' cells are errors.
    assert clustering_accuracy(truth, predicted) == pytest.approx(0.5)
    assert purity(truth, predicted) == 1.0


def test_fewer_predicted_clusters_than_classes():
    truth = ["x", "x", "y", "y", "z", "z"]
    predicted = [0, 0, 0, 0, 1, 1]
    assert clustering_accuracy(truth, predicted) == pytest.approx(4 / 6)
    assert purity(truth, predicted) == pytest.approx(4 / 6)


def test_per_cell_ids_as_labels_are_scored_without_a_dense_n_by_n_table():
    """The contingency table was dense, classes x clusters: per-cell ids against clusters of
    3,000 cells took 72 MB (n x n; 100,000 cells ran out of memory). Sparse now, and matched
    in the blocks of classes and clusters that share cells."""
    import tracemalloc

    rng = np.random.default_rng(0)
    ids, clusters = np.arange(3000), rng.integers(0, 3000, 3000)
    tracemalloc.start()
    scores = cluster_scores(ids, clusters)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6
    n_clusters = len(np.unique(clusters))  # each cluster matched to (holds) one cell's id
    assert scores["accuracy"] == scores["purity"] == pytest.approx(n_clusters / 3000)
    assert purity(clusters, ids) == 1.0  # each cell its own cluster


def test_hungarian_accuracy_in_blocks_equals_the_dense_matching(monkeypatch):
    """Matched block by block (a table above _DENSE_ENTRIES), the accuracy is the dense
    table's: three groups of classes and clusters that share no cell; a block above
    _BLOCK_ENTRIES is refused, naming its size."""
    from deltavae.metrics import _clustering

    rng = np.random.default_rng(1)
    group = rng.integers(0, 3, 400)
    true = group * 10 + rng.integers(0, 4 + group, 400)  # 4, 5, 6 classes in groups 0, 1, 2
    pred = group * 10 + rng.integers(0, 6 - group, 400)  # 6, 5, 4 clusters
    true[:5], pred[:5] = 99, 77  # a block of one class and one cluster
    dense = cluster_scores(true, pred)
    monkeypatch.setattr(_clustering, "_DENSE_ENTRIES", 40)
    assert cluster_scores(true, pred) == dense
    assert clustering_accuracy(true, pred) == dense["accuracy"]
    monkeypatch.setattr(_clustering, "_BLOCK_ENTRIES", 24)
    with pytest.raises(ValueError, match=r"dense table of 5 x 5 \(classes and clusters linked"):
        clustering_accuracy(true, pred)
    assert purity(true, pred) == dense["purity"]  # purity needs no matching


def test_accepts_series_categoricals_and_strings():
    truth = pd.Series(pd.Categorical(["B", "B", "T", "T", "NK"], categories=["NK", "T", "B", "DC"]))
    predicted = pd.Series(["c1", "c1", "c0", "c0", "c2"], index=[10, 11, 12, 13, 14])
    assert cluster_scores(truth, predicted) == {
        "ari": 1.0,
        "nmi": 1.0,
        "accuracy": 1.0,
        "purity": 1.0,
    }


def test_ari_nmi_match_known_values():
    truth = [0, 0, 0, 1, 1, 1]
    predicted = [0, 0, 1, 1, 2, 2]
    # By hand: sum C(n_ij, 2) = 2, expected 6 * 3 / 15 = 1.2, max 4.5 -> ARI 0.8 / 3.3.
    assert ari(truth, predicted) == pytest.approx(0.8 / 3.3)
    # MI = (2/3) log 2; arithmetic mean of entropies (log 2 + log 3) / 2.
    expected_nmi = (2 / 3) * np.log(2) / ((np.log(2) + np.log(3)) / 2)
    assert nmi(truth, predicted) == pytest.approx(expected_nmi)
    assert nmi(truth, predicted, average_method="max") < nmi(truth, predicted)


def test_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match="length 3.*length 2"):
        clustering_accuracy([0, 1, 1], [0, 1])


@pytest.mark.parametrize("bad", [[0, np.nan, 1], pd.Series(["a", None, "b"])])
def test_missing_labels_rejected(bad):
    with pytest.raises(ValueError, match="missing"):
        cluster_scores(bad, [0, 1, 1])
    with pytest.raises(ValueError, match="labels_pred"):
        purity([0, 1, 1], bad)


def test_missing_labels_written_as_text_are_warned_about():
    """A column with NaN passed through .astype(str) holds the text 'nan': NaN labels are
    refused, but the same cells as 'nan' were scored as one more class without a word (a
    lower ARI here than the labelled cells' 1.0)."""
    from sklearn.metrics import adjusted_rand_score

    truth = pd.Series(["B", "B", np.nan, "T", "T", None]).astype(str)
    pred = [0, 0, 1, 1, 1, 0]
    with pytest.warns(UserWarning, match=r"labels_true holds 2 labels 'None', 'nan'.*astype"):
        scores = cluster_scores(truth, pred)
    # Still scored as given (the label may be a name): the warning says how to leave them out.
    assert scores["ari"] == pytest.approx(adjusted_rand_score(truth, pred), abs=1e-12)
    assert scores["ari"] < ari(truth[:5].drop(2), pred[:2] + pred[3:5])
    with pytest.warns(UserWarning, match=r"labels_pred holds 1 label '<NA>'"):
        ari([0, 1, 1], pd.Series(pd.array([1, pd.NA, 2])).astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ari(["nano", "NA cell", "B"], [0, 1, 1])  # names that only contain the text


def test_empty_and_two_dimensional_rejected():
    with pytest.raises(ValueError, match="empty"):
        ari([], [])
    with pytest.raises(ValueError, match=r"1-D.*\(2, 2\)"):
        nmi(np.zeros((2, 2)), [0, 1])


def test_log_normalize_scales_rows_and_names_a_wrong_input():
    counts = np.array([[1.0, 3.0], [0.0, 2.0]])
    np.testing.assert_allclose(
        dv.metrics.log_normalize(counts, target_sum=4.0), np.log1p([[1.0, 3.0], [0.0, 4.0]])
    )
    # An AnnData gave numpy's "setting an array element with a sequence".
    with pytest.raises(TypeError, match="not an AnnData: pass adata.X"):
        dv.metrics.log_normalize(ad.AnnData(counts))
    with pytest.raises(ValueError, match="one value per cell"):
        dv.metrics.log_normalize(counts, library_size=[1.0, 2.0, 3.0])


def test_log_normalize_holds_one_copy_of_sparse_counts_and_leaves_its_input_alone():
    """Sparse counts were made dense float32, then float64, and two more float64 arrays of
    every cell and gene were made on the way to the result: 3.5 times the result at the peak.
    The values are the same, and the caller's array is not normalized in place."""
    import tracemalloc

    from scipy import sparse

    rng = np.random.default_rng(0)
    counts = sparse.random(3000, 400, density=0.05, format="csr", random_state=0, dtype=np.float32)
    counts.data = rng.integers(1, 20, counts.nnz).astype(np.float32)
    dense = counts.toarray().astype(np.float64)
    expected = np.log1p(dense / np.maximum(dense.sum(1), 1e-12)[:, None] * 1e4)
    tracemalloc.start()
    try:
        logged = dv.metrics.log_normalize(counts)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.5 * expected.nbytes
    np.testing.assert_array_equal(logged, expected)
    given = dense.copy()
    np.testing.assert_array_equal(dv.metrics.log_normalize(given), expected)
    np.testing.assert_array_equal(given, dense)
    frame = pd.DataFrame(dense[:5])
    np.testing.assert_array_equal(dv.metrics.log_normalize(frame), expected[:5])
    np.testing.assert_array_equal(frame.to_numpy(), dense[:5])


def test_matched_profile_correlation_refuses_what_it_would_score_silently_wrong():
    rng = np.random.default_rng(0)
    true = rng.gamma(1.0, size=(3, 20))
    pred = true + rng.normal(0, 0.1, size=true.shape)
    genes = [f"g{i}" for i in range(20)]
    expected = dv.metrics.matched_profile_correlation(true, pred)
    assert expected["correlation"].min() > 0.9
    # DataFrames are matched by gene name (reversed columns scored about 0.1 by position).
    frames = pd.DataFrame(true, columns=genes), pd.DataFrame(pred, columns=genes).iloc[:, ::-1]
    pd.testing.assert_frame_equal(dv.metrics.matched_profile_correlation(*frames), expected)
    with pytest.raises(ValueError, match="same genes"):
        dv.metrics.matched_profile_correlation(frames[0], frames[1].rename(columns={"g0": "x"}))
    bad = pred.copy()
    bad[0, 3] = np.nan  # its pair scored 0.0 without a word
    with pytest.raises(ValueError, match="pred_profiles contains NaN"):
        dv.metrics.matched_profile_correlation(true, bad)
    with pytest.raises(ValueError, match="at least 3 genes"):
        dv.metrics.matched_profile_correlation(true[:, :2], pred[:, :2])
    # Genes x archetypes, as get_archetype_profiles() returns them: a perfect prediction
    # scored -0.1 (genes matched to genes).
    with pytest.raises(ValueError, match=r"20 rows and 3 columns.*pass true_profiles.T"):
        dv.metrics.matched_profile_correlation(true.T, true.T)
    two = pd.DataFrame(true[:2].T, index=genes, columns=["A0", "A1"])  # two archetypes
    with pytest.raises(ValueError, match=r"20 rows and 2 columns.*pass pred_profiles.T"):
        dv.metrics.matched_profile_correlation(two.T, two)
    repeated = frames[0].rename(columns={"g1": "g0"})
    with pytest.raises(ValueError, match=r"true_profiles repeats genes \(e.g. \['g0'\]\)"):
        dv.metrics.matched_profile_correlation(repeated, frames[1])


def test_more_archetypes_than_genes_are_scored_where_the_shapes_leave_no_doubt():
    """5 archetypes over 4 marker genes were refused as "more rows than genes" (a guard for
    genes x archetypes tables): they are scored where the other table, or DataFrames' gene
    columns, say the rows are archetypes; one shape of two arrays is refused as ambiguous."""
    from scipy.optimize import linear_sum_assignment

    rng = np.random.default_rng(0)
    true = rng.gamma(1.0, size=(5, 4))
    pred = true[[3, 1, 4]] + rng.normal(0, 0.05, size=(3, 4))
    corr = np.corrcoef(true, pred)[:5, 5:]
    rows, cols = linear_sum_assignment(corr, maximize=True)
    table = dv.metrics.matched_profile_correlation(true, pred)  # 5 and 3 archetypes x 4 genes
    assert table["matched"].tolist() == [-1, 1, -1, 0, 2]
    np.testing.assert_allclose(table["correlation"].to_numpy()[rows], corr[rows, cols])
    genes = ["CD3E", "MS4A1", "LYZ", "NKG7"]
    same = true[[4, 0, 1, 2, 3]] + rng.normal(0, 0.05, size=(5, 4))
    frames = pd.DataFrame(true, columns=genes), pd.DataFrame(same, columns=genes)
    assert dv.metrics.matched_profile_correlation(*frames)["matched"].tolist() == [1, 2, 3, 4, 0]
    with pytest.raises(
        ValueError, match=r"both have 5 rows and 4 columns and are arrays.*could be genes"
    ):
        dv.metrics.matched_profile_correlation(true, same)
    # Genes x archetypes of both (two models' get_archetype_profiles()): rows named alike.
    cells = [f"g{i}" for i in range(20)]
    tall = pd.DataFrame(rng.gamma(1.0, size=(20, 3)), index=cells, columns=["A0", "A1", "A2"])
    with pytest.raises(ValueError, match=r"name their rows alike \(e.g. \['g0', 'g1', 'g2'\]"):
        dv.metrics.matched_profile_correlation(tall, tall * 2)
    with pytest.raises(ValueError, match=r"pred_profiles has 20 rows and 3 columns.*pred_profi"):
        dv.metrics.matched_profile_correlation(tall.T.iloc[:2], tall)  # rows named as genes


def test_matched_profile_correlation_names_constant_profiles_it_counts_as_0():
    """A found profile constant over the genes (a collapsed archetype) correlates with
    nothing: it was matched with correlation 0 without a word, as a missing one."""
    rng = np.random.default_rng(0)
    true = rng.gamma(1.0, size=(3, 20))
    pred = true + rng.normal(0, 0.1, size=true.shape)
    pred[1] = 0.4
    with pytest.warns(UserWarning, match=r"pred_profiles holds 1 profile constant over the "):
        table = dv.metrics.matched_profile_correlation(true, pred)
    assert table["correlation"].tolist()[1] == 0.0 and table["correlation"].min() == 0.0
    assert table["correlation"].drop(1).min() > 0.9  # the others matched as before
    flat_true = true.copy()
    flat_true[[0, 2]] = 1.0
    with pytest.warns(UserWarning, match=r"true_profiles holds 2 profiles constant.*\[0, 2\]"):
        dv.metrics.matched_profile_correlation(flat_true, true)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.metrics.matched_profile_correlation(true, true[::-1])


def test_proportion_tables_in_another_layout_or_sign_are_named():
    rng = np.random.default_rng(1)
    true = pd.DataFrame(rng.dirichlet([1, 1, 1], size=30), columns=["A", "B", "C"])
    with pytest.raises(ValueError, match=r"pred has shape \(30, 2\) but true has \(30, 3\)"):
        dv.metrics.rmse(true, true.to_numpy()[:, :2])
    with pytest.raises(ValueError, match=r"true has shape \(4, 3\) but pred has \(30, 3\)"):
        dv.metrics.rmse(np.ones((4, 3)), true)  # an array true is read in pred's layout
    with warnings.catch_warnings(record=True) as caught:  # aligned once, warned once
        warnings.simplefilter("always")
        twice = pd.concat([true.iloc[:2], true.iloc[:2]])
        dv.metrics.ssim(twice, twice)
    assert len(caught) == 1 and "repeat spot names" in str(caught[0].message)
    with pytest.raises(ValueError, match="true is empty"):
        dv.metrics.deconvolution_scores(true.iloc[:0], true.iloc[:0])
    # An array true is read in a DataFrame pred's layout (it was "pred lacks the cell types [0]").
    scores = dv.metrics.per_type_pcc(true.to_numpy(), true)
    assert list(scores.index) == ["A", "B", "C"] and np.allclose(scores, 1.0)
    # SSIM scales by each column's maximum: negative values are said (a negated
    # prediction scored 0.75), once in deconvolution_scores.
    with pytest.warns(UserWarning, match="SSIM, which scales each column by its maximum"):
        dv.metrics.ssim(true, -true)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dv.metrics.deconvolution_scores(true, true - 0.5)
    assert len(caught) == 1 and "JS distance" in str(caught[0].message)
    assert "SSIM" in str(caught[0].message)


def test_two_series_of_the_same_cells_pair_them_by_name():
    cells = ["c1", "c2", "c3", "c4", "c5"]
    true = pd.Series(["x", "x", "y", "y", "y"], index=cells)
    pred = pd.Series([5, 5, 7, 7, 7], index=cells).iloc[::-1]
    assert ari(true, pred) == 1.0  # paired by position, the reversed order scored 0.17
    assert nmi(true, pred) == pytest.approx(1.0) and clustering_accuracy(true, pred) == 1.0
    assert ari(true, pred.to_numpy()) < 0.2  # an array pairs by position
    other = pred.rename(index={"c1": "c9"})  # partly other cells: by position, said so
    with pytest.warns(UserWarning, match=r"partly different cells \(4 names shared\)"):
        assert ari(true, other) == ari(true, pred.to_numpy())
    unnamed = pd.Series(pred.to_numpy())  # a RangeIndex shares no name: by position, quietly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ari(true, unnamed) == ari(true, pred.to_numpy())


def test_a_series_made_from_an_array_is_not_called_partly_different_cells():
    """Labels of a table's rows (df.loc[mask, col], index 0, 2, 5, ...) against
    pd.Series(pred) of those rows (index 0, 1, 2, ...) were warned about as 'partly
    different cells': the new Series names no cells. Two subsets' labels still are."""
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"type": rng.choice(list("abc"), 40)})
    mask = rng.random(40) < 0.5
    truth = table.loc[mask, "type"]
    pred = pd.Series(truth.map({"a": 2, "b": 0, "c": 1}).to_numpy())  # model output, in order
    assert 0 < truth.index.intersection(pred.index).size < len(pred)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cluster_scores(truth, pred)["accuracy"] == 1.0
    other = table.loc[np.roll(mask, 1), "type"]  # another subset of the same length
    with pytest.warns(UserWarning, match="partly different cells"):
        ari(truth, other)


def test_mean_expression_r2_names_genes_that_do_not_fit():
    """A mask of the wrong length or a position past the end: numpy's bare IndexError."""
    rng = np.random.default_rng(0)
    pred, obs = rng.gamma(2.0, size=(20, 30)), rng.gamma(2.0, size=(20, 30))
    with pytest.raises(ValueError, match="genes is a mask of 29 values for 30 genes"):
        dv.metrics.mean_expression_r2(pred, obs, genes=np.ones(29, dtype=bool))
    with pytest.raises(IndexError, match="positions outside the 30 genes"):
        dv.metrics.mean_expression_r2(pred, obs, genes=[0, 1, 2, 30])
    assert 0 <= dv.metrics.mean_expression_r2(pred, obs, genes=[0, 1, 2, -1]) <= 1


def test_a_wide_pred_table_is_not_listed_whole():
    """pred of other columns (a genes table) was listed whole in the KeyError."""
    true = pd.DataFrame(np.full((4, 2), 0.5), columns=["T1", "T2"])
    pred = pd.DataFrame(np.ones((4, 3000)), columns=[f"G{i}" for i in range(3000)])
    with pytest.raises(KeyError, match=r"lacks the cell types \['T1', 'T2'\]") as err:
        dv.metrics.deconvolution_scores(true, pred)
    assert "(3000 columns)" in str(err.value) and len(str(err.value)) < 500


def test_a_gene_mask_of_other_genes_names_them_as_plain_strings():
    """The genes a boolean Series left out were shown as [np.str_('d')]."""
    data = pd.DataFrame(np.ones((3, 4)), columns=list("abcd"))
    mask = pd.Series([True, False, True, False], index=list("abcz"))
    with pytest.raises(ValueError, match=r"1 missing, e.g. \['d'\]\)"):
        dv.metrics.mean_expression_r2(data, data, genes=mask)


def test_mean_expression_r2_says_when_the_two_sides_are_on_different_scales():
    """translate's X (expected counts) scored against log-normalized cells gave an R² with
    no sign that the two were on different scales."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(2.0, 100.0, size=50), size=(100, 50)).astype(float)
    logged = dv.metrics.log_normalize(counts)
    with pytest.warns(UserWarning, match=r"look like different scales .*log_normalize"):
        dv.metrics.mean_expression_r2(counts, logged)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one scale: no note
        dv.metrics.mean_expression_r2(logged[:50], logged[50:])
        dv.metrics.mean_expression_r2(counts[:50] * 2, counts[50:])
        # Changes from control, as the docstring suggests scoring them: a change predicted
        # in the right direction but 30 times too small was "counts against log-normalized".
        change = logged[50:].mean(0) - logged[:50].mean(0) + rng.normal(0, 1, 50)
        assert dv.metrics.mean_expression_r2(change[None] / 30, change[None]) > 0.99


def test_mean_expression_r2_says_when_counts_meet_log_normalized_values_of_close_means():
    """nearest_response's X (log-normalized, largest gene mean 6.4) scored against the
    observed raw counts of Kang (largest gene mean 105: a ratio under the gene means' rule)
    gave R² 0.37 with no word that the two were on different scales."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(0.5, 10.0, size=300), size=(200, 300)).astype(float)
    logged = dv.metrics.log_normalize(counts)
    assert counts.mean(0).max() / logged.mean(0).max() < 20  # the gene means cannot tell
    for pred, obs in ((logged[:100], counts[100:]), (sparse.csr_matrix(counts[:100]), logged)):
        with pytest.warns(UserWarning, match=r"whole counts .* not whole .*log_normalize"):
            dv.metrics.mean_expression_r2(pred, obs)
    ctrl = ad.AnnData(logged[:100])
    with pytest.warns(UserWarning, match=r"observed holds whole counts .* control values"):
        dv.metrics.mean_expression_r2(counts[:100], counts[100:], control=ctrl)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one scale: no note
        expected = counts[:100] * 1.01 + 0.5  # translate's X: expected counts, not whole
        dv.metrics.mean_expression_r2(expected, counts[100:])
        dv.metrics.mean_expression_r2(logged[:100], logged[100:])


def test_perturbation_metrics_name_nan_and_repeated_genes():
    """One NaN made log_normalize return a whole NaN row silently and mean_expression_r2 say
    'must hold finite values for at least one gene'; a repeated gene was dropped by name and
    counted twice by position."""
    rng = np.random.default_rng(0)
    counts = rng.poisson(5.0, size=(20, 6)).astype(float)
    gapped = counts.copy()
    gapped[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"counts contains 1 NaN or infinite values"):
        dv.metrics.log_normalize(gapped)
    logged = dv.metrics.log_normalize(counts)
    frame = pd.DataFrame(logged, columns=[f"G{i}" for i in range(6)])
    broken = frame.copy()
    broken.iloc[0, 2] = np.nan
    with pytest.raises(ValueError, match=r"predicted contains NaN .*1 genes, e\.g\. \['G2'\]"):
        dv.metrics.mean_expression_r2(broken, frame)
    for repeated in (["G0", "G0", "G1", "G2"], [0, 0, 1, 2]):
        with pytest.raises(ValueError, match=r"genes repeats \[.*0.*\]; give each gene once"):
            dv.metrics.mean_expression_r2(frame, frame, genes=repeated)
    assert dv.metrics.mean_expression_r2(frame, frame, genes=["G0", "G1", "G2"]) == pytest.approx(1)


def test_mean_expression_r2_says_a_side_holds_no_cells():
    """A selection of no cells (a misspelled cell type) was reported as NaN values, with a
    RuntimeWarning, or as a ZeroDivisionError when sparse."""
    from scipy import sparse

    adata = ad.AnnData(np.arange(1.0, 13.0).reshape(3, 4))
    none = adata[adata.obs_names == "no such cell"]
    for empty in (none, np.zeros((0, 4)), sparse.csr_matrix((0, 4))):
        with pytest.raises(ValueError, match=r"observed holds no cells \(shape \(0, 4\)\)"):
            dv.metrics.mean_expression_r2(adata, empty)


def test_mean_expression_r2_matches_a_boolean_series_of_genes_by_name():
    """A column of a DE table (indexed by gene, sorted by score) selected other genes by
    position, silently."""
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(10)]
    observed = pd.DataFrame(rng.random((30, 10)), columns=genes)
    predicted = pd.DataFrame(rng.random((30, 10)), columns=genes)
    score = pd.Series(rng.random(10), index=genes).sort_values(ascending=False)
    chosen = score > 0.5
    by_name = dv.metrics.mean_expression_r2(predicted, observed, genes=chosen.index[chosen])
    assert dv.metrics.mean_expression_r2(predicted, observed, genes=chosen) == by_name
    with pytest.raises(ValueError, match=r"does not list each gene once \(1 missing"):
        dv.metrics.mean_expression_r2(predicted, observed, genes=chosen.iloc[1:])


def test_columns_of_one_anndata_with_repeated_cell_names_are_not_called_different_cells():
    """Two obs columns of one AnnData whose obs_names repeat (concatenated samples with the
    same barcodes) were warned about as 'partly different cells'."""
    index = ["AAAC-1", "AAAG-1", "AAAC-1", "AAAG-1"]
    truth = pd.Series(["B", "B", "T", "T"], index=index)
    clusters = pd.Series([1, 1, 0, 0], index=index)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ari(truth, clusters) == 1.0
    # The same repeated names in another order cannot be paired by name: not "partly
    # different cells (2 names shared)", as was said.
    with pytest.warns(UserWarning, match=r"same cell names in another order, but the names rep"):
        assert ari(truth, clusters.iloc[[1, 0, 3, 2]]) == 1.0


def test_tables_with_repeated_gene_names_are_named_as_such():
    """Repeated columns (var_names not unique) were called "columns that are not numbers"."""
    true = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=["a", "b", "c"])
    pred = pd.DataFrame(np.ones((4, 4)), columns=["a", "a", "b", "c"])
    for score in (dv.metrics.imputation_scores, dv.metrics.deconvolution_scores):
        with pytest.raises(ValueError, match=r"pred repeats column names \(e.g. \['a'\]\)"):
            score(true, pred)
    with pytest.raises(ValueError, match="true repeats column names"):
        dv.metrics.per_type_pcc(pred, pred)


def test_mean_expression_r2_refuses_a_boolean_series_that_names_no_genes():
    """sc.get.rank_genes_groups_df's column (0, 1, ... over genes sorted by score) selected
    other genes by position, silently."""
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(10)]
    observed = pd.DataFrame(rng.random((30, 10)), columns=genes)
    predicted = pd.DataFrame(rng.random((30, 10)), columns=genes)
    table = pd.DataFrame({"names": genes[::-1], "pvals_adj": np.linspace(0, 1, 10)})
    with pytest.raises(ValueError, match=r"set_index\('names'\)"):
        dv.metrics.mean_expression_r2(predicted, observed, genes=table["pvals_adj"] < 0.5)
    named = table.set_index("names")["pvals_adj"] < 0.5
    by_name = dv.metrics.mean_expression_r2(predicted, observed, genes=named.index[named])
    assert dv.metrics.mean_expression_r2(predicted, observed, genes=named) == by_name


def test_mean_expression_r2_takes_a_set_of_gene_names():
    """A set of DE genes failed with numpy's 'len() of unsized object'."""
    rng = np.random.default_rng(1)
    genes = [f"g{i}" for i in range(6)]
    observed = pd.DataFrame(rng.random((20, 6)), columns=genes)
    predicted = pd.DataFrame(rng.random((20, 6)), columns=genes)
    by_list = dv.metrics.mean_expression_r2(predicted, observed, genes=["g4", "g1", "g2"])
    assert dv.metrics.mean_expression_r2(predicted, observed, genes={"g1", "g2", "g4"}) == by_list


@pytest.mark.parametrize("target_sum", [None, 0, -1.0, float("nan"), "1e4"])
def test_log_normalize_names_a_target_sum_that_is_not_a_positive_number(target_sum):
    """-1 gave negative "log-normalized" values and NaN a NaN matrix, silently; None (scanpy's
    median) and a string failed in numpy's arithmetic."""
    with pytest.raises(ValueError, match="^target_sum=.* must be a finite number > 0"):
        dv.metrics.log_normalize(np.array([[1.0, 3.0]]), target_sum=target_sum)


def test_log_normalize_refuses_nan_library_sizes():
    """A NaN total (a cell missing from a merged obs column) made its row NaN, silently."""
    counts = np.array([[1.0, 3.0], [2.0, 2.0]])
    with pytest.raises(ValueError, match="library_size holds 1 NaN or infinite"):
        dv.metrics.log_normalize(counts, library_size=[np.nan, 4.0])


def test_a_one_dimensional_imputation_is_named_as_genes():
    # The shape error spoke of cell types only, for imputed genes too.
    with pytest.raises(ValueError, match=r"2-D \(spots x cell types, or spots x genes"):
        dv.metrics.imputation_scores(np.ones(4), np.ones((4, 1)))


def test_mean_expression_r2_reads_a_backed_anndata(tmp_path):
    """A backed AnnData (X on disk) failed with numpy's 'setting an array element with a
    sequence'; its means are read a chunk at a time."""
    from scipy import sparse

    rng = np.random.default_rng(0)
    genes = pd.DataFrame(index=[f"g{i}" for i in range(6)])
    observed = ad.AnnData(
        sparse.csr_matrix(rng.poisson(2.0, (30, 6)).astype(np.float32)), var=genes
    )
    predicted = ad.AnnData(rng.gamma(2.0, size=(25, 6)), var=genes)
    observed.write_h5ad(tmp_path / "observed.h5ad")
    backed = ad.read_h5ad(tmp_path / "observed.h5ad", backed="r")
    expected = dv.metrics.mean_expression_r2(predicted, observed)
    assert dv.metrics.mean_expression_r2(predicted, backed) == pytest.approx(expected, abs=1e-12)
    backed.file.close()


def test_gene_means_of_a_float32_sparse_matrix_add_in_float64():
    """scipy's mean of a float32 sparse matrix adds in float32: 6e-4 off over 200,000 cells,
    where the dense path (float64) was exact."""
    from scipy import sparse

    from deltavae.metrics._perturbation import gene_means

    x = sparse.csr_matrix(np.full((200_000, 2), 1000.1, dtype=np.float32))
    exact = np.float64(np.float32(1000.1))
    np.testing.assert_allclose(gene_means(x, "x")[0], exact, rtol=1e-10)


def test_mean_expression_r2_names_text_columns_and_a_gene_repeated_from_the_end():
    """A DataFrame with a text column said only numpy's 'could not convert string to float';
    genes=[-1, 4] of 5 genes counted the last gene twice, silently."""
    rng = np.random.default_rng(0)
    data = pd.DataFrame(rng.gamma(2.0, size=(10, 5)), columns=list("abcde"))
    with pytest.raises(TypeError, match=r"not numbers \(\['condition'\]\).*drop\(columns"):
        dv.metrics.mean_expression_r2(data.assign(condition="stim"), data)
    with pytest.raises(ValueError, match=r"genes repeats \[4\]"):
        dv.metrics.mean_expression_r2(data.to_numpy(), data.to_numpy(), genes=[-1, 4, 0, 1])


def test_imputation_scores_name_a_sparse_prediction():
    """A sparse pred (imputed genes of an AnnData) failed with numpy's 'setting an array
    element with a sequence'."""
    from scipy import sparse

    true = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=list("abc"))
    with pytest.raises(TypeError, match=r"pred must be a DataFrame or a dense array.*toarray"):
        dv.metrics.imputation_scores(true, sparse.csr_matrix(true.to_numpy()))


def test_label_series_of_other_lengths_are_refused_without_a_position_warning():
    """Series of a subset of the cells warned 'paired by position' and then raised; the error
    alone now says how to score the cells both hold."""
    true = pd.Series(list("xxyyy"), index=[f"c{i}" for i in range(5)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(
            ValueError, match=r"length 5 but labels_pred has length 3.*intersection"
        ):
            ari(true, true.iloc[:3])


def test_cell_counts_scored_against_proportions_are_warned_about():
    """obsm['cell_counts'] (pseudo_spots) passed as true scored a perfect prediction at a
    PCC of 0.92, silently; one factor for every spot (RMSE only) is not warned about."""
    rng = np.random.default_rng(0)
    counts = pd.DataFrame(rng.integers(0, 4, size=(40, 3)) + 0.0, columns=list("ABC"))
    counts.iloc[:, 0] += 1  # every spot holds cells
    proportions = counts.div(counts.sum(axis=1), axis=0)
    with pytest.warns(UserWarning, match=r"true's rows sum to 5.* pred's to 1: .*different scales"):
        scores = dv.metrics.deconvolution_scores(counts, proportions)
    assert scores["pcc"].min() < 0.99  # what the warning is about
    with pytest.warns(UserWarning, match="different scales"):
        dv.metrics.per_type_pcc(proportions, counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (dv.metrics.per_type_pcc(proportions, 3 * proportions) > 0.999).all()


def test_nan_scores_tables_name_the_columns_that_hold_them():
    """'pred contains NaN or infinite values' left the user to find the failed genes."""
    true = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=list("abc"))
    with pytest.raises(
        ValueError, match=r"pred contains NaN or infinite values in 1 columns .*'b'"
    ):
        dv.metrics.imputation_scores(true, true.assign(b=np.nan))
    with pytest.raises(ValueError, match=r"true contains NaN .* in 2 cell types .*'a', 'c'"):
        dv.metrics.rmse(true.assign(a=np.inf, c=np.nan), true)


@pytest.mark.parametrize(
    ("genes", "error", "match"),
    [
        ("CD4", TypeError, r"genes='CD4' is one string: pass a list"),
        ([], ValueError, "genes is empty"),
        ([0.0, 1.0, 2.0], TypeError, "genes holds float64 values"),
    ],
)
def test_mean_expression_r2_names_genes_it_cannot_read(genes, error, match):
    """One name, no genes or float positions failed with numpy's 'len() of unsized object'
    or 'arrays used as indices must be of integer (or boolean) type'."""
    data = pd.DataFrame(np.arange(20.0).reshape(4, 5), columns=["CD4", "b", "c", "d", "e"])
    with pytest.raises(error, match=match):
        dv.metrics.mean_expression_r2(data, data + 1, genes=genes)


def test_mean_expression_r2_takes_a_generator_of_gene_names():
    data = pd.DataFrame(np.arange(20.0).reshape(4, 5) ** 1.5, columns=list("abcde"))
    names = (g for g in "abc")
    assert dv.metrics.mean_expression_r2(data, data, genes=names) == pytest.approx(1.0)


def test_label_series_without_a_cell_name_in_common_are_paired_by_position_with_a_warning():
    """Columns of two AnnData objects named apart (concat's '-0' suffixes) were paired by
    position without a word, where partly shared names were warned about."""
    true = pd.Series(list("xxyy"), index=["AAAC-1", "AAAG-1", "ACGT-1", "TTTT-1"])
    pred = pd.Series([0, 1, 0, 1], index=[f"{c}-0" for c in true.index])
    with pytest.warns(UserWarning, match=r"none in common \(e\.g\. \['AAAC-1', 'AAAG-1'\] and"):
        assert ari(true, pred) == ari(true.to_numpy(), pred.to_numpy())


def test_tables_of_other_spots_say_how_to_pair_them():
    """'true and pred index different spots; align them first' said neither which nor how."""
    true = pd.DataFrame([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]], columns=["A", "B"])
    true.index = ["s1", "s2", "s3"]
    with pytest.raises(
        ValueError, match=r"0 of 3 names shared; e\.g\. \['s1', 's2'\] and \[0, 1\]"
    ):
        dv.metrics.rmse(true, true.reset_index(drop=True))
    wider = pd.concat([true, true.rename(index=lambda s: s + "x")])
    with pytest.raises(
        ValueError, match=r"pred holds all of true's spots.*pred\.loc\[true\.index\]"
    ):
        dv.metrics.imputation_scores(true, wider)


def test_soft_assignments_passed_as_labels_say_to_take_the_most_likely_cluster():
    """predict_labels(soft=True) or obs[['leiden']] said only 'must be 1-D'."""
    soft = pd.DataFrame([[0.9, 0.1], [0.2, 0.8]], columns=["A", "B"])
    with pytest.raises(ValueError, match=r"shape \(2, 2\): a table of soft .*idxmax\(axis=1\)"):
        cluster_scores(["x", "y"], soft)
    with pytest.raises(ValueError, match=r"one-column table, pass its column"):
        ari(soft[["A"]], [0, 1])
    # A dict or generator: "got shape ()", naming neither the type nor what to pass.
    with pytest.raises(ValueError, match=r"type dict .*pass pd\.Series\(labels\)"):
        ari({"c0": "x", "c1": "y"}, [0, 1])
    with pytest.raises(ValueError, match=r"type generator .*list\(\.\.\.\)"):
        ari([0, 1], (label for label in "xy"))


def test_a_gene_name_the_data_repeats_is_refused_as_a_selection():
    """genes=['b', ...] on data whose var_names repeat 'b' scored both columns, silently."""
    rng = np.random.default_rng(0)
    with pytest.warns(UserWarning, match="not unique"):  # anndata's own
        adata = ad.AnnData(rng.gamma(2.0, size=(10, 5)), var=pd.DataFrame(index=list("abbcd")))
    with pytest.raises(ValueError, match=r"repeats the gene names \['b'\].*var_names_make_unique"):
        dv.metrics.mean_expression_r2(adata, adata, genes=["a", "b", "c"])
    assert dv.metrics.mean_expression_r2(adata, adata, genes=[0, 1, 3]) == pytest.approx(1.0)


def test_mean_expression_r2_scores_the_change_from_control():
    """The R² of the change from control over the DE genes (the delta measure) had to be
    computed by hand: control= scores it, checked against scipy's pearsonr squared."""
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    ctrl = rng.poisson(3, (40, 20)).astype(float)
    up = np.r_[np.ones(10), np.linspace(1, 3, 10)]
    truth = dv.metrics.log_normalize(ctrl * up)
    pred = dv.metrics.log_normalize(ctrl * up**0.7 + rng.random((40, 20)))
    ctrl = dv.metrics.log_normalize(ctrl)
    de = np.arange(10, 20)
    change = pred.mean(0) - ctrl.mean(0), truth.mean(0) - ctrl.mean(0)
    expected = pearsonr(change[0][de], change[1][de])[0] ** 2
    score = dv.metrics.mean_expression_r2(pred, truth, genes=de, control=ctrl)
    assert score == pytest.approx(expected, abs=1e-12)
    assert score < dv.metrics.mean_expression_r2(pred, truth, genes=de)  # means: higher
    names = [f"g{i}" for i in range(20)]

    def named(x):
        return ad.AnnData(x, var=pd.DataFrame(index=names))

    by_name = dv.metrics.mean_expression_r2(
        named(pred), named(truth), genes=names[10:], control=named(ctrl)
    )
    assert by_name == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="predicted and control hold the same genes in another"):
        dv.metrics.mean_expression_r2(named(pred), named(truth), control=named(ctrl)[:, ::-1])
    with pytest.raises(ValueError, match="the predicted change from control is the same for"):
        dv.metrics.mean_expression_r2(pred, truth, control=pred)
    with pytest.raises(ValueError, match=r"means already taken: pass them as one row"):
        dv.metrics.mean_expression_r2(pred.mean(0), truth.mean(0))


def test_a_prediction_equal_to_the_control_up_to_rounding_changes_no_gene():
    """The control's own cells in another order (or a float32 copy of them), scored as the
    prediction against control=: the change of the means is rounding (1e-17, 1e-8), and its
    R² with the observed change was returned as a score (0.08, 0.09 here) where the same
    cells in the same order were refused as changing no gene."""
    rng = np.random.default_rng(0)
    ctrl = dv.metrics.log_normalize(rng.poisson(3, (30, 20)).astype(float))
    truth = dv.metrics.log_normalize(rng.poisson(4, (25, 20)).astype(float))
    for same in (ctrl[::-1], ctrl.astype(np.float32)):
        assert np.ptp(same.mean(0) - ctrl.mean(0)) > 0  # not exactly the control's means
        with pytest.raises(ValueError, match="predicted change from control is the same"):
            dv.metrics.mean_expression_r2(same, truth, control=ctrl)
    # A change of a thousandth of the means is a prediction, scored as scipy scores it.
    from scipy.stats import pearsonr

    pred = ctrl + 1e-3 * rng.random(20)
    change = pred.mean(0) - ctrl.mean(0), truth.mean(0) - ctrl.mean(0)
    assert dv.metrics.mean_expression_r2(pred, truth, control=ctrl) == pytest.approx(
        pearsonr(*change)[0] ** 2, abs=1e-9
    )


def test_scores_match_the_reference_definitions_they_name():
    """Each score against the implementation it names, on random inputs: sklearn's ARI and
    NMI (arithmetic mean, as scib-metrics), Hungarian accuracy on the square confusion
    matrix (as DEC), Li et al.'s (Nat. Methods 2022) PCC, SSIM (l * c * s with C3 = C2 / 2 on
    max-scaled columns), z-scored RMSE and JS divergence (natural log, from
    ``jsd ** 2 * np.log(2)``, as the docstrings say), and scGen's R² (linregress's r²)."""
    from scipy import stats
    from scipy.optimize import linear_sum_assignment
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(1)
    for _ in range(20):
        t, p = rng.integers(0, 4, 25), rng.integers(0, 6, 25)
        square = np.zeros((6, 6))
        np.add.at(square, (p, t), 1)
        rows, cols = linear_sum_assignment(square.max() - square)
        assert cluster_scores(t.astype(str), p) == pytest.approx(
            {
                "ari": adjusted_rand_score(t, p),
                "nmi": normalized_mutual_info_score(t, p, average_method="arithmetic"),
                "accuracy": square[rows, cols].sum() / 25,
                "purity": pd.crosstab(t, p).max(axis=0).sum() / 25,
            }
        )

    def li_ssim(a, b):  # Li et al.'s cal_ssim with M = 1, on columns scaled by their maximum
        a, b = a / a.max(), b / b.max()
        s1, s2, s12 = a.std(), b.std(), np.mean((a - a.mean()) * (b - b.mean()))
        c1, c2 = 0.01**2, 0.03**2
        luminance = (2 * a.mean() * b.mean() + c1) / (a.mean() ** 2 + b.mean() ** 2 + c1)
        return (
            luminance
            * (2 * s1 * s2 + c2)
            / (s1**2 + s2**2 + c2)
            * (s12 + c2 / 2)
            / (s1 * s2 + c2 / 2)
        )

    def li_js(a, b):  # Li et al.'s JS: divergence in natural log of the sum-scaled columns
        a, b = a / a.sum(), b / b.sum()
        return 0.5 * stats.entropy(a, (a + b) / 2) + 0.5 * stats.entropy(b, (a + b) / 2)

    true, pred = rng.dirichlet(np.ones(4), 30), rng.dirichlet(np.ones(4), 30)
    decon = dv.metrics.deconvolution_scores(true, pred)
    imputed = dv.metrics.imputation_scores(true, pred)
    for j in range(4):
        a, b = true[:, j], pred[:, j]
        assert decon.loc[j, "pcc"] == pytest.approx(stats.pearsonr(a, b)[0])
        assert decon.loc[j, "ssim"] == pytest.approx(li_ssim(a, b))
        assert decon.loc[j, "rmse"] == pytest.approx(np.sqrt(np.mean((a - b) ** 2)))
        assert decon.loc[j, "jsd"] ** 2 * np.log(2) == pytest.approx(li_js(a, b))
        li_rmse = np.sqrt(np.mean((stats.zscore(a) - stats.zscore(b)) ** 2))
        assert imputed.loc[j, "rmse"] == pytest.approx(li_rmse)
    expected = stats.linregress(pred.mean(0), true.mean(0)).rvalue ** 2
    assert dv.metrics.mean_expression_r2(pred, true) == pytest.approx(expected)
    # Not CPA's r2_score of the means (as the docstring says): scale does not count.
    from sklearn.metrics import r2_score

    assert dv.metrics.mean_expression_r2(3 * pred, true) == pytest.approx(expected)
    assert r2_score(true.mean(0), 3 * pred.mean(0)) < 0


def test_columns_constant_in_the_truth_are_named_not_skipped_in_silence():
    """A type absent from the truth (all 0) had PCC NaN without a word, and a gene measured
    flat but not 0 PCC and RMSE NaN: .median() skipped them. Each is named once."""
    true = pd.DataFrame({"a": [0.5, 0.2, 0.3, 0.0], "b": [0.5, 0.8, 0.7, 1.0], "c": 0.0})
    pred = true.assign(c=[0.1, 0.0, 0.2, 0.1])
    with pytest.warns(UserWarning, match=r"true is constant across spots in 1 of the 3 cell ty"):
        scores = dv.metrics.per_type_pcc(true, pred)
    assert scores.isna().tolist() == [False, False, True]
    genes = pd.DataFrame({"g1": [1.0, 2.0, 0.0, 3.0], "g2": 2.5, "g3": [0.0, 1.0, 1.0, 4.0]})
    imputed = genes.assign(g2=[2.0, 3.0, 2.5, 1.0])
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        table = dv.metrics.imputation_scores(genes, imputed)
    assert table.loc["g2", ["pcc", "rmse"]].isna().all() and table["pcc"].count() == 2
    assert len(told) == 1
    assert re.match(
        r"true is constant across spots in 1 of the 3 genes \(e.g. \['g2'\]\): their PCC and "
        r"z-scored RMSE are undefined",
        str(told[0].message),
    )


def test_scores_set_by_too_few_spots_are_warned_about():
    """Over one spot SSIM is 1 and the JS distance 0, over two PCC is +-1, whatever the
    prediction: they were returned as perfect scores without a word."""
    true, pred = np.array([[0.5, 0.5]]), np.array([[0.1, 0.9]])
    with pytest.warns(UserWarning, match=r"Only 1 spot to score.*SSIM is 1 and the JS distance 0"):
        scores = dv.metrics.deconvolution_scores(true, pred)
    assert scores["ssim"].tolist() == [1.0, 1.0] and scores["jsd"].tolist() == [0.0, 0.0]
    with pytest.warns(UserWarning, match=r"over one spot SSIM is 1 whatever"):
        dv.metrics.ssim(true, pred)
    with pytest.warns(UserWarning, match=r"over one spot the JS distance 0 whatever"):
        dv.metrics.jsd(true, pred)
    two = np.array([[0.5, 0.5], [0.4, 0.6]]), np.array([[0.1, 0.9], [0.2, 0.8]])
    with pytest.warns(UserWarning, match=r"Only 2 spots to score.*PCC is \+1 or -1"):
        assert dv.metrics.per_type_pcc(*two).abs().tolist() == pytest.approx([1.0, 1.0])
    with pytest.warns(UserWarning, match=r"Only 2 spots to score"):
        dv.metrics.imputation_scores(*two)
    with warnings.catch_warnings():  # RMSE of one spot, SSIM over two: no warning
        warnings.simplefilter("error")
        assert dv.metrics.rmse(true, pred).tolist() == pytest.approx([0.4, 0.4])
        dv.metrics.ssim(*two)


def test_pcc_over_one_spot_and_constant_predictions_say_which_scores_are_nan():
    """per_type_pcc over one spot gave NaN for every type without a word (the few-spots
    warning covered two spots); imputation_scores' constant-prediction warning said only
    "their PCC is undefined", its z-scored RMSE being NaN too."""
    true, pred = np.array([[0.5, 0.5]]), np.array([[0.1, 0.9]])
    with pytest.warns(UserWarning, match=r"Only 1 spot to score.*over one spot PCC is undefined"):
        assert dv.metrics.per_type_pcc(true, pred).isna().all()
    one = r"over one spot PCC is undefined \(NaN.*, and SSIM is 1 and the JS distance 0 whatever"
    with pytest.warns(UserWarning, match=one):
        dv.metrics.deconvolution_scores(true, pred)
    with pytest.warns(UserWarning, match=r"over one spot PCC and the z-scored RMSE are undefined"):
        scores = dv.metrics.imputation_scores(true, pred)
    assert scores["pcc"].isna().all() and scores["rmse"].isna().all()
    true = pd.DataFrame({"g1": [1.0, 2.0, 3.0, 4.0], "g2": [0.0, 1.0, 0.0, 2.0]})
    pred = true.assign(g2=0.5)  # g2 imputed flat
    with pytest.warns(UserWarning, match=r"\['g2'\]\): their PCC and z-scored RMSE are undefined"):
        scores = dv.metrics.imputation_scores(true, pred)
    assert np.isnan(scores.loc["g2", "pcc"]) and np.isnan(scores.loc["g2", "rmse"])
    with pytest.warns(UserWarning, match=r"\['g2'\]\): their PCC is undefined"):
        dv.metrics.per_type_pcc(true, pred)


def test_names_that_differ_only_in_type_are_said_so():
    """Columns 0, 1, 2 against '0', '1', '2' (a table read back from an h5ad): imputation
    said pred holds the genes as rows (its spots' 0, 1, ...), advising a transposition."""
    true = pd.DataFrame(np.eye(3)[[0, 1, 2, 0]], columns=[0, 1, 2])
    text = true.set_axis(true.columns.astype(str), axis=1)
    hint = r"differ only in type \(true's 0 \(a number\), pred's '0' \(text\)\).*astype\(str\)"
    with pytest.raises(KeyError, match=hint):
        dv.metrics.deconvolution_scores(true, text)
    with pytest.raises(KeyError, match=hint) as error:
        dv.metrics.imputation_scores(true, text)
    assert "transposed" not in str(error.value)
    with pytest.raises(KeyError, match=r"true's '0' \(text\), pred's 0 \(a number\)"):
        dv.metrics.imputation_scores(text, true)
    profiles = pd.DataFrame(np.arange(8.0).reshape(2, 4) % 3)  # 2 archetypes x 4 genes
    with pytest.raises(ValueError, match=r"8 differ: the names differ only in type"):
        dv.metrics.matched_profile_correlation(profiles, profiles.rename(columns=str))


def test_a_one_dimensional_table_says_how_to_pass_one_column():
    true = pd.DataFrame({"a": [0.1, 0.5, 0.4]})
    with pytest.raises(ValueError, match=r"one column: pass a table, series.to_frame\(\)"):
        dv.metrics.rmse(true, true["a"])
    assert dv.metrics.rmse(true, true["a"].to_frame()).tolist() == [0.0]


def test_a_type_predicted_nowhere_is_warned_about_not_dropped_from_the_median():
    """A type predicted nowhere has PCC NaN, which .median() skipped: the summary of a
    prediction that missed a type read as good as one that found it. A type constant in
    the truth (c) is undefined, not a failure: not counted there, but named on its own."""
    true = pd.DataFrame({"a": [0.5, 0.25, 0.0, 0.1], "b": [0.0, 0.25, 0.5, 0.4], "c": 0.5})
    pred = true.assign(b=0.0, c=true["b"] + 0.5)
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        scores = dv.metrics.per_type_pcc(true, pred)
    said = sorted(str(w.message) for w in told)
    assert len(said) == 2
    assert re.match(r"pred is constant across spots in 1 of the 2 cell types .*'b'", said[0])
    assert re.match(r"true is constant across spots in 1 of the 3 cell types .*'c'", said[1])
    assert scores.median() == 1.0 and scores.fillna(0).median() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dv.metrics.rmse(true, pred)


def test_mean_expression_r2_reads_every_sparse_format():
    """A COO, DIA or BSR matrix (scipy's sparse.random and coo_matrix give COO) failed in the
    row chunks ('coo_matrix' object is not subscriptable); every format now gives the dense
    input's value, scipy's pearsonr squared of the gene means."""
    from scipy import sparse
    from scipy.stats import pearsonr

    rng = np.random.default_rng(0)
    pred, obs, ctrl = (rng.poisson(2, (30, 12)).astype(float) for _ in range(3))
    expected = pearsonr(pred.mean(0) - ctrl.mean(0), obs.mean(0) - ctrl.mean(0))[0] ** 2
    for fmt in (sparse.coo_matrix, sparse.dia_matrix, sparse.bsr_matrix, sparse.csc_matrix):
        score = dv.metrics.mean_expression_r2(fmt(pred), fmt(obs), control=fmt(ctrl))
        assert score == pytest.approx(expected, abs=1e-12)


def test_gene_order_refusals_name_the_side_that_has_names():
    """An array predicted against AnnData observed and control in another order: the refusal
    named predicted (an array, no var_names) and told to index by predicted.var_names."""
    rng = np.random.default_rng(0)
    names = [f"g{i}" for i in range(6)]
    pred, obs = rng.gamma(2.0, size=(8, 6)), rng.gamma(2.0, size=(8, 6))
    obs_named = ad.AnnData(obs, var=pd.DataFrame(index=names))
    ctrl = ad.AnnData(rng.gamma(2.0, size=(8, 6)), var=pd.DataFrame(index=names))
    match = r"observed and control hold the same genes in another order.*observed.var_names"
    with pytest.raises(ValueError, match=match):
        dv.metrics.mean_expression_r2(pred, obs_named, control=ctrl[:, ::-1])
    with pytest.raises(ValueError, match="^predicted and control hold the same genes"):
        dv.metrics.mean_expression_r2(obs_named, pred, control=ctrl[:, ::-1])


def test_an_anndata_without_x_is_named():
    """An AnnData holding its data in layers only was refused as 'must be cells x genes
    (2-D); got shape ()'."""
    names = pd.DataFrame(index=list("abcd"))
    cells = pd.DataFrame(index=[f"c{i}" for i in range(5)])
    layers_only = ad.AnnData(obs=cells, var=names, layers={"counts": np.ones((5, 4))})
    full = ad.AnnData(np.random.default_rng(0).random((5, 4)), obs=cells, var=names)
    with pytest.raises(ValueError, match=r"predicted is an AnnData without X.*layers\['counts'\]"):
        dv.metrics.mean_expression_r2(layers_only, full)


def test_numbers_held_as_objects_are_scored_and_an_all_nan_prediction_is_named():
    """A table of numbers with object columns (built row by row) was refused as 'columns that
    are not numbers', naming every column; a prediction of NaN only was told to keep its
    columns without NaN: none."""
    true = pd.DataFrame({"a": [0.2, 0.5, 0.9], "b": [0.8, 0.5, 0.1]}, index=["s0", "s1", "s2"])
    pred = true[::-1].astype(object)
    expected = dv.metrics.imputation_scores(true, pred.astype(float))
    pd.testing.assert_frame_equal(dv.metrics.imputation_scores(true, pred), expected)
    genes = true.assign(c=[1.0, 0.0, 3.0])
    assert dv.metrics.mean_expression_r2(genes.astype(object), genes) == pytest.approx(1.0)
    # Decimal and int values in one column (infer_dtype: "mixed-integer") are numbers too.
    from decimal import Decimal

    mixed = true.astype(object).assign(a=[Decimal("0.2"), Decimal("0.5"), 1])
    np.testing.assert_allclose(dv.metrics.rmse(true.assign(a=[0.2, 0.5, 1.0]), mixed), 0.0)
    text = true.assign(a=["0.2", "0.5", "0.9"])  # text, not numbers: still named
    with pytest.raises(TypeError, match=r"not numbers \(\['a'\]\)"):
        dv.metrics.rmse(text, true)
    with pytest.raises(ValueError, match=r"^pred holds no proportions: all its 6 entries are NaN"):
        dv.metrics.deconvolution_scores(true, true * np.nan)


def test_spot_names_that_differ_only_in_type_are_said_so():
    """Spots named 0, 1, ... in true and '0', '1', ... in pred (a table read back from a
    file) were told to use pred.loc[true.index], which raises a KeyError."""
    true = pd.DataFrame({"a": [0.2, 0.5, 0.9], "b": [0.8, 0.5, 0.1]})
    pred = true.set_axis(true.index.astype(str))
    with pytest.raises(ValueError, match=r"differ only in type .*table\.index = table\.index"):
        dv.metrics.rmse(true, pred)


def test_warnings_point_at_the_callers_line():
    """The label-pairing warnings pointed one frame above the caller (``sys:1`` from a
    script's top level)."""
    true = pd.Series(["B", "B", "T", "T"], index=["a", "b", "c", "d"])
    pred = pd.Series([1, 1, 0, 0], index=["a", "b", "x", "y"])
    with pytest.warns(UserWarning, match="partly different cells") as record:
        ari(true, pred)
    assert [w.filename for w in record] == [__file__]


def test_jsd_alone_warns_where_a_column_sums_to_0():
    """jsd gave NaN in silence for a type predicted nowhere (b) or absent from the truth (c);
    deconvolution_scores names each once: b in its constant-prediction warning, c in its
    constant-truth warning, which says its JS distance is NaN too."""
    true = pd.DataFrame({"a": [0.5, 0.5, 0.0], "b": [0.5, 0.0, 1.0], "c": 0.0})
    pred = true.assign(b=0.0, c=[0.5, 0.5, 0.0])
    with pytest.warns(UserWarning, match=r"2 of the 3 cell types sum to 0 .*\['b', 'c'\].*NaN"):
        scores = dv.metrics.jsd(true, pred)
    assert scores.isna().tolist() == [False, True, True]
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        dv.metrics.deconvolution_scores(true, pred)
    said = sorted(str(w.message) for w in told)
    assert len(said) == 2 and not any("sum to 0" in text for text in said)
    assert said[0].startswith("pred is constant across spots in 1 of the 2") and "['b']" in said[0]
    assert said[1].startswith("true is constant across spots in 1 of the 3") and "['c']" in said[1]
    assert "JS distance of those all 0" in said[1]


def test_perturbation_data_of_other_genes_say_which_and_how_to_share():
    """predicted of 150 genes against observed of 200 (AnnData): "they must match" named
    neither the genes nor how to keep those both hold; a transposed table keeps its hint."""
    rng = np.random.default_rng(0)
    genes = [f"g{i}" for i in range(200)]
    observed = ad.AnnData(rng.gamma(2.0, 1.0, (30, 200)).astype(np.float32))
    observed.var_names = genes
    predicted = observed[:, 50:].copy()
    shared = r"\(50 in one only, .*shared = predicted\.var_names\.intersection\(observed\."
    with pytest.raises(ValueError, match=rf"predicted and observed have different genes {shared}"):
        dv.metrics.mean_expression_r2(predicted, observed)
    with pytest.raises(ValueError, match="observed and control have different genes"):
        dv.metrics.mean_expression_r2(observed.X, observed, control=predicted)
    table = pd.DataFrame(observed.X, columns=genes)
    with pytest.raises(ValueError, match=r"may be swapped \(genes x cells\)"):
        dv.metrics.mean_expression_r2(table.iloc[:, :20].T, table.iloc[:, :20])
