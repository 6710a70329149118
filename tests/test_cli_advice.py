"""``deltavae fit``'s advice to change the data (NaN labels, float labels, unused categories):
a ``python -c`` command on the command's own file, which a shell user can run, writing a
corrected copy that the next run takes; never a Python statement on an ``adata`` they lack."""

import hashlib
import re
import shlex
import sys
import warnings

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from _shell_advice import COMMAND, run_advised
from scipy import sparse

matplotlib.use("Agg")

import deltavae as dv  # noqa: E402
from deltavae._cli_flags import _as_flags  # noqa: E402
from deltavae.cli import main  # noqa: E402

#: The Python running the tests, which the advice names to run its commands.
PY = shlex.quote(sys.executable)
#: A Python statement that changes an AnnData, as the models' advice gives it.
STATEMENT = re.compile(r"(?<![\w.\"'])(adata|reference)(\.obs\[[^\]]+\])? = ")


def _md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("deltavae: error: "), err
    return lines[0]


def _run_advice(message: str) -> str:
    """Run the ``python -c`` command of ``message`` as a shell user would, in a shell whose
    ``python`` has no anndata (:func:`_shell_advice.run_advised`); the Python statements it
    carries are all inside that command."""
    found = COMMAND.search(message)
    assert found, message
    assert not STATEMENT.search(COMMAND.sub("", message)), message
    return run_advised(message)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Cells whose labels miss a third, as names (``ct``) and as integers read back as floats
    (``ct_int``), whose donors miss a fifth, and a column with a category no cell carries."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    known = np.arange(adata.n_obs) % 3 != 0
    adata.obs["ct"] = adata.obs["cluster"].astype(str).where(known)
    adata.obs["ct_int"] = adata.obs["cluster"].cat.codes.astype(float).where(known)
    adata.obs["donor"] = (
        pd.Series(np.arange(adata.n_obs) % 2, index=adata.obs_names)
        .map({0: "d1", 1: "d2"})
        .where(np.arange(adata.n_obs) % 5 != 0)
    )
    adata.obs["ghost"] = pd.Categorical(
        adata.obs["cluster"].astype(str), categories=["0", "1", "ghost"]
    )
    path = tmp_path_factory.mktemp("labelled") / "cells.h5ad"
    adata.write_h5ad(path)
    return path


def _fit(path, tmp_path, *options) -> int:
    argv = ["fit", str(path), "--model", "cgmdvae", "--layer", "counts", "--epochs", "1"]
    return main(
        [*argv, "--no-plots", "--threads", "1", "--out", str(tmp_path / "o.h5ad"), *options]
    )


def test_missing_labels_are_fixed_by_a_command_on_the_input(labelled, tmp_path, capsys):
    """The advice was `adata.obs['ct'] = adata.obs['ct'].astype(str).where(...)`: Python on an
    AnnData the shell user never holds. Now a command that writes a fixed copy of INPUT, and
    the run on that copy trains."""
    path = tmp_path / "cells.h5ad"
    path.write_bytes(labelled.read_bytes())
    before = _md5(path)
    assert _fit(path, tmp_path, "--labels-key", "ct") == 2
    err = _error(capsys)
    assert "missing values (NaN)" in err and "--unlabeled-category" in err
    fixed = tmp_path / "cells_fixed.h5ad"
    assert f"then run deltavae fit on {str(fixed)!r}, or drop them." in err
    _run_advice(err)
    assert _md5(path) == before and not (tmp_path / "o.h5ad").exists()
    assert (ad.read_h5ad(fixed).obs["ct"] == "Unknown").sum() == 20
    assert _fit(fixed, tmp_path, "--labels-key", "ct") == 0


def test_missing_labels_are_marked_with_the_unlabelled_category_given(labelled, tmp_path, capsys):
    """With --unlabeled-category unassigned the command wrote 'Unknown', which the next run
    with the same flags refused as no mark of unlabelled cells."""
    path = tmp_path / "cells.h5ad"
    path.write_bytes(labelled.read_bytes())
    options = ["--labels-key", "ct", "--unlabeled-category", "unassigned"]
    assert _fit(path, tmp_path, *options) == 2
    err = _error(capsys)
    assert f"unlabelled (as 'unassigned', the --unlabeled-category given): {PY} -c " in err
    _run_advice(err)
    fixed = tmp_path / "cells_fixed.h5ad"
    assert (ad.read_h5ad(fixed).obs["ct"] == "unassigned").sum() == 20
    assert _fit(fixed, tmp_path, *options) == 0


# 2 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_missing_integer_labels_get_an_integer_mark_and_its_flag(labelled, tmp_path, capsys):
    """The advice named `unlabeled_category=-1` as `--unlabeled-category=-1` beside Python."""
    path = tmp_path / "cells.h5ad"
    path.write_bytes(labelled.read_bytes())
    assert _fit(path, tmp_path, "--labels-key", "ct_int") == 2
    err = _error(capsys)
    rest = _run_advice(err)
    assert "and pass --unlabeled-category -1 (or drop them)" in rest
    fixed = tmp_path / "cells_fixed.h5ad"
    assert (ad.read_h5ad(fixed).obs["ct_int"] == -1).sum() == 20
    assert _fit(fixed, tmp_path, "--labels-key", "ct_int", "--unlabeled-category", "-1") == 0


# 2 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_missing_batches_are_filled_by_a_command_on_the_input(labelled, tmp_path, capsys):
    """NaN in --batch-key was told "fill them with a value of their own or drop those cells",
    which says neither how nor where."""
    argv = ["fit", str(labelled), "--model", "zinbvae", "--batch-key", "donor", "--epochs", "1"]
    argv += ["--no-plots", "--threads", "1", "--out", str(tmp_path / "o.h5ad")]
    assert main(argv) == 2
    err = _error(capsys)
    assert f"12 missing values (NaN); fill them with a value of their own, e.g. {PY} -c " in err
    assert err.endswith(", or drop those cells.")
    _run_advice(err)
    fixed = labelled.with_name("cells_fixed.h5ad")
    assert (ad.read_h5ad(fixed).obs["donor"] == "missing").sum() == 12
    argv[1] = str(fixed)
    assert main(argv) == 0


def test_an_unused_category_warning_gives_the_command_not_setup_anndata(labelled, tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert _fit(labelled, tmp_path, "--labels-key", "ghost", "--n-clusters", "3") == 0
    err = capsys.readouterr().err
    (warning,) = [line for line in err.splitlines() if "no cell carries" in line]
    assert "setup_anndata" not in warning and f"Drop them: {PY} -c " in warning
    _run_advice(warning)
    fixed = ad.read_h5ad(labelled.with_name("cells_fixed.h5ad"))
    assert list(fixed.obs["ghost"].cat.categories) == ["0", "1"]


@pytest.fixture(scope="module")
def spatial(tmp_path_factory):
    """Pseudo-spots and their reference, whose labels ``ct`` miss a quarter and ``one`` hold
    a single cell type."""
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=30, n_clusters=3, seed=0)
    spots, reference = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=30, cells_per_spot=(2, 6), seed=1
    )
    del spots.uns["pseudo_spots"]
    reference.obs["ct"] = (
        reference.obs["cluster"].astype(str).where(np.arange(reference.n_obs) % 4 != 0)
    )
    reference.obs["one"] = "T cell"
    folder = tmp_path_factory.mktemp("spatial")
    spots.write_h5ad(folder / "spots.h5ad")
    reference.write_h5ad(folder / "ref.h5ad")
    return folder / "spots.h5ad", folder / "ref.h5ad"


def _deconvolve(spots, tmp_path, *options) -> int:
    argv = ["fit", str(spots), "--model", "nmfdeconv", "--epochs", "2", "--no-plots"]
    return main([*argv, "--threads", "1", "--out", str(tmp_path / "p.h5ad"), *options])


# 2 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_missing_reference_labels_are_fixed_by_a_command_on_the_reference(
    spatial, tmp_path, capsys
):
    """NMFDeconv's reference: `reference = reference[reference.obs[...].notna()].copy()`."""
    spots, reference = spatial
    ref = tmp_path / "ref.h5ad"
    ref.write_bytes(reference.read_bytes())
    assert _deconvolve(spots, tmp_path, "--reference", str(ref), "--labels-key", "ct") == 2
    err = _error(capsys)
    fixed = tmp_path / "ref_fixed.h5ad"
    assert f"then pass --reference {str(fixed)!r}." in err
    _run_advice(err)
    assert ad.read_h5ad(fixed).obs["ct"].notna().all()
    assert _deconvolve(spots, tmp_path, "--reference", str(fixed), "--labels-key", "ct") == 0


def test_a_reference_of_one_cell_type_names_the_flag_to_change(spatial, tmp_path, capsys):
    """It said "deconvolution needs at least 2", without a full stop or what to do."""
    spots, reference = spatial
    assert _deconvolve(spots, tmp_path, "--reference", str(reference), "--labels-key", "one") == 2
    assert _error(capsys).endswith(
        "has 1 cell type(s), and the model needs at least 2: pass as --labels-key a column of "
        "two or more cell types."
    )


def test_a_change_to_the_data_is_quoted_for_the_shell_and_runs(tmp_path):
    """A label with a $ is kept from the shell (shlex's quotes); a zarr store is read and
    written as one; without a file the advice names the placeholders of --help."""
    from deltavae._cli_flags import advice_files

    adata = ad.AnnData(np.ones((2, 1)), obs=pd.DataFrame({"t": ["a$b", None]}, index=["x", "y"]))
    adata.write_zarr(tmp_path / "in.zarr")
    note = "mark them: adata.obs['t'] = adata.obs['t'].astype(str).where(adata.obs['t'].notna(), "
    note += "'c$d'), or drop them."
    with advice_files(str(tmp_path / "in.zarr")):
        message = _as_flags(note)
    assert f"then run deltavae fit on {str(tmp_path / 'in_fixed.zarr')!r}, or" in message
    _run_advice(message)
    assert list(ad.read_zarr(tmp_path / "in_fixed.zarr").obs["t"]) == ["a$b", "c$d"]
    assert "read_h5ad('REFERENCE.h5ad')" in _as_flags("reference = reference[:5].copy().")


def test_repeated_gene_names_are_made_unique_by_a_command(tmp_path, capsys):
    """It said "make them unique (adata.var_names_make_unique())", a call on an object the
    shell user does not hold."""
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    adata.var_names = [f"g{i % 15}" for i in range(adata.n_vars)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # anndata's, of the repeated names
        adata.write_h5ad(tmp_path / "genes.h5ad")
        argv = ["fit", str(tmp_path / "genes.h5ad"), "--model", "zinbvae", "--epochs", "1"]
        assert main([*argv, "--no-plots", "--out", str(tmp_path / "o.h5ad")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"make them unique ({PY} -c " in err
    _run_advice(err)
    assert ad.read_h5ad(tmp_path / "genes_fixed.h5ad").var_names.is_unique


# 3.2 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_cells_without_counts_are_dropped_by_a_command(tmp_path, capsys):
    """The warning ended "consider sc.pp.filter_cells(adata, min_counts=1)"; a reference's
    "Drop them first: sc.pp.filter_cells(reference, min_counts=1)" names the reference."""
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    counts = adata.X.toarray()
    counts[:3] = 0
    adata.X = sparse.csr_matrix(counts)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    argv = ["fit", str(tmp_path / "cells.h5ad"), "--model", "zinbvae", "--epochs", "1"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main([*argv, "--no-plots", "--out", str(tmp_path / "o.h5ad")]) == 0
    (warning,) = [line for line in capsys.readouterr().err.splitlines() if "all zeros" in line]
    assert f"consider {PY} -c " in warning and "sc.pp.filter_cells(adata, min_counts=1)" in warning
    _run_advice(warning)
    assert ad.read_h5ad(tmp_path / "cells_fixed.h5ad").n_obs == 47
    from deltavae._cli_flags import advice_files

    with advice_files("spots.h5ad", "cells.h5ad"):
        note = _as_flags("Drop them first: sc.pp.filter_cells(reference, min_counts=1).")
    assert note.endswith(
        "reference.write_h5ad('cells_fixed.h5ad')\", then pass --reference 'cells_fixed.h5ad'."
    )


def test_the_csc_and_uncounted_commands_keep_a_dollar_in_a_path_from_the_shell():
    """The CSC and uncounted-genes commands (and --backed's layer one, built by the same
    python_command now) were put in double quotes as they were: a path with $
    (runs/$x/c.h5ad) was expanded by the shell to another file."""
    from deltavae import _cli_models

    path = "runs/$x/c.h5ad"
    note = "2 genes are 0 in every spot: ..., so the model leaves them out of the fit"
    messages = [
        _cli_models._csc_advice(path, "counts"),
        _cli_models._uncounted_advice(note + _cli_models._UNCOUNTED_ADVICE + " ...", path, None),
    ]
    for message in messages:
        found = COMMAND.search(message)
        assert found[1] == shlex.quote(sys.executable), message
        assert found[2].startswith("'import anndata"), message
        (code,) = shlex.split(found[2])
        assert repr(path) in code


# 3.5 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_empty_cells_and_genes_of_a_layer_are_dropped_on_that_layer(tmp_path, capsys):
    """With --layer the advice filtered on X (sc.pp.filter_cells(adata, min_counts=1)): X
    scaled kept the empty cells and dropped others. And the genes' command, of a second
    warning, wrote INPUT_fixed.h5ad from INPUT again, undoing the cells' command."""
    adata = dv.datasets.synthetic_counts(n_cells=50, n_genes=20, n_clusters=2, seed=0)
    counts = adata.layers["counts"].toarray()
    counts[:3], counts[:, :2] = 0, 0
    adata.layers["counts"] = sparse.csr_matrix(counts)
    adata.X = np.asarray(counts, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scanpy's, of the cells without counts
        sc.pp.normalize_total(adata)
        sc.pp.log1p(adata)
        sc.pp.scale(adata)  # empty cells are no longer zero in X
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    before = _md5(path)
    argv = ["fit", str(path), "--model", "zinbvae", "--layer", "counts", "--epochs", "1"]
    argv += ["--no-plots", "--threads", "1", "--out", str(tmp_path / "o.h5ad")]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    (cells,) = [line for line in err if "3 cells in adata.layers['counts'] are all zeros" in line]
    (genes,) = [line for line in err if "2 genes in adata.layers['counts'] are zero" in line]
    assert "(with the change advised before)" in genes
    for line in (cells, genes):  # each as told, in order
        _run_advice(line)
    fixed = ad.read_h5ad(tmp_path / "cells_fixed.h5ad")
    assert fixed.shape == (47, 18) and _md5(path) == before
    assert list(fixed.obs_names) == list(adata.obs_names[3:])
    assert (fixed.layers["counts"].sum(1) > 0).all() and (fixed.layers["counts"].sum(0) > 0).all()
    argv[1] = str(tmp_path / "cells_fixed.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        assert main([*argv, "--overwrite"]) == 0
    assert "zero" not in capsys.readouterr().err


# 6-7 s: in the slow stage, so that the default run stays under 6 minutes
@pytest.mark.slow
def test_two_changes_of_one_message_write_one_copy_with_both(labelled, tmp_path):
    """A note with two changes gave two commands that each read INPUT and wrote
    INPUT_fixed.h5ad: run in order, the second undid the first. Now the second makes both;
    an alternative ("..., or ...") stays the one change."""
    from deltavae._cli_flags import advice_files

    path = tmp_path / "cells.h5ad"
    path.write_bytes(labelled.read_bytes())
    note = (
        "Drop the first cells: adata = adata[5:].copy(). Their labels are missing; mark them: "
        "adata.obs['ct'] = adata.obs['ct'].astype(str).where(adata.obs['ct'].notna(), 'U')."
    )
    with advice_files(str(path)):
        message = _as_flags(note)
    assert len(COMMAND.findall(message)) == 2
    rest = _run_advice(message)
    assert rest.startswith(", then run deltavae fit on ")
    _run_advice(rest)
    fixed = ad.read_h5ad(tmp_path / "cells_fixed.h5ad")
    assert fixed.n_obs == 55 and (fixed.obs["ct"] == "U").sum() == 18
    with advice_files(str(path)):
        either = _as_flags(
            "mark them: adata.obs['ct'] = adata.obs['ct'].astype(str).where(adata.obs['ct']"
            ".notna(), 'U'), or drop them: "
            "adata = adata[adata.obs['ct'].notna()].copy()."
        )
    rest = _run_advice(either)
    assert (ad.read_h5ad(tmp_path / "cells_fixed.h5ad").obs["ct"] == "U").sum() == 20
    _run_advice(rest)
    fixed = ad.read_h5ad(tmp_path / "cells_fixed.h5ad")
    assert fixed.n_obs == 40 and "(with the" not in either


def _imputer_fit(spots, cells, ref, tmp_path, *more) -> list[str]:
    """The arguments of a one-epoch imputer fit of the first 20 genes of the ``spots`` file
    (written to tmp_path) on ``cells``, written to ``ref``; ``more``: further flags."""
    cells.write_h5ad(ref)
    panel = tmp_path / "panel.h5ad"
    ad.read_h5ad(spots)[:, :20].copy().write_h5ad(panel)
    argv = ["fit", str(panel), "--model", "imputer", "--reference", str(ref), "--epochs", "1"]
    return [*argv, "--labels-key", "cluster", *more, "--no-plots", "--threads", "1"]


# 3.4 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_reference_genes_without_counts_are_left_out_of_the_results_by_a_command(
    spatial, tmp_path, capsys
):
    """The imputer's note on reference genes no cell counts told a shell user to leave them
    out 'of impute()' by dropping them 'before from_reference', two Python calls the command
    makes for them: it names what they read (obsm['imputed']) and the command that drops the
    genes from the --reference file."""
    spots, reference = spatial
    cells = ad.read_h5ad(reference)
    counts = cells.X.toarray() if sparse.issparse(cells.X) else np.array(cells.X)
    counts[:, -3:] = 0  # three reference genes no cell counts, imputed (the spots lack them)
    cells.X = sparse.csr_matrix(counts)
    del cells.layers["counts"]
    ref = tmp_path / "ref.h5ad"
    argv = _imputer_fit(spots, cells, ref, tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main([*argv, "--out", str(tmp_path / "i.h5ad")]) == 0
    err = capsys.readouterr().err.splitlines()
    (line,) = [line for line in err if "have no counts in the reference" in line]
    assert "impute()" not in line and "from_reference" not in line, line
    assert "to leave them out of obsm['imputed'], drop them from the reference: " in line
    fixed = tmp_path / "ref_fixed.h5ad"
    assert line.endswith(f"then pass --reference {str(fixed)!r}."), line
    _run_advice(line)
    assert ad.read_h5ad(fixed).n_vars == cells.n_vars - 3
    argv[argv.index(str(ref))] = str(fixed)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)
        assert main([*argv, "--out", str(tmp_path / "j.h5ad")]) == 0
    assert "have no counts in the reference" not in capsys.readouterr().err
    assert ad.read_h5ad(tmp_path / "j.h5ad").obsm["imputed"].shape[1] == 10 - 3


# 3.5 s: in the slow stage (CI runs it too), so that the default run stays under 6 minutes.
@pytest.mark.slow
def test_empty_reference_cells_and_genes_are_dropped_on_the_reference_layer(
    spatial, tmp_path, capsys
):
    """With --reference-layer the commands filtered the reference on X (scanpy's
    filter_cells/filter_genes(reference, min_counts=1)): on a scaled X, whose genes sum to
    about 0, filter_genes dropped every gene (a 201 x 150 reference came out 201 x 0). They
    now drop the cells and genes without counts in that layer, one copy with both."""
    spots, reference = spatial
    cells = ad.read_h5ad(reference)
    counts = cells.layers["counts"].toarray()
    counts[:2], counts[:, -3:] = 0, 0  # two cells and three imputed genes without counts
    cells.layers["counts"] = sparse.csr_matrix(counts)
    cells.X = counts.astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # scanpy's, of the cells without counts
        sc.pp.normalize_total(cells)
        sc.pp.log1p(cells)
        sc.pp.scale(cells)  # X's genes sum to about 0
    ref = tmp_path / "ref.h5ad"
    argv = _imputer_fit(spots, cells, ref, tmp_path, "--reference-layer", "counts")
    argv += ["--out", str(tmp_path / "i.h5ad")]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert main(argv) == 0
    err = capsys.readouterr().err.splitlines()
    (empty,) = [line for line in err if "reference cells have no counts" in line]
    (silent,) = [line for line in err if "have no counts in the reference" in line]
    for line in (empty, silent):
        assert "filter_" not in line and "layers['counts']" in line, line
        _run_advice(line)
    fixed = ad.read_h5ad(tmp_path / "ref_fixed.h5ad")
    assert fixed.shape == (cells.n_obs - 2, cells.n_vars - 3)
    assert list(fixed.obs_names) == list(cells.obs_names[2:])
    assert list(fixed.var_names) == list(cells.var_names[:-3])


def test_labels_no_cell_carries_are_told_as_such_not_as_clusters_to_train(
    labelled, tmp_path, capsys
):
    """A label category no cell carries: the refusal of fewer clusters ended 'then run
    deltavae fit on ..., then call setup_anndata again', and the report's empty cluster of
    that label advised more epochs or fewer clusters (--n-clusters 2, which is refused)."""
    assert _fit(labelled, tmp_path, "--labels-key", "ghost", "--n-clusters", "2") == 2
    refusal = _error(capsys)
    assert "setup_anndata" not in refusal and refusal.endswith("cells_fixed.h5ad'."), refusal
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert _fit(labelled, tmp_path, "--labels-key", "ghost", "--n-clusters", "3") == 0
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("empty clusters")]
    assert "(ghost: labels no cell carries in --labels-key 'ghost': drop those" in line, line
    assert "--n-clusters" not in line, line  # a label's cluster: more clusters than labels


def test_few_labelled_cells_are_checked_in_the_results_not_by_a_python_call(tmp_path, capsys):
    """Few-label training's note told a shell user to 'Check the names (model.predict())'."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    labels = pd.Series("Unknown", index=adata.obs_names)
    labels.iloc[:2] = adata.obs["cluster"].astype(str).iloc[:2]  # 2 labelled cells at most
    adata.obs["few"] = labels
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert _fit(path, tmp_path, "--labels-key", "few", "--n-clusters", "2") == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "fewer than 3 cells labelled" in x]
    assert "predict()" not in line and "(obs['cgmdvae_cluster'] of --out)" in line, line


def test_a_run_blown_up_names_the_default_rate_and_its_verdict_as_the_cli_prints_them(
    tmp_path, capsys
):
    """CGMDVAE semi-supervised at --lr 0.5, every cell training: the verdict ended 'e.g. the
    model's default lr=0.001' (a Python argument), and a note on labels never predicted
    pointed to 'this run's NotConvergedWarning', a class the command's report never shows."""
    adata = dv.datasets.synthetic_counts(
        n_cells=100, n_genes=30, n_clusters=3, n_conditions=1, seed=0
    )
    labels = adata.obs["cluster"].astype(str).to_numpy().copy()
    labels[::3] = "unknown"
    adata.obs["label"] = labels
    path = tmp_path / "cells.h5ad"
    adata.write_h5ad(path)
    options = ["--labels-key", "label", "--unlabeled-category", "unknown", "--lr", "0.5"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # shown as a shell shows it, not raised
        assert _fit(path, tmp_path, *options, "--train-size", "1", "--epochs", "20") == 0
    out = capsys.readouterr().out
    (verdict,) = [line for line in out.splitlines() if "went unstable" in line]
    assert verdict.endswith("e.g. the model's default --lr 0.001."), verdict
    # The note of labels never predicted, as this run of the model gives it (n_hidden=8, which
    # no flag sets: tests/test_one_verdict.py), reported by the command through _as_flags.
    adata.obs["label"] = labels
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="unknown")
    model = dv.model.CGMDVAE(adata, n_latent=2, n_hidden=8)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        model.train(max_epochs=20, lr=0.5, train_size=1.0, enable_progress_bar=False)
    (note,) = [str(w.message) for w in said if "never predicted" in str(w.message)]
    assert "NotConvergedWarning" in note, note
    assert "converge: the warning on this run's training says what to change." in _as_flags(note)
