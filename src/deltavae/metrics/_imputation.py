"""Gene imputation accuracy, as the spatial-integration benchmark of Li et al. (Nat. Methods 2022).

True and imputed expression are spots x genes. Every score compares one gene's column across
spots, after the per-gene normalisation Li et al. use for it: Pearson correlation (PCC) on
the values as given; structural similarity (SSIM) on columns scaled to [0, 1] by their
maximum; root mean squared error (RMSE) on z-scored columns, so that a gene's level and
spread do not count, only its pattern; and the Jensen-Shannon distance (base 2, the square
root of the divergence, as :func:`scipy.spatial.distance.jensenshannon`) between the columns
normalised to distributions over spots. Li et al. report the JS divergence (natural log),
``jsd ** 2 * np.log(2)``; the distance keeps the scale of :func:`deltavae.metrics.jsd`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._deconvolution import (
    _aligned,
    _as_frame,
    _constant,
    _jsd,
    _pcc,
    _ssim,
    _unit,
    _warn_negative,
)
from ._missing import type_hint, warn_uninformative


def _rmse_z(t: np.ndarray, p: np.ndarray) -> float:
    if _constant(t) or _constant(p):  # no pattern to z-score: as undefined as the PCC
        return float("nan")
    t, p = _unit(t), _unit(p)  # z-scores are scale-free; a std of 1e200 values overflowed
    return float(np.sqrt(np.mean(((t - t.mean()) / t.std() - (p - p.mean()) / p.std()) ** 2)))


def _gene_frames(true, pred) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both tables with the true table's spots and genes; genes matched by name (an array
    ``true`` takes a DataFrame ``pred``'s names)."""
    if isinstance(pred, pd.DataFrame) and not isinstance(true, pd.DataFrame):
        true = _as_frame(true, "true")
        if true.shape != pred.shape:
            raise ValueError(
                f"true has shape {true.shape} but pred has shape {pred.shape}: an array true "
                "is read in pred's layout (its spots and genes); pass true as a DataFrame."
            )
        true = pd.DataFrame(true.to_numpy(), index=pred.index, columns=pred.columns)
    true = _as_frame(true, "true")
    if not isinstance(pred, pd.DataFrame):
        pred = _as_frame(pred, "pred").to_numpy()  # names a sparse matrix or an AnnData
        if pred.shape != true.shape:
            raise ValueError(f"true has shape {true.shape} but pred has shape {pred.shape}")
    else:
        missing = true.columns.difference(pred.columns)
        if len(missing):
            # 0 against '0' first: a RangeIndex of spots holds 0, 1, ... too.
            hint = type_hint(missing, pred.columns)
            if not hint and missing.isin(pred.index).all():  # genes x spots, as some tools
                hint = (
                    ": pred has them as rows, so one of the tables is genes x spots; pass it "
                    "transposed (.T), both spots x genes"
                )
            raise KeyError(
                f"pred lacks {len(missing)} of the true genes (e.g. {missing[:5].tolist()})" + hint
            )
    return _aligned(true, pred, values="values")


def imputation_scores(true, pred) -> pd.DataFrame:
    """Per-gene imputation scores: PCC, SSIM, RMSE and JS distance across spots.

    Each compares one gene's column across spots, normalised as Li et al. (Nat. Methods
    2022) do for that score: the Pearson correlation of the values as given; SSIM (one
    window, ``C1 = 0.01^2``, ``C2 = 0.03^2``, as :func:`deltavae.metrics.ssim`) of the
    columns divided by their maxima; the RMSE of the z-scored columns (population standard
    deviation, as :func:`scipy.stats.zscore`); the Jensen-Shannon distance (base 2, as
    :func:`scipy.spatial.distance.jensenshannon`) of the columns divided by their sums, so
    distributions over spots. Li et al. report the divergence in natural log,
    ``jsd ** 2 * np.log(2)``.

    Parameters
    ----------
    true
        Measured expression, spots x genes (a DataFrame, or an array in ``pred``'s layout).
    pred
        Imputed expression: a DataFrame with at least ``true``'s genes (matched by name,
        extra genes ignored) and the same spots, or an array of ``true``'s shape. Spots whose
        row is all NaN (``SpatialImputer.impute``'s spots without counts) are left out, with
        a warning counting them.

    Returns
    -------
    pandas.DataFrame
        Index: genes. Columns ``pcc`` (higher is better), ``ssim`` (higher), ``rmse`` (lower;
        on z-scored genes, so 0 to 2, about 1.41 for an unrelated prediction) and ``jsd``
        (lower, in [0, 1]; negative values are set to 0 for it, with a warning, the other
        scores use them as given). PCC and RMSE are NaN for a gene constant (up to rounding)
        in either table (a constant has no pattern; an RMSE of its zeros would score 1.0,
        better than an unrelated pattern), JSD for a gene that sums to 0 (both warned
        about, naming the genes); take
        ``.median()`` for the benchmark's summary, and count the NaN genes of a prediction
        as failures.

    Examples
    --------
    >>> import numpy as np
    >>> from deltavae.metrics import imputation_scores
    >>> true = np.array([[0.0, 1.0], [1.0, 3.0], [2.0, 2.0]])
    >>> scores = imputation_scores(true, 10 * true)  # each gene's scale does not count
    >>> scores.round(3).to_dict("list")
    {'pcc': [1.0, 1.0], 'ssim': [1.0, 1.0], 'rmse': [0.0, 0.0], 'jsd': [0.0, 0.0]}
    """
    true, pred = _gene_frames(true, pred)
    _warn_negative(true, pred, values="values")
    warn_uninformative(true, pred, ("pcc", "ssim", "rmse", "jsd"), "genes")
    rows = []
    for gene in true.columns:
        t, p = true[gene].to_numpy(), pred[gene].to_numpy()
        rows.append((_pcc(t, p), _ssim(t, p), _rmse_z(t, p), _jsd(t, p)))
    return pd.DataFrame(rows, index=true.columns, columns=["pcc", "ssim", "rmse", "jsd"])
