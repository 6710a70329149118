"""SpatialImputer on inputs of real spatial and reference pairs: reference genes without
counts, and the like (found on the RCTD pairs of /work/shared/data)."""

import warnings

import anndata as ad
import pytest
from scipy import sparse

import deltavae as dv

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def silent_pair():
    """Spots measuring the first 30 of 40 genes, and a reference that never counts two of the
    other 10 (as 285 of the lymph-node reference's genes the Visium spots lack)."""
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=40, n_clusters=3, seed=0)
    ref, spots = cells[:100].copy(), cells[100:, :30].copy()
    counts = sparse.lil_matrix(ref.X)
    counts[:, [35, 37]] = 0
    ref.X = sparse.csr_matrix(counts)
    return spots, ref, [ref.var_names[35], ref.var_names[37]]


@pytest.fixture(scope="module")
def silent_model(silent_pair):
    spots, ref, _ = silent_pair
    model = dv.model.SpatialImputer.from_reference(
        spots, reference=ref, labels_key="cluster", profiles="type"
    )
    model.train(max_epochs=5, **TRAIN)
    return model


def test_imputing_reference_genes_without_counts_is_warned_naming_them(silent_pair, silent_model):
    """They came out a constant ~1e-7 in every spot, silently (lymph-node pair: 285 genes)."""
    _, ref, silent = silent_pair
    counted = ref.var_names[34]
    with pytest.warns(UserWarning, match="1 of the 2 genes imputed have no counts in the ref"):
        values = silent_model.impute([counted, silent[0]])
    assert values[silent[0]].max() < 1e-6 < values[counted].min()  # what is warned
    with pytest.warns(UserWarning, match=rf"2 of the 10 genes .*{silent[1]}.*filter_genes"):
        silent_model.impute()  # every unmeasured gene: how to leave them out
    with pytest.warns(UserWarning, match="no counts in the reference"):
        silent_model.write_to_adata(silent_pair[0].copy())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        silent_model.impute([counted])  # counted genes only: nothing said


def test_a_spot_gene_the_reference_lacks_is_told_as_the_spots_own_not_a_typo(silent_pair):
    """Hippocampus Visium's measured 'Rpl7', which the reference lacks, was asked of
    impute() and told "Check their spelling ('Rpl7': did you mean 'Rpl8' ...?)"."""
    spots, ref, _ = silent_pair
    spots = spots.copy()
    spots.var_names = [*spots.var_names[:-1], "gene_9x"]  # measured, not a reference gene
    model = dv.model.SpatialImputer.from_reference(
        spots, reference=ref, labels_key="cluster", profiles="type"
    )
    model.train(max_epochs=1, **TRAIN)
    said = r"\['gene_9x'\] are genes the spots measured and the reference lacks.*spots\[:, "
    for adata in (None, spots[:5]):  # the spots given to from_reference, or those passed
        with pytest.raises(KeyError, match=said) as error:
            model.impute(["gene_9x"], adata=adata)
        assert "did you mean" not in str(error.value)
    with pytest.raises(KeyError, match="did you mean 'gene_3"):  # a typo is still a typo
        model.impute(["gene_3x"])


def test_reference_genes_without_counts_in_its_layer_are_dropped_by_that_layer(
    silent_pair, tmp_path
):
    """With reference_layer='counts' and a scaled X, impute's advice said
    sc.pp.filter_genes(reference, min_counts=1), which reads X: on X's genes, which sum to
    about 0, following it dropped genes with counts and kept the two without. The statement
    now reads the layer from_reference read, and a save keeps it."""
    import numpy as np
    import scanpy as sc

    spots, ref, silent = silent_pair
    ref = ref.copy()
    ref.layers["counts"] = ref.X.copy()
    ref.X = np.random.default_rng(0).normal(size=ref.shape).astype(np.float32)  # scaled X
    model = dv.model.SpatialImputer.from_reference(
        spots, reference=ref, labels_key="cluster", profiles="type", reference_layer="counts"
    )
    model.train(max_epochs=2, **TRAIN)
    with pytest.warns(UserWarning, match="2 of the 10 genes imputed") as said:
        model.impute()
    statement = str(said[0].message).split("before from_reference: ", 1)[1].rstrip(".")
    names = {"reference": ref, "sc": sc, "np": np}
    exec(statement, names)
    assert list(names["reference"].var_names) == [g for g in ref.var_names if g not in silent]
    model.save(tmp_path / "m")
    loaded = dv.model.SpatialImputer.load(tmp_path / "m", adata=spots)
    assert loaded.reference_layer_ == "counts"


@pytest.fixture(scope="module")
def few_cell_pair():
    """Spots measuring 30 of 40 genes and a reference of 400 cells that counts gene_36 in 3
    of them only."""
    cells = dv.datasets.synthetic_counts(n_cells=500, n_genes=40, n_clusters=3, seed=0)
    ref, spots = cells[:400].copy(), cells[400:, :30].copy()
    counts = ref.X.toarray() if sparse.issparse(ref.X) else ref.X.copy()
    counts[:, 36] = 0
    counts[[5, 150, 300], 36] = 2
    ref.X = sparse.csr_matrix(counts)
    return spots, ref


def test_genes_the_reference_counts_in_a_handful_of_cells_are_told_once_imputed(
    few_cell_pair, tmp_path
):
    """gene_36, counted in 3 of the 400 reference cells, was imputed about 0.05 in every
    spot without a word, as if estimated (lymph-node pair: 42 such genes correlated 0.02-0.09
    with their held-out counts). impute() says so naming it, with the statement that drops
    it (run here); a reference read from disk in chunks is counted alike; a save keeps it."""
    import numpy as np
    import scanpy as sc

    spots, ref = few_cell_pair
    model = dv.model.SpatialImputer.from_reference(
        spots, reference=ref, labels_key="cluster", profiles="type"
    )
    model.train(max_epochs=2, **TRAIN)
    told = r"counted in fewer than 5 of the reference's 400 cells"
    with pytest.warns(UserWarning, match=r"1 of the 10 genes imputed are " + told) as said:
        values = model.impute()
    assert "(['gene_36']; 'gene_36' in 3)" in str(said[-1].message)
    assert values["gene_36"].max() < 0.2  # a small value in every spot
    statement = str(said[-1].message).split("before from_reference: ", 1)[1].rstrip(".")
    names = {"reference": ref.copy(), "sc": sc, "np": np}
    exec(statement, names)
    assert "gene_36" not in names["reference"].var_names
    assert names["reference"].n_vars == ref.n_vars - 1
    with pytest.warns(UserWarning, match=r"unreliable.*leave them out of genes="):
        model.impute(["gene_36", "gene_35"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.impute(["gene_35", "gene_31"])  # genes of many cells: nothing said
    model.save(tmp_path / "m")
    with pytest.warns(UserWarning, match=told):
        dv.model.SpatialImputer.load(tmp_path / "m", adata=spots).impute(["gene_36"])
    ad.AnnData(ref.X, obs=ref.obs[["cluster"]], var=ref.var[[]]).write_h5ad(tmp_path / "r.h5ad")
    on_disk = dv.read_lazy(tmp_path / "r.h5ad")  # per-type profiles read in chunks
    from_disk = dv.model.SpatialImputer.from_reference(
        spots, reference=on_disk, labels_key="cluster", profiles="type"
    )
    pd_equal = from_disk.few_cell_genes_.equals(model.few_cell_genes_)
    assert pd_equal and from_disk.reference_n_cells_ == 400
