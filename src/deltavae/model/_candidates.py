"""The fixed set of candidate spots whose convex combinations are Archetypes' archetypes.

B (archetypes x spots) cannot span a million spots: it would be a parameter per spot and per
archetype, and every archetype's profile a sum over all of them. Archetypes therefore combine
a bounded set of candidate spots, chosen on one pass over a bounded pool of the data.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from scvi import REGISTRY_KEYS
from sklearn.cluster import kmeans_plusplus

from .._rng import start_seed
from ._archetypal_analysis import check_archetype_count, embed, start_archetypes
from ._count_advice import drop_empty
from ._empty_spots import drop_empty_spots
from ._load_state import saved_state
from ._one_state import spots_sample_spectrum

logger = logging.getLogger(__name__)
#: scanpy's filter of spots without counts in X (every gene): a doctest's default.
FILTER = drop_empty("spots", None, rows=True)

#: The first pass of a large data set reads this many times ``max_candidates`` spots.
POOL_FACTOR = 5

#: Spots with fewer counts than this share of the median spot's are no candidates.
SHALLOW_SHARE = 0.1


def candidate_spots(model, n_pcs: int, max_candidates: int, n_archetypes=None):
    """The spots archetypes combine: their rows, profiles and PCA embedding, and the mean
    spot profile, from one pass over at most ``POOL_FACTOR * max_candidates`` spots.

    With at most ``max_candidates`` spots, every spot (the exact classical fit). Otherwise a
    random pool (seeded by ``scvi.settings.seed``, 0 while unset) is read a chunk of rows at a
    time and embedded, and ``max_candidates`` of its spots are chosen by k-means++ seeding
    (:func:`sklearn.cluster.kmeans_plusplus`) in the embedding: each next spot is drawn with
    probability proportional to its squared distance from those chosen, so the set spans the
    data's extremes, where archetypes lie, instead of piling up in the dense middle as a
    plain subsample does; the pool's spots also give the mean profile. Spots with fewer
    counts than ``SHALLOW_SHARE`` of the median spot's are left out: their profiles are
    extreme through sampling noise alone.

    Parameters
    ----------
    model
        A model with :class:`~deltavae.model._spots.SpotModelMixin`'s readers.
    n_pcs
        Principal components of the embedding.
    max_candidates
        Most candidate spots.
    n_archetypes
        The archetypes to fit (an integer or ``"auto"``): refused, with the depth rule and the
        largest count that fits, when fewer spots than they need are deep enough.

    Returns
    -------
    rows, profiles, embedding, mean_profile
    """
    rows = model._sample_rows(POOL_FACTOR * max_candidates)
    # float32, as the module keeps them: the pool is 5 x max_candidates spots by every gene.
    counts = model._read_rows(rows, dtype=np.float32)
    # A spot's profile is as noisy as its counts are few: a spot of a handful of reads is an
    # extreme point of the profiles (2 reads: half of each of 2 genes) and would become an
    # archetype of its own. Shallow spots are fitted like the others but are no candidates.
    depth = counts.sum(axis=1, dtype=np.float64)
    drop = drop_empty_spots(model)  # the statement that drops empty spots, on its layer
    median = shallow_floor(depth, drop)  # of the spots with counts: empty ones are never candidates
    deep = (depth > 0) & (depth >= SHALLOW_SHARE * median)
    if n_archetypes is not None:
        check_candidate_count(n_archetypes, depth, median, model.adata.n_obs, drop)
    if not deep.all():
        logger.info(
            "%d spots with fewer than %.0f counts (%g of the median of spots with counts) are "
            "left out of the candidate spots archetypes combine",
            (~deep).sum(), SHALLOW_SHARE * median, SHALLOW_SHARE,
        )  # fmt: skip
        rows, counts, depth = rows[deep], counts[deep], depth[deep]
    profiles = counts  # in place
    profiles /= np.maximum(depth, 1.0)[:, None].astype(np.float32)
    mean_profile = profiles.mean(axis=0, dtype=np.float64)
    embedding = embed(profiles, n_pcs).astype(np.float64)
    if len(rows) > max_candidates:
        _, picked = kmeans_plusplus(embedding, max_candidates, random_state=start_seed())
        picked = np.sort(picked)
        rows, profiles, embedding = rows[picked], profiles[picked], embedding[picked]
        logger.info("archetypes combine %d candidate spots of %d", len(rows), counts.shape[0])
    return rows, profiles, embedding, mean_profile


def shallow_floor(depth: np.ndarray, drop: str = FILTER) -> float:
    """The median depth of the spots with counts (the shallow-spot rule reads it): with most
    spots empty, the median of all was 0 and kept every spot, empty ones too. Refused when
    fewer than 2 spots have counts (read), as archetypes need spots to combine; ``drop``: the
    statement that drops spots without counts (in the model's layer).

    Examples
    --------
    >>> shallow_floor(np.array([0.0, 0.0, 0.0, 100.0, 300.0]))
    200.0
    """
    counted = depth[depth > 0]
    if len(counted) < 2:
        raise ValueError(
            f"{len(counted)} of the {len(depth)} spots read for the candidates have counts: "
            f"archetypes are mixtures of spots with counts. Drop spots without counts first "
            f"({drop}), or check the layer registered with Archetypes.setup_anndata."
        )
    return float(np.median(counted))


def check_candidate_count(
    n_archetypes, depth: np.ndarray, median: float, n_spots: int, drop: str = FILTER
) -> None:
    """Refuse ``n_archetypes`` (``"auto"`` needs 3) when fewer of the spots read (``depth``:
    their counts) are deep enough to be candidates, saying how many have counts, the depth
    rule (``SHALLOW_SHARE`` of the ``median`` of spots with counts) and the largest
    ``n_archetypes`` that fits (none below 2 candidates); ``drop``: as :func:`shallow_floor`'s."""
    fewest = 3 if n_archetypes == "auto" else int(n_archetypes)
    floor = SHALLOW_SHARE * median
    n_deep = int(((depth > 0) & (depth >= floor)).sum())
    if n_deep >= fewest:
        return
    read = f"the {n_spots} spots" if len(depth) == n_spots else f"the {len(depth)} spots read"
    if n_deep >= 2:
        fewer = " or fewer" if n_deep > 2 else ""
        fits = f"Pass n_archetypes={n_deep}{fewer} (the largest that fits), or "
    else:
        fits = "No n_archetypes fits (archetypes need 2 candidate spots or more): "
    raise ValueError(
        f"n_archetypes={n_archetypes!r} needs {fewest} candidate spots, but {n_deep} of "
        f"{read} are deep enough: {int((depth > 0).sum())} have counts, and a candidate needs "
        f"at least {floor:.4g} counts ({SHALLOW_SHARE:g} of the median of spots with counts, "
        f"{median:.4g}). {fits}drop spots without counts ({drop}) and the far shallower "
        "ones, or check the layer registered with Archetypes.setup_anndata."
    )


def candidate_samples(model, rows: np.ndarray) -> np.ndarray | None:
    """The sample (slide) code of each candidate row, or ``None`` with one sample."""
    if REGISTRY_KEYS.BATCH_KEY not in model.adata_manager.data_registry:
        return None
    codes = model.adata_manager.get_from_registry(REGISTRY_KEYS.BATCH_KEY)
    return np.asarray(codes).reshape(-1)[rows].astype(np.int64)


def restore_candidate_samples(model) -> None:
    """After a load, each saved candidate's sample, from the saved ``candidate_rows_``.

    ``load`` builds the model again, which chooses candidates under the current
    ``scvi.settings.seed``: with more than ``POOL_FACTOR * max_candidates`` spots, other
    spots than those whose profiles were saved, whose samples' technical factors would then
    be taken out of the saved profiles (other archetypes than the trained ones).
    """
    samples = candidate_samples(model, np.asarray(model.candidate_rows_))
    if samples is not None:
        device = model.module.candidate_samples.device
        model.module.candidate_samples = torch.as_tensor(samples, device=device)


def archetype_start(model, n_archetypes, max_archetypes, n_pcs, max_candidates, smooth_neighbors):
    """Archetypes' start: candidate rows, profiles and mean profile, starting B and the elbow
    (``n_archetypes`` checked first; see :func:`candidate_spots` and
    :func:`~deltavae.model._archetypal_analysis.start_archetypes`).

    In a load, the saved candidate profiles, mean profile and B (the rows and elbow come back
    with the model's attributes; the state dict replaces the rest) instead of a pass over the
    spots and the anchor search, which every load computed and discarded.
    """
    saved = saved_state(model)
    if saved is not None:
        init_B = torch.softmax(saved["B_logits"].float(), dim=-1)
        return None, saved["candidate_profiles"], saved["mean_profile"], init_B, None
    n_spots = model.adata.n_obs
    check_archetype_count(n_archetypes, max_archetypes, n_spots, max_candidates)
    if model.adata.n_vars < 2:  # its PCA divided by a variance of 0 (numpy's warning)
        raise ValueError(
            f"Archetypes needs at least 2 genes; adata has {model.adata.n_vars}: archetypes "
            "are mixtures of the spots' gene proportions, which one gene makes the same (1) "
            "in every spot. Pass the spots with their genes."
        )
    rows, profiles, embedding, mean_profile = candidate_spots(
        model, n_pcs, max_candidates, n_archetypes
    )
    model.noise_check_ = spots_sample_spectrum(model)  # saved: warned with the merged archetypes
    if n_archetypes == "auto":  # an archetype stands only where min_spots spots lead with it
        max_archetypes = min(max_archetypes, max(2, n_spots // max(1, model.min_spots)))
    init_B, elbow = start_archetypes(
        embedding, n_archetypes, max_archetypes, smooth_neighbors, start_seed()
    )
    return rows, profiles, mean_profile, init_B, elbow
