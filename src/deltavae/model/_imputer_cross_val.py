"""How well genes are imputed on a user's own data: k-fold cross-validation over shared genes.

The protocol of Li et al. (Nat. Methods 2022), which benchmarks/imputation.py runs for every
method: the genes the spots share with the reference are split into folds (scikit-learn's
``KFold``, shuffled with a seed); each fold in turn is hidden from the spots, imputed from
the reference and the remaining genes, and scored gene by gene with
:func:`deltavae.metrics.imputation_scores`, so every gene is scored once.

Scale: the measured and imputed values of a spot are both divided by a per-spot total before
scoring, the measured ones by the spot's counts over the visible genes the reference counts,
the imputed ones by the prediction's own total over those same genes (every score is
invariant to a gene's scale, so only these per-spot factors matter). Spot genes the reference
never counts are in neither total: no method predicts them (SpatialImputer leaves them out,
Tangram drops them, a reference profile holds 0), so their counts in the measured total only
skewed each spot by their share (up to 2.3% of a hypothalamus MERFISH spot).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Sequence, Set

import numpy as np
import pandas as pd
import scvi
from anndata import AnnData
from sklearn.model_selection import KFold

from .._anndata_or_folder import check_anndata
from .._checks import check_seed, dense, layer_matrix, short_repr
from .._close_names import did_you_mean
from .._renamed import foreign_keywords
from .._rng import scvi_seed_kept
from .._warn import warn_user
from ..metrics import imputation_scores
from ._few_cell_genes import FEW_CELLS_NOTE, warn_few_cell_scores
from ._genes import _refuse_duplicates
from ._imputer_reference import shared_advice
from ._init_keywords import check_passed_on
from ._matrices import column_sums
from ._reference_labels import check_reference_labels
from ._shared_genes import warn_few_shared

#: The notes of from_reference on the genes shared, said once by cross_validate of the data
#: given: in a fold they counted the shared genes less the hidden ones (a pair of 124 shared
#: genes was told, fold after fold, "share only 99 genes ... use the same identifiers").
_SAID_ONCE = (r"spots and reference share only \d+ genes", r".*reference genes only ignoring case")
#: from_reference's note on spot genes no spot counts, of each fold's (5 notes of 6 to 9 of
#: 302 genes on the cerebellum Slide-seq pair, with advice on impute()): constant, such a
#: gene is unscored, which cross_validate says once.
_UNSCORED = (r"\d+ of the spots' \d+ genes are 0 in every spot",)
#: Each fold's notes of spots without counts (from_reference's of the data, impute's of its
#: NaN rows), two a fold: such spots are left out of the fold's scores, said once.
_EMPTY_SPOTS = (r"\d+ spots in .* are all zeros", r".* spots have no counts in the")

#: impute(spots with the visible genes, reference, hidden genes) -> spots x genes, with at
#: least the hidden and the visible genes.
Imputer = Callable[[AnnData, AnnData, list], pd.DataFrame]


def gene_folds(genes: Sequence, n_folds: int, seed: int) -> list[list]:
    """``genes`` split into ``n_folds`` folds (``KFold``, shuffled with ``seed``)."""
    genes = list(genes)
    if isinstance(n_folds, bool) or not isinstance(n_folds, int | np.integer) or n_folds < 2:
        raise ValueError(f"n_folds must be a whole number of 2 or more; got {n_folds!r}.")
    if n_folds > len(genes):
        fix = (  # n_folds=1 is refused above: one gene needs another to cross-validate
            f"pass n_folds={len(genes)} or fewer"
            if len(genes) >= 2
            else "name 2 or more shared genes in genes= (n_folds is 2 or more), or None for all"
        )
        raise ValueError(
            f"n_folds={n_folds} is more than the {len(genes)} genes to cross-validate: every "
            f"fold needs a gene; {fix}."
        )
    split = KFold(n_folds, shuffle=True, random_state=seed).split(np.arange(len(genes)))
    return [[genes[i] for i in held] for _, held in split]


def per_spot(pred: pd.DataFrame, visible: list, hidden: list) -> pd.DataFrame:
    """Hidden genes divided by the prediction's own total over the visible genes."""
    pred = pred.clip(lower=0)
    totals = pred[visible].sum(axis=1)
    return pred[hidden].div(totals.where(totals > 0, 1.0), axis=0)


def scored_genes(truth: pd.DataFrame, expressed: pd.Series) -> list:
    """The hidden genes scored: expressed in the reference (``expressed``, by gene; no method
    imputes a gene without reference counts) and varying across the spots (a constant has no
    pattern to score)."""
    return [g for g in truth.columns if expressed[g] and truth[g].std() > 0]


def cross_validate_genes(
    spots: AnnData,
    reference: AnnData,
    impute: Imputer,
    genes: Sequence,
    n_folds: int = 5,
    seed: int = 0,
    layer: str | None = None,
    only_folds: Sequence[int] | None = None,
    reference_layer: str | None = None,
    shared: Sequence | None = None,
    left_out: set | None = None,
    reference_sums: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per-gene scores of ``impute`` with each fold of ``genes`` hidden in turn.

    ``genes`` are spot genes shared with the reference. A gene is scored if the reference
    counts it and it varies across the spots (otherwise it has no pattern to impute); the
    table holds the scored genes only, in ``genes``' order, with ``imputation_scores``'
    columns and ``fold``. ``scvi.settings.seed`` is set to ``seed`` before each fold, and
    it and the global generators it reseeds are put back after the last. ``layer`` and
    ``reference_layer`` hold the spots' and the reference's counts (``None``: X).
    ``shared``: every gene the spots share with the reference, ``genes`` among them (default
    ``genes``); those a fold leaves visible and the reference counts give each spot's total
    that both the measured and the imputed values are divided by. A spot without counts in
    those genes gives no evidence of the hidden ones: it is left out of the fold's scores,
    for every method, and added to ``left_out`` (a set) when given. ``reference_sums``: the
    reference's count per gene where the caller has it (a pass over the reference saved).
    """
    genes = list(genes)
    # Not the other genes cross-validated alone: with genes= a few of them, each spot was
    # divided by the counts of 4 genes (hippocampus Visium: Mbp's PCC 0.57, 0.89 of 123).
    shared = genes if shared is None else list(shared)
    counts = layer_matrix(spots, layer)
    # A reference without a gene's counts cannot impute it: judged on its counts, not on an
    # X that may be scaled (sums about 0) beside them.
    sums = reference_sums
    if sums is None:
        sums = column_sums(layer_matrix(reference, reference_layer))
    expressed = pd.Series(sums[reference.var_names.get_indexer(genes)] > 0, index=genes)
    # The totals: not over spot genes the reference never counts, which no prediction holds
    # (their counts were in the measured total alone: 0.05% of the lymph node's counts).
    counted = sums[reference.var_names.get_indexer(shared)] > 0
    shared = [g for g, c in zip(shared, counted, strict=True) if c]
    tables = []
    with scvi_seed_kept():  # the user's seed and generators, as before the call
        for fold, hidden in enumerate(gene_folds(genes, n_folds, seed)):
            if only_folds is not None and fold not in only_folds:
                continue
            visible = [g for g in shared if g not in set(hidden)]
            keep = ~spots.var_names.isin(hidden)
            totals = dense(counts[:, np.flatnonzero(spots.var_names.isin(visible))]).sum(axis=1)
            columns = spots.var_names.get_indexer(hidden)
            truth = pd.DataFrame(dense(counts[:, columns]), index=spots.obs_names, columns=hidden)
            # Not its hidden counts divided by 1, an outlier every method was scored against.
            empty = np.asarray(totals).ravel() == 0
            if left_out is not None:
                left_out.update(spots.obs_names[empty])
            truth = truth[~empty].div(totals[~empty], axis=0)
            truth = truth[scored_genes(truth, expressed)]
            scvi.settings.seed = seed
            pred = impute(spots[:, keep].copy(), reference, hidden).loc[truth.index]
            table = imputation_scores(truth, per_spot(pred, visible, hidden))
            tables.append(table.assign(fold=fold))
    order = [g for g in genes if any(g in t.index for t in tables)]
    return pd.concat(tables).loc[order] if tables else pd.DataFrame()


def _deltavae_imputer(from_reference: Callable, train_kwargs: dict) -> Imputer:
    def impute(spots: AnnData, reference: AnnData, hidden: list) -> pd.DataFrame:
        with warnings.catch_warnings():  # said once by cross_validate, of the data given
            for message in _SAID_ONCE + _UNSCORED + _EMPTY_SPOTS:
                warnings.filterwarnings("ignore", message=message)
            model = from_reference(spots, reference=reference)
        model.train(**train_kwargs)
        # Genes the reference never counts are no reference gene: 0, as its counts predict
        # (left unscored, as cross_validate says).
        wanted = list(hidden) + list(spots.var_names)
        silent = model._silent_genes
        known = [g for g in wanted if g in model.reference_genes_ and g not in silent]
        with warnings.catch_warnings():  # its NaN rows: spots left out, said once
            warnings.filterwarnings("ignore", message=_EMPTY_SPOTS[1])
            warnings.filterwarnings("ignore", message=FEW_CELLS_NOTE)  # scored, as any gene
            return model.impute(known).reindex(columns=wanted, fill_value=0.0)

    return impute


class ImputerCrossValMixin:
    """:meth:`cross_validate`: how well a SpatialImputer imputes on the user's data."""

    @classmethod
    @foreign_keywords(random_state="seed")
    def cross_validate(
        cls,
        spots: AnnData,
        reference: AnnData,
        labels_key: str | None = "cell_type",
        n_folds: int = 5,
        genes: Sequence[str] | None = None,
        seed: int = 0,
        max_epochs: int | None = None,
        layer: str | None = None,
        train_kwargs: dict | None = None,
        **model_kwargs,
    ) -> pd.DataFrame:
        """Per-gene imputation scores on these data, by k-fold cross-validation over genes.

        The genes the spots share with the reference (or ``genes``) are split into
        ``n_folds`` folds (scikit-learn's ``KFold``, shuffled with ``seed``). Each fold in
        turn is hidden from the spots, a model is built with :meth:`from_reference` and
        trained on the rest, and the hidden genes it imputes are scored against their counts
        with :func:`deltavae.metrics.imputation_scores` (PCC, SSIM, RMSE on z-scores,
        Jensen-Shannon distance), after dividing both, spot by spot, by their total over the
        visible shared genes the reference counts (those a prediction holds): the protocol
        of Li et al. 2022, as benchmarks/imputation.py runs it. Trains ``n_folds`` models;
        ``scvi.settings.seed`` is set to ``seed`` before each, so a seed repeats the table,
        and put back after the last with the global
        generators it reseeds (the user's own seed and random streams go on as before).
        What :meth:`from_reference` says of the genes shared (few of them, or some only
        ignoring case) is said once, of the data given, not of each fold's fewer genes.

        Parameters
        ----------
        spots, reference, labels_key, layer
            As :meth:`from_reference`'s.
        n_folds
            Folds, from 2 to the number of genes cross-validated.
        genes
            Shared genes to cross-validate, by name (the other shared genes stay visible in
            every fold; a set is read in the spots' order); ``None``: every shared gene. Each
            fold must leave ``min_shared_genes`` (of :meth:`from_reference`, default 10)
            visible genes the reference counts.
        seed
            Seed of the folds, of the training (``scvi.settings.seed``) and of
            :meth:`from_reference`, in [0, 2**32 - 1].
        max_epochs
            Epochs of each training (:meth:`train`'s default: ``None``).
        train_kwargs
            Further arguments of :meth:`train` (``enable_progress_bar`` ...).
        **model_kwargs
            Further arguments of :meth:`from_reference` (``design``, ``profiles`` ...).

        Returns
        -------
        pandas.DataFrame
            One row per gene scored, in the order of ``genes`` (default: the spots'): columns
            ``pcc``, ``ssim``, ``rmse``, ``jsd`` (as :func:`~deltavae.metrics.imputation_scores`
            gives them; NaN where a score is undefined, a constant prediction's) and ``fold``
            (0 to ``n_folds - 1``, the fold that hid the gene). Genes the reference
            never counts or constant across the spots have no pattern to score: left out,
            with a warning. Genes the reference counts in fewer than 5 cells are scored, and
            said in one note with their median PCC against the others': their imputations
            rest on those few cells' counts, and lower a median over every gene.

        Examples
        --------
        >>> import deltavae as dv
        >>> data = dv.datasets.synthetic_counts(n_cells=300, n_genes=60, n_clusters=3, seed=0)
        >>> ref, spots = data[:150].copy(), data[150:, :40].copy()
        >>> scores = dv.model.SpatialImputer.cross_validate(
        ...     spots, ref, labels_key="cluster", n_folds=5, max_epochs=50,
        ...     train_kwargs={"enable_progress_bar": False},
        ... )  # doctest: +SKIP
        >>> scores.head(2)  # doctest: +SKIP
                     pcc      ssim      rmse       jsd  fold
        gene_0  0.720748  0.547900  0.747331  0.289225     4
        gene_1  0.638600  0.391065  0.850176  0.292263     3
        >>> scores.drop(columns="fold").median()  # summary over genes  # doctest: +SKIP
        pcc     0.578932
        ssim    0.409304
        rmse    0.917648
        jsd     0.355402
        dtype: float64
        >>> scores.nsmallest(3, "pcc")  # the genes it imputes worst  # doctest: +SKIP
        """
        check_passed_on(cls, cls.cross_validate, model_kwargs, cls.from_reference)
        check_seed(seed)  # 1.5: numpy's "cannot be used to seed", after the spots were read
        for name, data in (("spots", spots), ("reference", reference)):
            if isinstance(data, str | os.PathLike):  # a file's name: how to read it
                check_anndata(data, name, call="SpatialImputer.cross_validate(spots, reference)")
            if not isinstance(data, AnnData):
                raise TypeError(f"{name} must be an AnnData; got {type(data).__name__}.")
            _refuse_duplicates(pd.Index(data.var_names.astype(str)), name)
        if labels_key is not None and model_kwargs.get("design", "deconvolution") != "latent":
            check_reference_labels(spots, reference, labels_key, "SpatialImputer.cross_validate")
        shared = spots.var_names[spots.var_names.isin(reference.var_names)]
        if len(shared) < 2:  # else "pass n_folds=0 or fewer" of genes named in another case
            raise ValueError(
                f"spots ({spots.n_vars} genes, e.g. {list(spots.var_names[:3])}) and reference "
                f"({reference.n_vars} genes, e.g. {list(reference.var_names[:3])}) share "
                f"{len(shared)} genes; cross-validation hides shared genes, at least 2. "
                + shared_advice(spots.var_names, reference.var_names, len(shared))
            )
        chosen = list(shared) if genes is None else _chosen_genes(genes, spots, reference)
        folds = gene_folds(chosen, n_folds, seed)  # a bad n_folds refused before any training
        reference_layer = model_kwargs.get("reference_layer")
        counting = np.zeros(reference.n_vars, dtype=np.int64)  # cells counting each gene
        sums = column_sums(layer_matrix(reference, reference_layer), counting)
        counted = shared[sums[reference.var_names.get_indexer(shared)] > 0]
        _refuse_small_folds(folds, counted, model_kwargs.get("min_shared_genes", 10))
        effect = "the spots' states (and so the imputed genes) may be poorly determined"
        warn_few_shared(spots, reference, shared, effect)  # not fold by fold: see _SAID_ONCE
        train_kwargs = {"max_epochs": max_epochs, **(train_kwargs or {})}

        def from_reference(data, reference):
            return cls.from_reference(
                data, reference=reference, labels_key=labels_key, layer=layer, seed=seed,
                **model_kwargs,
            )  # fmt: skip

        left_out = set()  # spots without counts in a fold's visible genes
        table = cross_validate_genes(
            spots,
            reference,
            _deltavae_imputer(from_reference, train_kwargs),
            chosen,
            n_folds=n_folds,
            seed=seed,
            layer=layer,
            reference_layer=reference_layer,
            shared=shared,
            left_out=left_out,
            reference_sums=sums,
        )
        if left_out:
            warn_user(
                f"{len(left_out)} of the {spots.n_obs} spots (e.g. {sorted(left_out)[:3]}) have "
                "no counts in the shared genes a fold leaves visible, so no evidence of the "
                "genes it hides: they are left out of that fold's scores. To score every fold "
                "on the same spots, drop the spots with few counts in the shared genes first."
            )
        counting = pd.Series(counting, index=reference.var_names)
        warn_few_cell_scores(table, counting, reference.n_obs, reference_layer)
        left = [g for g in chosen if g not in table.index]
        if left:
            warn_user(
                f"{len(left)} of the {len(chosen)} genes cross-validated (e.g. {left[:5]}) "
                "were not scored: the reference never counts them or they are constant "
                "across the spots, so they have no pattern to impute."
            )
        return table


def _refuse_small_folds(folds: list, counted: pd.Index, min_shared_genes) -> None:
    """Refuse folds that leave fewer visible genes (``counted``: the shared genes the
    reference counts, those from_reference keeps) than ``min_shared_genes``. Each fold's
    from_reference refused them, of its fewer genes: 12 shared genes in 5 folds were told
    "spots (9 genes ...) share 9 genes; at least 10 are needed"."""
    if isinstance(min_shared_genes, bool) or not isinstance(min_shared_genes, int | np.integer):
        return  # from_reference says what it takes
    visible = min(int((~counted.isin(hidden)).sum()) for hidden in folds)
    if visible < min_shared_genes:
        largest = max(len(hidden) for hidden in folds)
        raise ValueError(
            f"a fold of {largest} hidden genes leaves {visible} of the {len(counted)} shared "
            f"genes the reference counts visible, fewer than the {min_shared_genes} each "
            "model needs (min_shared_genes): pass more n_folds (fewer genes hidden at a "
            f"time), fewer genes=, or min_shared_genes={visible} to accept so few."
        )


def _chosen_genes(genes, spots: AnnData, reference: AnnData) -> list:
    """``genes`` checked: each a gene of both the spots and the reference, named once; a
    set in the spots' order (its own changes from session to session, and the folds with it)."""
    if isinstance(genes, Set):
        others = [g for g in genes if g not in spots.var_names]  # refused below, by name
        genes = [g for g in spots.var_names if g in genes] + sorted(others, key=str)
    names = [genes] if isinstance(genes, str) else genes
    if not isinstance(names, Iterable) or isinstance(names, bytes | AnnData | pd.DataFrame):
        raise TypeError(
            f"genes takes the names of shared genes (a list, or one name); got {short_repr(genes)}."
        )
    genes = list(names)
    if not genes:
        raise ValueError("genes is empty: name the shared genes to cross-validate, or None.")
    odd = [g for g in genes if not isinstance(g, str)]
    if odd:  # a mask or positions: 'gene np.True_ is not among the spots' genes'
        raise TypeError(
            f"genes takes gene names; got {type(odd[0]).__name__} values such as "
            f"{short_repr(odd[0])}. For positions or a mask of the spots' genes, pass "
            "spots.var_names[positions]."
        )
    for g in genes:
        for name, data in (("spots'", spots), ("reference's", reference)):
            if g not in data.var_names:
                hint = did_you_mean(g, data.var_names)
                raise KeyError(
                    f"gene {g!r} is not among the {name} genes ({data.n_vars}); only genes "
                    f"the spots and the reference share can be cross-validated"
                    + (f"; {hint}" if hint else ".")
                )
    duplicated = pd.Index(genes)[pd.Index(genes).duplicated()].unique().tolist()
    if duplicated:
        raise ValueError(f"genes names {duplicated[:5]} more than once; name each once.")
    return genes
