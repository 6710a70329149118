"""deconvolution_scores' cell types: pred's types the truth lacks are named, not dropped
without a word; tables sharing no type are refused as such."""

import numpy as np
import pandas as pd
import pytest

from deltavae.metrics import deconvolution_scores, imputation_scores


def _true():
    rng = np.random.default_rng(0)
    return pd.DataFrame(rng.dirichlet([1, 1, 1], size=30), columns=["A", "B", "C"])


@pytest.mark.parametrize("share", [0.0, 1e-4])
def test_pred_types_the_truth_lacks_are_named_however_small(share):
    """A predicted type the truth lacks holding under 0.1% of a spot (a type absent from the
    tissue, or named otherwise) was left out of the scores silently."""
    true = _true()
    pred = true.assign(Bcell=share)
    with pytest.warns(UserWarning, match=r"true lacks \(\['Bcell'\]\), 0.0% .*over the 3 types"):
        scores = deconvolution_scores(true, pred)
    assert list(scores.index) == ["A", "B", "C"]


def test_tables_sharing_no_type_are_refused_as_such():
    true = _true()
    with pytest.raises(KeyError, match=r"share no cell type.*\('A': did you mean 'a'\?\)"):
        deconvolution_scores(true, true.set_axis(["a", "b", "c"], axis=1))
    with pytest.raises(KeyError, match=r"^\"pred lacks the cell types \['C'\]"):
        deconvolution_scores(true, true.set_axis(["A", "B", "D"], axis=1))


def test_imputed_genes_beyond_the_truth_are_scored_quietly(recwarn):
    """Imputations of every gene scored on the held-out ones: not a dropped type."""
    rng = np.random.default_rng(1)
    true = pd.DataFrame(rng.poisson(3, (20, 2)).astype(float), columns=["g1", "g2"])
    pred = true.assign(g3=1.0) + rng.normal(0, 0.1, (20, 3))
    imputation_scores(true, pred)
    assert not [w for w in recwarn if "lacks" in str(w.message)]
