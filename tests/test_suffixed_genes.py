"""Gene symbols with an Ensembl ID appended (muscat's CD79A_ENSG00000105369, Rpl7_ENSMUSG...)
on one side only: from_reference said only "use the same gene identifiers"."""

import numpy as np
import pytest

import deltavae as dv
from deltavae.model._gene_advice import RENAMING, identifier_advice


def test_identifier_advice_names_the_appended_ids_and_the_line_that_strips_them():
    ids = ["Rpl7_ENSMUSG00000043716", "Gad1_ENSMUSG00000070880", "Sst_ENSMUSG00000004366"]
    for first, second in ((["Rpl7", "Gad1", "Sst"], ids), (ids, ["Rpl7", "Gad1", "Vip"])):
        advice = identifier_advice(first, second)
        assert advice.startswith(RENAMING), advice
        assert "'Rpl7' is 'Rpl7_ENSMUSG00000043716'" in advice, advice
        assert "var_names.str.replace(" in advice, advice
    assert identifier_advice(["Gad1"], ["ENSMUSG00000070880"]).startswith("Use the same")


def test_from_reference_says_the_spots_genes_carry_ensembl_ids():
    cells = dv.datasets.synthetic_counts(n_cells=60, n_genes=12, n_clusters=2, seed=0)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=10, seed=0)
    spots = spots.copy()
    spots.var_names = [f"{g}_ENSMUSG{100000 + i:011d}" for i, g in enumerate(spots.var_names)]
    with pytest.raises(ValueError, match=r"share no genes\. Without the Ensembl IDs appended"):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster")
    assert np.all(spots.var_names.str.contains("_ENSMUSG"))  # the spots are left as they were
