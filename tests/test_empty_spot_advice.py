"""The spot models' advice for spots without counts in the genes they read: it said
``sc.pp.filter_cells(spots, min_counts=1)``, which reads X and every gene, so it kept the
spots empty only in the model's layer or only in the genes the model reads (those shared
with the reference); a refit on the filtered spots warned again."""

import re
import warnings

import anndata as ad
import numpy as np
import pytest
import scanpy as sc
from _shell_advice import run_advised
from scipy import sparse

import deltavae as dv
from deltavae.cli import main

TRAIN = {"max_epochs": 2, "enable_progress_bar": False, "enable_model_summary": False}
#: Spots without counts in the reference's genes (counts in a gene only the spots have),
#: and spots without any count in the layer; X is all ones, as no counts are.
OFF_REFERENCE, EMPTY = [0, 1, 2], [3, 4]


@pytest.fixture(scope="module")
def data():
    cells = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=60, cells_per_spot=(2, 6), seed=3
    )
    spots = spots[:, 5:].copy()  # 5 genes left for the imputer to impute
    counts = np.asarray(sparse.csr_matrix(spots.X).toarray(), dtype=np.float32)
    counts[OFF_REFERENCE + EMPTY] = 0
    only = np.zeros((spots.n_obs, 1), dtype=np.float32)
    only[OFF_REFERENCE] = 5  # counts, but not in a gene the reference has
    spots = ad.AnnData(
        np.ones((spots.n_obs, spots.n_vars + 1), dtype=np.float32),
        obs=spots.obs[[]],
        var={"name": [*spots.var_names, "SPOT_ONLY"]},
        obsm={"spatial": spots.obsm["spatial"]} if "spatial" in spots.obsm else None,
    )
    spots.var_names = spots.var["name"].to_numpy()
    spots.layers["counts"] = sparse.csr_matrix(np.hstack([counts, only]))
    return spots, ref


def _statement(message: str) -> str:
    return re.search(r"those genes \((.*)\)\.$", message)[1]


def _empty_warnings(caught) -> list[str]:
    return [str(w.message) for w in caught if "no counts in the" in str(w.message)]


def test_the_python_advice_drops_the_spots_empty_in_the_model_genes_and_layer(data):
    spots, ref = data
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(all zeros|share only)")
        model = dv.model.NMFDeconv.from_reference(spots, ref, labels_key="cluster", layer="counts")
    model.train(**TRAIN)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.get_proportions()
    (message,) = _empty_warnings(caught)
    assert message.startswith("5 of 60 spots have no counts in the 35 genes the model reads")
    statement = _statement(message)
    assert "model.used_genes()" in statement and "layers['counts']" in statement
    space = {"spots": spots.copy(), "model": model, "np": np, "sc": sc}
    exec(statement, space)
    kept = space["spots"]
    assert kept.n_obs == 55 and not kept.obs_names.isin(spots.obs_names[:5]).any()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = dv.model.NMFDeconv.from_reference(kept, ref, labels_key="cluster", layer="counts")
        again.train(**TRAIN)
        assert not again.get_proportions().isna().any().any()
    assert _empty_warnings(caught) == []


@pytest.mark.parametrize(
    ("model", "dropped"),
    [("nmfdeconv", 5), ("imputer", 5), ("archetypes", 2)],
)
def test_the_shell_advice_drops_them_and_the_refit_does_not_warn(
    data, tmp_path, capsys, model, dropped
):
    """Each spot model's advice, as the CLI gives it (a command on INPUT, its genes by name),
    run by a shell: the copy lacks exactly the spots empty in what the model reads, and a fit
    on the copy says nothing of spots without counts."""
    spots, ref = data
    spots.write_h5ad(tmp_path / "spots.h5ad")
    ref.write_h5ad(tmp_path / "ref.h5ad")
    options = ["--model", model, "--layer", "counts", "--epochs", "2", "--no-plots"]
    options += ["--threads", "1", "--out", str(tmp_path / "out.h5ad")]
    if model == "archetypes":
        options += ["--n-archetypes", "2"]
    else:
        options += ["--reference", str(tmp_path / "ref.h5ad"), "--labels-key", "cluster"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it
        assert main(["fit", str(tmp_path / "spots.h5ad"), *options]) == 0
    said = capsys.readouterr()
    lines = [line for line in (said.out + said.err).splitlines() if "no counts in the" in line]
    assert lines and "filter_cells" not in lines[0], lines
    run_advised(lines[0], cwd=tmp_path)
    fixed = ad.read_h5ad(tmp_path / "spots_fixed.h5ad")
    assert fixed.n_obs == 60 - dropped
    gone = spots.obs_names[OFF_REFERENCE + EMPTY if dropped == 5 else EMPTY]
    assert not fixed.obs_names.isin(gone).any()
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        fixed_path = str(tmp_path / "spots_fixed.h5ad")
        assert main(["fit", fixed_path, *options, "--overwrite"]) == 0
    said = capsys.readouterr()
    assert "no counts in the" not in said.out + said.err


# 3 (each) s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
@pytest.mark.parametrize("model", ["nmfdeconv", "imputer"])
def test_the_shell_advice_is_scanpys_filter_where_that_drops_the_same_spots(
    data, tmp_path, capsys, model
):
    """Spots empty in X in every gene, the model reading X: the CLI's advice listed every
    gene the model reads (124 names on the hippocampus pair) in a command where
    sc.pp.filter_cells(spots, min_counts=1) drops the same spots."""
    spots, ref = data
    counts = spots.layers["counts"].toarray()
    counts[:, -1] = 0  # no counts in SPOT_ONLY: the spots empty in the reference's genes are
    spots = ad.AnnData(counts, obs=spots.obs, var=spots.var[[]])  # empty in every gene
    spots.write_h5ad(tmp_path / "spots.h5ad")
    ref.write_h5ad(tmp_path / "ref.h5ad")
    options = ["--model", model, "--epochs", "2", "--no-plots", "--threads", "1"]
    options += ["--out", str(tmp_path / "out.h5ad"), "--reference", str(tmp_path / "ref.h5ad")]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        assert main(["fit", str(tmp_path / "spots.h5ad"), *options, "--labels-key", "cluster"]) == 0
    said = capsys.readouterr()
    (line,) = [line for line in (said.out + said.err).splitlines() if "no counts in the" in line]
    assert "sc.pp.filter_cells(spots, min_counts=1)" in line and "isin" not in line, line
    assert "'gene_1'" not in line, line  # no gene named: the filter reads them all
    run_advised(line, cwd=tmp_path)
    fixed = ad.read_h5ad(tmp_path / "spots_fixed.h5ad")
    assert fixed.n_obs == 55 and not fixed.obs_names.isin(spots.obs_names[:5]).any()
