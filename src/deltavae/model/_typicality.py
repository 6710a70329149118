"""How typical a cell is of the cells CGMDVAE's reference trained on: ``predict_labels``'
``typicality`` column and its ``unknown_below`` flag for cells of a type the reference never saw.

q(y | z, c) gives every cell a reference label with confidence near 1, even a cell of a type
absent from the reference (Kang's NK cells left out of the reference were called CD8 T at
0.99999999). Two scores tell such cells, each where the other fails (:func:`fit_score`):

* how badly the decoder explains the cell's data at its posterior mean of z, under its own
  conditions and library: minus the deviance per UMI (for counts the negative binomial
  deviance, sum over genes of log NB(x; x, theta) - log NB(x; mu, theta); the saturated term
  takes out what the cell's counts alone decide). The frozen encoder puts an NK cell among the
  CD8 T cells, and the decoder draws a CD8 T profile that misses the NK genes;
* how far the encoder puts the cell from the reference's cells: the density of its posterior
  means under the prior given its conditions, log p(z, w | c) = log N(w; 0, I) + log sum_y
  E[d_y] p(z | w, y, c). Held-out B cells land away from every component; NK cells (and
  synthetic types of new marker genes) land inside one and score as typical.

Each score becomes the share of the reference's cells scoring lower, and a cell's
``typicality`` is the share of the reference's validation cells whose smaller share is lower
than its own: in [0, 1], about uniform over cells like the reference's that it did not train on.
Each fit of a model that is not a query model keeps :data:`LEVELS` quantiles of the two scores
over its cells outside the test split, and of the smaller share over its validation cells
(``typicality_record_``, saved; a query model keeps its reference's, which the query's own
training leaves alone: the reference's weights are frozen), scored when first needed. The
cells it trained on fit better than new cells of their types: ranked among all of them, the
reference's own validation cells fell under 0.1 10-15% of the time (benchmarks/README.md,
"Cells of types the reference never saw"). The last step is a monotone map, so the order of
the cells, and the AUROC, are those of the smaller share. With fewer than
:data:`MIN_VALIDATION` validation cells (``train_size=1.0`` leaves none) the map is over the
cells outside the test split too: 101 quantiles of a few dozen cells err more than the fit.
"""

from __future__ import annotations

import logging
import numbers

import numpy as np
import pandas as pd
import torch
from scvi import REGISTRY_KEYS
from torch.distributions import Normal

from .._checks import short_repr
from .._rng import forked_generators
from ..distributions._counts import _EPS  # scvi-tools' epsilon, count_log_prob's
from ._fit_cells import subset_note, subset_since_fit
from ._label_setup import unlabelled_mark
from ._modes import unchecked_distributions
from ._validation import warn_user

logger = logging.getLogger(__name__)

#: Quantiles kept of the reference's cells' scores (at 0, 1/(LEVELS-1), ..., 1).
LEVELS = 101
#: The most cells scored for the record (drawn among more).
MAX_CELLS = 50_000
#: The fewest validation cells the last step (the smaller share to the typicality) is read
#: from; with fewer, it is read from every cell outside the test split, as the scores are.
MIN_VALIDATION = 200
#: The name of :func:`fit_score`'s scores, kept with the quantiles: a record of other scores is
#: not read.
SCORE = "smaller share of minus the deviance per UMI and log p(z, w | c), at the means"
#: A read-out whose share :data:`ATYPICAL_SHARE` or more of its cells (at least
#: :data:`MIN_JUDGED` of them) fall under typicality :data:`ATYPICAL_BELOW` is said to be unlike
#: the reference: the reference's own cells put about 1% there; Kang's stimulated query of the
#: tutorial's control reference (every type known, a condition the reference never saw) 7.8%;
#: a query of other synthetic types, or with 35 of 60 genes filled with zeros, 80-100%.
ATYPICAL_BELOW = 0.01
ATYPICAL_SHARE = 0.5
MIN_JUDGED = 20


def fit_score(module, tensors: dict, inf: dict | None = None) -> torch.Tensor:
    """The two scores of each cell of the minibatch ``tensors`` (see the module), higher for a
    cell more like the reference's, as columns: minus the deviance per UMI (per feature for
    the normal and Bernoulli likelihoods) of its data from the decoder's output at its
    posterior mean of z, its own conditions and library; log p(z, w | c) at its means.
    ``inf``: the module's inference of ``tensors`` (``draw=False``) where the caller ran it
    already (``CGMDVAE._posterior(scores=True)``: one pass for labels and scores)."""
    x, cats = tensors[REGISTRY_KEYS.X_KEY], tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)
    if inf is None:
        inf = module.inference(**module._get_inference_input(tensors), draw=False)
    z, w = inf["qz"].loc, inf["qw"].loc
    observation = module.observation
    # The NB's mean alone for counts: the decoder's dropout head is not read.
    params = module.decode(z, cats, inf["library"], dropout=not observation.is_count)
    if observation.is_count:
        deviance = count_deviance(x, params["mu"], params["theta"]) / x.sum(-1).clamp(min=1.0)
    else:
        at_x = x if observation.name == "normal" else torch.logit(x.clamp(1e-6, 1 - 1e-6))
        best = observation.log_prob({**params, "out": at_x}, x)
        deviance = (observation.log_prob(params, x) - best) / x.shape[-1]
    log_pz = module.prior_distribution(w, cats).log_prob(z.unsqueeze(-2))  # (cells, K)
    alpha = module.alpha.to(log_pz.dtype)
    mixture = torch.logsumexp(log_pz + torch.log(alpha / alpha.sum()), dim=-1)
    density = mixture + Normal(0.0, 1.0).log_prob(w).sum(-1)
    return torch.stack([deviance, density], dim=-1)


def count_deviance(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Per cell, the sum over genes of log NB(x; mu, theta) - log NB(x; x, theta) (``x``
    clamped at 1e-8 as the mean of the second), each density as
    :func:`~deltavae.distributions.count_log_prob` writes it, with scvi-tools' 1e-8 where it
    puts it. Their log-gamma terms, of x and theta alone, are the same and cancel: what is
    left is (theta + x) (log(theta + x + eps) - log(theta + mu + eps)) + x (log(mu + eps) -
    log(x + eps)), the same numbers up to float rounding (the two sums and their difference
    rounded otherwise), without the non-zero counts' search and log-gamma terms (half of
    typicality's cost on the CPU).

    Examples
    --------
    >>> x, mu = torch.tensor([[0.0, 3.0]]), torch.tensor([[1.0, 3.0]])
    >>> count_deviance(x, mu, torch.ones(2)).round(decimals=4)
    tensor([-0.6931])
    """
    dtype = torch.promote_types(mu.dtype, torch.float32)  # as count_log_prob: float32 at least
    x, mu, theta = x.to(dtype), mu.to(dtype), theta.to(dtype)
    at_x = x.clamp(min=_EPS)
    log_fit = (theta + mu).add_(_EPS).log_()
    log_best = (theta + at_x).add_(_EPS).log_()
    ratio = (mu + _EPS).log_().sub_(at_x.add_(_EPS).log_())
    return log_best.sub_(log_fit).mul_(theta + x).add_(ratio.mul_(x)).sum(-1)


@torch.inference_mode()
def fit_scores(model, adata, indices=None, batch_size=None) -> np.ndarray:
    """:func:`fit_score` of the cells ``indices`` of ``adata`` (all for None), in that order."""
    adata = model._validate_anndata(model._resolve_adata(adata))
    loader = model._make_data_loader(adata, indices=indices, batch_size=batch_size)
    with unchecked_distributions():  # brought to the host once (CGMDVAE._posterior)
        scores = [fit_score(model.module, tensors).float() for tensors in loader]
    return torch.cat(scores).cpu().numpy() if scores else np.zeros((0, 2), dtype=np.float32)


def _at_most(rows, n: int = MAX_CELLS) -> np.ndarray:
    """``rows``, sorted, or ``n`` of them where more (quantiles need no more; a fixed draw,
    alike on every run)."""
    rows = np.sort(np.asarray(rows, dtype=np.int64))
    if len(rows) > n:
        rows = np.sort(np.random.default_rng(0).choice(rows, n, replace=False))
    return rows


def record_typicality(model, rows: np.ndarray, validation=None) -> None:
    """After a fit of a model that is not a query model: its cells at ``rows`` (those outside
    the test split) and ``validation`` (its validation cells, None or empty for none) to score
    for ``typicality_record_``, scored when first needed (:func:`settle_record`: by
    ``predict_labels``, ``save`` and ``load_query_data``), not after every fit. A query model
    keeps its reference's record."""
    if model.is_query_model or not len(rows) or not model.is_trained_:
        return
    rows = _at_most(rows)
    held = _at_most(() if validation is None else validation)
    model.typicality_record_ = None
    model._typicality_cells = (model.adata_manager.adata_uuid, rows, held)


def settle_record(model, every_cell: np.ndarray | None = None) -> None:
    """``typicality_record_`` of the last fit's cells (:func:`record_typicality`), if a fit left
    them to score: :data:`LEVELS` quantiles of :func:`fit_score` over its cells outside the
    test split and of the smaller share over its validation cells (over the former where there
    are fewer than :data:`MIN_VALIDATION`), with the score's name and the numbers of cells
    (``cells``, ``calibration_cells``). None where the model reads other cells now
    (``model.adata`` set to another AnnData since, or its AnnData subset in place: warned,
    as the positions recorded are of the cells before the subset), or where its AnnData
    cannot be read now (changed in place: its counts log-normalized, its genes subset;
    warned): ``save`` and ``load_query_data`` need only the weights, as scvi-tools'.
    ``every_cell``: :func:`fit_score` of every cell of the model's AnnData in its order (the
    first ``predict_labels`` scored them all in the pass that labelled them), read at the
    record's cells instead of a pass of their own (65,000 cells of 200,000: 2.7 CPU s). The same
    numbers but where a minibatch of fewer than about 16 cells rounds a cell's networks
    differently (a float32 rounding, 2e-7 of a score; scored alone, the record's cells fall in
    other minibatches)."""
    pending = getattr(model, "__dict__", {}).pop("_typicality_cells", None)
    if pending is None:
        return
    uuid, rows, *rest = pending  # (uuid, rows, validation cells)
    held = rest[0] if rest and len(rest[0]) >= MIN_VALIDATION else rows
    if model.adata is None or model.adata_manager.adata_uuid != uuid:
        return
    subset = subset_since_fit(model)
    if subset is not None:  # its positions are of the cells before the subset
        warn_user(
            f"{subset_note(*subset)}, so the training cells typicality is read against are no "
            "longer known, and typicality is NaN. Read predict_labels before subsetting, or set "
            "the training cells back (model.adata = adata_before_the_subset)."
        )
        return
    if (changed := _changed_since(model)) is not None:
        warn_user(
            "The model's typicality record, read from its training cells, cannot be scored: "
            "its AnnData changed in place since training, so typicality is NaN (of this "
            "model, its saves and its query models). To keep it, call predict_labels or save "
            f"before such a change. What changed: {changed}"
        )
        return
    every = np.union1d(rows, held)  # one pass: the validation cells are among the rows
    if every_cell is not None and len(every_cell) == model.adata.n_obs:
        scores = np.asarray(every_cell)[every].astype(float)
    else:
        # Scored where the user did not ask for a read-out (save, load_query_data): the data
        # loader's draw from torch's random stream would change the next training's.
        with forked_generators(model.device):
            scores = fit_scores(model, model.adata, every).astype(float)
    levels = np.linspace(0.0, 1.0, LEVELS)
    each = np.quantile(scores[np.searchsorted(every, rows)], levels, axis=0)  # (LEVELS, 2)
    smaller = _smaller_share(scores[np.searchsorted(every, held)], each)
    model.typicality_record_ = {
        "score": SCORE,
        "cells": len(rows),
        "calibration_cells": len(held),
        "quantiles": [[float(v) for v in each[:, j]] for j in range(2)],
        "smaller_share": [float(v) for v in np.quantile(smaller, levels)],
    }


def _changed_since(model) -> str | None:
    """Why the model's own AnnData cannot be read now (changed in place since training: its
    counts log-normalized, its genes subset, a column it reads rewritten), or None. save and
    load_query_data need only the weights (scvi-tools' do): they leave the record out rather
    than fail on the cells."""
    from ._genes import check_own_adata

    try:
        check_own_adata(model)
    except (ValueError, KeyError) as err:
        return str(err).strip("'\"")
    return None


def _share(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """The share of cells under each of ``values``, read linearly between their ``quantiles``
    (at evenly spaced levels): 0 under the lowest, 1 over the highest."""
    levels = np.linspace(0.0, 1.0, len(quantiles))
    return np.interp(values, quantiles, levels, left=0.0, right=1.0)


def _smaller_share(scores: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Per cell, the smaller of its two scores' shares (``quantiles``: levels x 2)."""
    return np.minimum(_share(scores[:, 0], quantiles[:, 0]), _share(scores[:, 1], quantiles[:, 1]))


def typicality(model, scores: np.ndarray) -> np.ndarray:
    """The share of the reference's validation cells (see the module) whose smaller share is
    lower than each cell's of ``scores`` (:func:`fit_scores`); NaN for a model that kept no
    record (saved before it kept them)."""
    record = getattr(model, "typicality_record_", None)
    if not record or record.get("score") != SCORE:
        return np.full(len(scores), np.nan, dtype=np.float32)
    quantiles = np.asarray(record["quantiles"], dtype=float).T
    smaller = _smaller_share(np.asarray(scores, dtype=float), quantiles)
    return _share(smaller, np.asarray(record["smaller_share"])).astype(np.float32)


def check_unknown_below(unknown_below, soft) -> None:
    """``unknown_below`` is None or a number in [0, 1], and not with ``soft``."""
    if unknown_below is None:
        return
    if isinstance(unknown_below, bool | np.bool_) or not isinstance(unknown_below, numbers.Real):
        raise ValueError(
            f"unknown_below must be a number in [0, 1] (a typicality, e.g. 0.01) or None, got "
            f"{short_repr(unknown_below)}."
        )
    if not 0.0 <= float(unknown_below) <= 1.0:  # NaN too
        raise ValueError(
            f"unknown_below={short_repr(unknown_below)} is outside [0, 1]: it is a typicality "
            "(the share of the reference's cells less typical than a cell), e.g. 0.01."
        )
    if soft:
        raise ValueError(
            "unknown_below marks labels, and soft=True returns probabilities: pass one of them "
            "(the probabilities' cells to flag: predict_labels()['typicality'] < threshold)."
        )


def unknown_mark(model, categories: pd.Index):
    """The model's mark of unlabelled cells, typed as ``categories``: its registered
    ``unlabeled_category``, ``"Unknown"`` for a model without labels."""
    mark = unlabelled_mark(None, None, "Unknown", source=model.registry_)
    if isinstance(mark, numbers.Integral) and categories.dtype.kind in "iu":
        return int(mark)
    return str(mark)


def mark_unknown(model, label: pd.Categorical, typical: np.ndarray, below) -> pd.Categorical:
    """``label`` with the cells whose ``typical`` is under ``below`` given the model's
    unlabelled mark (a category added whether or not a cell takes it); the count said at INFO.
    Refused for a model that kept no typicality (NaN)."""
    if np.isnan(typical).any():
        raise ValueError(
            "unknown_below needs the scores of the reference's training cells, which "
            "this model did not keep (saved before deltavae kept them, or given other cells "
            "with model.adata = ... before it scored them): train the reference again "
            "(train()) and map the query onto it (load_query_data)."
        )
    mark = unknown_mark(model, label.categories)
    if mark not in label.categories:
        label = label.add_categories([mark])
    flagged = typical < below
    label[flagged] = mark
    logger.info(
        "%d of %d cells less typical than the share %s of the reference's cells: labelled %r.",
        int(flagged.sum()),
        len(flagged),
        below,
        mark,
    )
    return label


def typical_labels(
    model, label: pd.Categorical, scores: np.ndarray, unknown_below, every_cell: bool = False
):
    """``label`` (the cells' predicted labels), with the cells whose typicality (of their
    :func:`fit_score` ``scores``, against the record, settled first) is under
    ``unknown_below`` given the unlabelled mark (:func:`mark_unknown`; ``None``: none), and
    the typicality: what ``predict_labels`` and a query model's ``write_to_adata`` give.
    ``every_cell``: ``scores`` are of every cell of the model's own AnnData, in its order (the
    record reads its cells' there)."""
    settle_record(model, scores if every_cell else None)  # the last fit's cells scored, once
    typical = typicality(model, scores)
    if unknown_below is not None:
        label = mark_unknown(model, label, typical, unknown_below)
    else:  # marked cells are said by their mark
        warn_if_mostly_atypical(typical)
    return label, typical


def warn_if_mostly_atypical(typical: np.ndarray) -> None:
    """Say where most of the cells labelled (:data:`ATYPICAL_SHARE`, of :data:`MIN_JUDGED` or
    more) are less typical than all but :data:`ATYPICAL_BELOW` of the reference's cells: each
    still takes a reference label, often with a confidence near 1, and those labels are most
    likely wrong (a query of another tissue, its genes named otherwise or mostly missing, or
    other data than the reference's counts)."""
    judged = typical[~np.isnan(typical)]
    if len(judged) < MIN_JUDGED:
        return
    share = float((judged < ATYPICAL_BELOW).mean())
    if share < ATYPICAL_SHARE:
        return
    warn_user(
        f"{share:.0%} of these {len(judged)} cells are less typical than {1 - ATYPICAL_BELOW:.0%}"
        f" of the reference's own cells (typicality under {ATYPICAL_BELOW}; about "
        f"{ATYPICAL_BELOW:.0%} of cells like the reference's fall there): most of them are "
        "unlike any cell the reference trained on, and the labels they were given (whatever "
        "their confidence) are likely wrong. Check that they hold the reference's genes under "
        "the same names, counts as the reference's, and cell types the reference has; "
        f"unknown_below={ATYPICAL_BELOW} labels such cells with the unlabelled mark instead."
    )
