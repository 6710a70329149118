"""Names holding "/" ("T/NK", "CD4/CD8 T", a gene "HLA/0", a sample "s/1") that become the
column names of the obsm tables deltavae writes: anndata 0.12 writes them to .h5ad with a
FutureWarning, anndata 0.13 refuses them, and zarr refuses them now. The columns keep the
user's names; one warning, where the names first reach a model (before training), names them
and gives the line that renames them. The command line, which writes the file itself, renames
them before training and says so: its output reads back as written."""

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import deltavae as dv
from deltavae.cli import main

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}
TYPES = {0: "T/NK", 1: "CD4/CD8 T", 2: "B"}
SLASH = "hold '/'"


def _cells(n_cells=150, seed=1):
    cells = dv.datasets.synthetic_counts(
        n_cells=n_cells, n_genes=24, n_clusters=3, n_conditions=1, seed=seed
    )
    cells.obs["cell_type"] = cells.obs["cluster"].map(lambda k: TYPES[int(k)]).astype("category")
    return cells


def _said(caught) -> list[str]:
    return [str(w.message) for w in caught if SLASH in str(w.message)]


def _spots_and_reference(cells=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spots, ref = dv.datasets.pseudo_spots(
            _cells() if cells is None else cells, "cell_type", n_spots=40, cells_per_spot=(2, 4)
        )
    return spots, ref, _said(caught)


def _fix(message: str) -> str:
    """The line the warning gives to rename the names."""
    return re.search(r"rename them before [\w ]+: (.*)$", message).group(1)


def _written_back_equal(adata, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # anndata's FutureWarning on "/" in a key fails
        adata.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for key, value in adata.obsm.items():
        if isinstance(value, pd.DataFrame):
            pd.testing.assert_frame_equal(value, back.obsm[key], check_index_type=False)
    return back


def test_pseudo_spots_say_the_cell_types_their_truth_names_with_a_slash():
    spots, ref, said = _spots_and_reference()
    assert len(said) == 1 and "'T/NK', 'CD4/CD8 T'" in said[0] and "'B'" not in said[0]
    assert "obsm['proportions_true']" in said[0] and "anndata >= 0.13" in said[0]
    assert list(spots.obsm["proportions_true"].columns) == ["T/NK", "CD4/CD8 T", "B"]
    # The line it gives renames them: no warning then.
    cells = _cells()
    exec(_fix(said[0]), {"reference": cells})
    assert _spots_and_reference(cells)[2] == []


def test_nmfdeconv_says_once_before_training_and_its_fix_writes_to_h5ad(tmp_path):
    spots, ref, _ = _spots_and_reference()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = dv.model.NMFDeconv.from_reference(spots, ref, "cell_type")
    said = _said(caught)
    assert len(said) == 1, said  # from_reference's, not the class's again
    assert "'T/NK', 'CD4/CD8 T'" in said[0] and "obsm['proportions']" in said[0]
    assert "reference.obs['cell_type'] = " in said[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(**TRAIN)
        model.write_to_adata(spots)
    assert _said(caught) == []  # not again at training, nor at each write
    assert spots.obsm["proportions"]["T/NK"].notna().all()  # the user's names, kept
    # The line given renames them; the results then write to .h5ad without a warning.
    exec(_fix(said[0]), {"reference": ref})
    spots = spots.copy()
    for key in ("proportions", "proportions_true", "cell_counts"):
        del spots.obsm[key]
    model = dv.model.NMFDeconv.from_reference(spots, ref, "cell_type")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        model.train(**TRAIN)
    model.write_to_adata(spots)
    back = _written_back_equal(spots, tmp_path)
    assert list(back.obsm["proportions"].columns) == ["T-NK", "CD4-CD8 T", "B"]


def test_nmfdeconv_from_a_signature_table_says_it_too():
    spots, ref, _ = _spots_and_reference()
    table = dv.model.NMFDeconv.signatures_from_reference(ref, "cell_type")
    dv.model.NMFDeconv.setup_anndata(spots)
    with pytest.warns(UserWarning, match=SLASH) as caught:
        dv.model.NMFDeconv(spots, signatures=table)
    said = _said(caught)
    assert len(said) == 1 and "signatures.index = signatures.index.str.replace" in said[0]


@pytest.mark.parametrize("design", ["deconvolution", "latent"])
def test_spatial_imputer_says_its_states_and_the_genes_it_imputes(design):
    cells = _cells()
    cells.var_names = [f"HLA/{i}" if i < 3 else f"g{i}" for i in range(cells.n_vars)]
    spots, ref, _ = _spots_and_reference(cells)
    spots = spots[:, 3:18].copy()  # HLA/0..2 are imputed; the spots measure no "/" gene
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = dv.model.SpatialImputer.from_reference(spots, ref, "cell_type", design=design)
    said = _said(caught)
    genes = [m for m in said if "genes to impute" in m]
    assert len(genes) == 1 and "'HLA/0', 'HLA/1', 'HLA/2'" in genes[0]
    assert "obsm['imputed']" in genes[0] and "for a in (spots, reference)" in genes[0]
    states = [m for m in said if "reference states" in m]
    assert len(states) == (design == "deconvolution") and len(said) == len(genes) + len(states)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(**TRAIN)
        model.write_to_adata(spots)
    assert _said(caught) == []
    assert {"HLA/0", "HLA/1", "HLA/2"} <= set(spots.obsm["imputed"].columns)


def test_differential_abundance_says_the_samples_named_with_a_slash():
    cells = _cells(60, seed=0)
    cells.obs["sample"] = np.where(np.arange(cells.n_obs) % 2, "s/1", "s2")
    dv.model.ZINBVAE.setup_anndata(cells)
    model = dv.model.ZINBVAE(cells, n_latent=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        model.train(**TRAIN)
    with pytest.warns(UserWarning, match=SLASH) as caught:
        model.differential_abundance(cells, sample_key="sample")
    said = _said(caught)
    assert len(said) == 1 and "'s/1'" in said[0] and "'s2'" not in said[0]
    assert "before calling differential_abundance: adata.obs['sample'] = " in said[0]
    assert list(cells.obsm["da_log_probs"].columns) == ["s2", "s/1"]


@pytest.fixture(scope="module")
def slashed_files(tmp_path_factory):
    """Spots (with their true proportions, columns "T/NK", ...) and a reference whose cell
    types hold "/", as written by anndata 0.12 (with its FutureWarning)."""
    spots, ref, _ = _spots_and_reference()
    del spots.uns["pseudo_spots"]
    folder = tmp_path_factory.mktemp("slashed")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        spots.write_h5ad(folder / "spots.h5ad")
    ref.write_h5ad(folder / "ref.h5ad")
    for key in ("proportions_true", "cell_counts"):
        del spots.obsm[key]  # a zarr store cannot hold them
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zarr's notes on its own format
        spots.write_zarr(folder / "nocolumns.zarr")
    return folder


def _fit(folder, spots, out, *more):
    options = ["--model", "nmfdeconv", "--reference", str(folder / "ref.h5ad")]
    options += ["--labels-key", "cell_type", "--epochs", "2", "--no-plots", "--threads", "1"]
    return main(["fit", str(folder / spots), "--out", str(out), *options, *more])


def test_the_command_line_renames_the_names_it_writes_and_says_so(slashed_files, capsys):
    """Before: the .h5ad output was written with anndata's FutureWarning (an error under a
    newer anndata, after training); a zarr store (--backed) was refused after training."""
    out = slashed_files / "out.h5ad"
    assert _fit(slashed_files, "spots.h5ad", out) == 0  # warnings are errors here
    printed = capsys.readouterr().out
    renamed = "'T/NK' -> 'T-NK', 'CD4/CD8 T' -> 'CD4-CD8 T'"
    assert f"cell types renamed in the output: {renamed}" in printed
    assert "columns of the input's obsm['proportions_true'] renamed" in printed
    result = ad.read_h5ad(out)
    assert list(result.obsm["proportions"].columns) == ["T-NK", "CD4-CD8 T", "B"]
    assert list(result.obsm["proportions_true"].columns) == ["T-NK", "CD4-CD8 T", "B"]
    assert "cell types (obsm['proportions'])" in printed and "T-NK" in printed  # the report
    # A zarr store, written into with --backed: its results too.
    store = slashed_files / "out.zarr"
    assert _fit(slashed_files, "nocolumns.zarr", store, "--backed") == 0
    stored = ad.read_zarr(store).obsm["proportions"]
    assert list(stored.columns) == ["T-NK", "CD4-CD8 T", "B"]


def test_the_command_line_refuses_before_training_a_renaming_onto_another_name(
    slashed_files, tmp_path, capsys, monkeypatch
):
    ref = ad.read_h5ad(slashed_files / "ref.h5ad")
    ref.obs["cell_type"] = ref.obs["cell_type"].cat.rename_categories({"B": "T-NK"})
    ref.write_h5ad(tmp_path / "clash.h5ad")
    monkeypatch.setattr(dv.model.NMFDeconv, "train", lambda *a, **k: pytest.fail("trained"))
    out = tmp_path / "never.h5ad"
    options = ["--reference", str(tmp_path / "clash.h5ad")]
    assert _fit(slashed_files, "spots.h5ad", out, *options) == 2
    err = capsys.readouterr().err
    assert "['T/NK'] hold '/'" in err and "'T-NK'" in err and "Nothing was trained" in err
    assert "Traceback" not in err and not out.exists()


def test_a_condition_column_named_with_a_slash_is_said_at_setup(tmp_path):
    """sample's and translate's records are keyed by the condition column's name: under
    "treat/ment" they read back from .h5ad as {'treat': {'ment': ...}}, silently."""
    cells = _cells(90, seed=0)
    cells.obs["treat/ment"] = np.where(np.arange(cells.n_obs) % 2, "ctrl", "stim")
    with pytest.warns(UserWarning, match=SLASH) as caught:
        dv.model.CGMDVAE.setup_anndata(cells, condition_key="treat/ment")
    said = _said(caught)
    assert len(said) == 1 and "uns['sample']['condition']" in said[0]
    assert "{'treat': {'ment': ...}}" in said[0]
    # The line it gives renames the column; the records then read back as written.
    fix = re.search(r"before setup_anndata: (.*), and pass condition_key='(.*)'\.$", said[0])
    exec(fix.group(1), {"adata": cells})
    dv.model.CGMDVAE.setup_anndata(cells, condition_key=fix.group(2))
    model = dv.model.CGMDVAE(cells, n_latent=2, n_latent_w=2, n_hidden=8)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=dv.train.NotConvergedWarning)
        warnings.filterwarnings("ignore", message=r".* never predicted after training")
        model.train(**TRAIN)
    sampled = model.sample(5, seed=0)
    back = _written_back_equal(sampled, tmp_path)
    assert back.uns["sample"]["condition"] == {"treat-ment": "drawn"}


def test_the_command_line_renames_an_input_column_named_with_a_slash(tmp_path, capsys):
    """A condition column "treat/ment" of the input: the output (the input plus the results)
    was written with anndata's FutureWarning (an error under anndata 0.13, after training)."""
    cells = _cells(120, seed=0)
    cells.obs["treat/ment"] = np.where(np.arange(cells.n_obs) % 2, "ctrl", "stim")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cells.write_h5ad(tmp_path / "cells.h5ad")
    out = tmp_path / "out.h5ad"
    argv = ["fit", str(tmp_path / "cells.h5ad"), "--model", "cgmdvae", "--out", str(out)]
    argv += ["--condition-key", "treat/ment", "--n-clusters", "3", "--epochs", "2"]
    assert main([*argv, "--layer", "counts", "--threads", "1", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert "obs columns of the input renamed: 'treat/ment' -> 'treat-ment'" in printed
    assert "(so --condition-key 'treat-ment')" in printed
    assert "condition mixing (treat-ment)" in printed  # the report reads the renamed column
    result = ad.read_h5ad(out)
    assert "treat-ment" in result.obs and "treat/ment" not in result.obs
    assert list(result.obs["treat-ment"]) == list(cells.obs["treat/ment"])
