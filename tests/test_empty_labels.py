"""Empty labels ("", a table's empty cells or ``fillna("")``) read as a mark of unlabelled
cells where they would otherwise train as a cell type of their own."""

import re

import numpy as np
import pandas as pd
import pytest

import deltavae as dv

SMALL = {"n_latent": 4, "n_latent_w": 2, "n_hidden": 16}


def _cells(mark):
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    labelled = np.arange(60) % 3 == 0
    adata.obs["type"] = np.where(labelled, adata.obs["cluster"].astype(str), mark)
    return adata


def test_an_empty_label_is_said_to_train_as_a_cell_type():
    """Two thirds of the cells labelled "" trained as a cell type '' (label_names ['', '0',
    '1']) without a word, while 'unknown' or 'NA' in its place were warned of."""
    adata = _cells("")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    with pytest.warns(UserWarning, match="The labels hold '', which is trained as a cell type"):
        model = dv.model.CGMDVAE(adata, **SMALL)
    assert model.label_names == ["", "0", "1"]  # as asked: the warning says how to mark them
    # Named as the mark, they are unlabelled; a mark given that no cell carries names "".
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="")
    assert dv.model.CGMDVAE(adata, **SMALL).label_names == ["0", "1"]
    with pytest.raises(ValueError, match="It holds '': .* pass unlabeled_category=''"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="Unknown")


@pytest.mark.parametrize("mark", ["Unclassified", "n.a.", "--", "None", "nan", "unlabeled"])
def test_placeholder_marks_are_said_to_train_as_a_cell_type(mark):
    """'Unclassified' (a classifier's word for a cell it gave no type), 'n.a.' and '--'
    trained as a cell type of their own without a word, while 'unassigned', 'n/a' and '-'
    were warned of; the strings 'None' and 'nan' (a column of None or NaN made text by
    astype(str)) and 'unlabeled' are warned of too."""
    adata = _cells(mark)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    with pytest.warns(UserWarning, match=f"The labels hold '{re.escape(mark)}', which is trained"):
        dv.model.CGMDVAE(adata, **SMALL)


@pytest.mark.parametrize("mark", [np.nan, pd.NA, float("nan")])
def test_a_missing_value_as_the_mark_is_refused_with_the_line_that_works(mark):
    """scANVI users leave unlabelled cells NaN (obs["cell_type"].where(mask)); passing
    unlabeled_category=np.nan was told to write 'Unknown' into the column, and after doing
    so, refused again: "unlabeled_category=nan does not occur in adata.obs['type']"."""
    adata = dv.datasets.synthetic_counts(n_cells=60, n_genes=20, n_clusters=2, seed=0)
    adata.obs["type"] = adata.obs["cluster"].where(np.arange(60) % 3 == 0)
    with pytest.raises(ValueError, match="a missing value is no category") as err:
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category=mark)
    line = str(err.value).split("pass it: ")[1].split(", then ")[0]
    exec(line, {"adata": adata})  # the line runs, and the setup it names takes the column
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="Unknown")
    assert dv.model.CGMDVAE(adata, **SMALL).label_names == ["0", "1"]
    # Integer labels with NaN: the integer mark's advice, as without a mark.
    adata.obs["code"] = adata.obs["cluster"].astype(int).where(np.arange(60) % 3 == 0)
    with pytest.raises(ValueError, match="among integer labels"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="code", unlabeled_category=mark)


@pytest.mark.parametrize(
    "mark", ["?", "-", "NA ", "n/a", "None", "unassigned", "Undetermined", "not assigned"]
)
def test_a_placeholder_mark_is_said_to_train_as_a_cell_type(mark):
    """Cells labelled '?', '-', 'Undetermined' or 'not assigned' (a spreadsheet's open cell,
    an annotation tool's word for no type) trained as a cell type of their own without a
    word, while 'unknown' was warned of; each is now read as a mark of unlabelled cells."""
    adata = _cells(mark)
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    shown = re.escape(repr(mark))
    with pytest.warns(UserWarning, match=f"The labels hold {shown}, which is trained as"):
        dv.model.CGMDVAE(adata, **SMALL)
    with pytest.raises(ValueError, match=f"It holds {shown}: .* unlabeled_category={shown}"):
        dv.model.CGMDVAE.setup_anndata(adata, labels_key="type", unlabeled_category="Unknown")


def test_a_real_class_of_cells_is_no_mark():
    """'doublet' or 'other' name what cells were found to be: trained as such, not warned."""
    import warnings

    adata = _cells("doublet")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="type")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        assert "doublet" in dv.model.CGMDVAE(adata, **SMALL).label_names
