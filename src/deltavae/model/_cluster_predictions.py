"""CGMDVAE's cluster and label predictions: indices, probabilities, and labelled tables as
scvi-tools' ``SCANVI.predict`` gives them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from anndata import AnnData

from .._checks import short_repr
from .._docs import doc_params
from ._cell_selection import check_indices, mask_by_name
from ._de_checks import check_dataloader_alone
from ._label_order import kept_categories
from ._labels import labels_of
from ._positions import indices_after_adata
from ._typicality import check_unknown_below, typical_labels
from ._validation import check_flags


def cell_names(adata: AnnData, indices) -> pd.Index:
    """The names of the cells ``indices`` selects in ``adata`` (all for ``None``), in the
    order the model reads them (positions, a boolean mask, or a mask indexed by name).

    Examples
    --------
    >>> import numpy as np
    >>> a = AnnData(np.zeros((3, 1)), obs=pd.DataFrame(index=["a", "b", "c"]))
    >>> cell_names(a, [2, 0]).tolist(), cell_names(a, np.array([True, False, True])).tolist()
    (['c', 'a'], ['a', 'c'])
    """
    if indices is None:
        return adata.obs_names.copy()
    rows = np.asarray(mask_by_name(adata, indices, "indices"))
    check_indices(rows, adata.n_obs)
    rows = np.flatnonzero(rows) if rows.dtype == bool else rows.astype(int)
    return adata.obs_names[rows]


# The first parameters of predict and predict_labels.
_doc_cells = """\
Parameters
----------
adata
    AnnData set up like the model's (a view such as ``adata[mask]``, or new cells);
    default the model's (the query).
indices
    Cells of ``adata`` to predict (positions or a boolean mask; default all), in
    this order."""


def _check_soft(soft) -> None:
    """``soft`` is True or False: ``soft="no"`` (or ``"False"``) was read as True, returning
    the probabilities where labels were asked for."""
    if not isinstance(soft, bool | np.bool_):
        raise ValueError(f"soft must be True or False, got {short_repr(soft)}.")


class PredictionsMixin:
    """``predict_clusters`` (indices or a cells x K array, as before), ``predict_labels``
    (DataFrames indexed by cell; ``soft=True``: a column per cluster) and ``predict``
    (scvi-tools' ``SCANVI.predict``: its signature and return types)."""

    @classmethod
    def from_scvi_model(cls, scvi_model=None, unlabeled_category=None, *args, **kwargs):
        """scvi-tools' ``SCANVI.from_scvi_model`` for a ZINBVAE (deltavae's scVI): the same
        as :meth:`from_zinbvae`. scvi-tools' own SCVI is refused: its weights are not
        carried over; train a ZINBVAE (the same model) and start from it, or train this model
        on the counts with its labels (semi-supervised as SCANVI: unlabelled cells carry the
        mark).

        Parameters
        ----------
        scvi_model
            A trained :class:`~deltavae.model.ZINBVAE` (scvi-tools' SCVI: refused).
        unlabeled_category
            The unlabelled mark, as in :meth:`from_zinbvae`.
        *args
            :meth:`from_zinbvae`'s other positional arguments (``labels_key``, ``adata``).
        **kwargs
            :meth:`from_zinbvae`'s keywords (``labels_key``, ``adata``, the CGMDVAE's
            constructor arguments).

        Examples
        --------
        >>> g = dv.model.CGMDVAE.from_scvi_model(vae, "Unknown", labels_key="t")  # doctest: +SKIP
        """
        from ._zinbvae import ZINBVAE

        if isinstance(scvi_model, ZINBVAE):
            return cls.from_zinbvae(scvi_model, unlabeled_category, *args, **kwargs)
        mark = "Unknown" if unlabeled_category is None else unlabeled_category
        raise NotImplementedError(
            f"{cls.__name__}.from_scvi_model starts from a trained deltavae ZINBVAE (scVI's "
            f"model), not from {type(scvi_model).__name__}: scvi-tools' weights are not "
            "carried over. Train a ZINBVAE and start from it: vae = ZINBVAE(adata); "
            f"vae.train(); {cls.__name__}.from_zinbvae(vae, {mark!r}, "
            "labels_key='cell_type'); or train on the counts with the labels: "
            f"{cls.__name__}.setup_anndata(adata, labels_key='cell_type', "
            f"unlabeled_category={mark!r}, condition_key='batch'); model = "
            f"{cls.__name__}(adata); model.train()."
        )

    @doc_params(parameters=_doc_cells)
    def predict(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        use_posterior_mean: bool = True,
        ig_interpretability: bool = False,
        ig_args: dict | None = None,
        dataloader=None,
    ) -> np.ndarray | pd.DataFrame:
        """Label of every cell, as scvi-tools' ``SCANVI.predict``: the same arguments, in
        its order, and the same return types.

        The labels are :meth:`predict_labels`' (the reference label of the most probable
        cluster of q(y | z, c), voted over conditions where a label had no labelled training
        cells, ``novel_j`` for a cluster no label claimed, the cluster's name without
        labels); its ``confidence`` ranks cells and is not the chance of being right. For a
        query model (see :meth:`load_query_data`) this is label transfer. Cells whose label
        was given are predicted too, not given their label back (as by ``SCANVI.predict``):
        compare the two to see where the model disagrees. Cells of a type the reference
        never saw take a known label too: to label the cells unlike the reference's with the
        unlabelled mark, take
        ``predict_labels(unknown_below=0.1)["label"].to_numpy()`` (see its ``typicality``).

        {parameters}
        soft
            Return every cluster's probability instead of the label.
        batch_size
            Cells per minibatch.
        use_posterior_mean
            ``True`` only, as scvi-tools' default: the clusters are read at the posterior
            mean of z.
        ig_interpretability
            scvi-tools' integrated gradients of each prediction over the genes: not offered
            (``True`` is refused). For the genes that tell the labels apart, use
            ``differential_expression(groupby=labels_key)``.
        ig_args
            The integrated gradients' settings: read only with ``ig_interpretability=True``,
            as in scvi-tools.
        dataloader
            Minibatches of a loader of the model's (``model._make_data_loader(adata)``) to
            read instead of ``adata``, in their order; ``adata``, ``indices`` and
            ``batch_size`` are not read then and are refused beside it. With ``soft``, the
            table is indexed by position (0, 1, ...: the loader holds no cell names).

        Returns
        -------
        Without ``soft``, a numpy array of one label per cell, of the labels' type as the
        model registered them: integer labels as integers (int64), string labels (and any
        model with ``novel_j`` clusters, whose integer labels are then strings ``"1"``, as in
        :attr:`cluster_names`) as an object array of str, as
        ``predict_labels()["label"].to_numpy()`` and an obs column of strings hold them (a
        fixed-width ``<U`` array, as SCANVI's, is as wide as the labels it happens to hold:
        ``pred[conf < 0.5] = "uncertain"`` wrote ``"u"`` where only ``"B"`` and ``"T"`` were
        predicted). With ``soft``, a DataFrame indexed by the cells' names, one column per
        cluster (:attr:`cluster_names`, as the labels are typed), rows summing to 1:
        ``predict_labels(soft=True)``.

        Examples
        --------
        >>> q.predict()[:3]  # doctest: +SKIP
        array(['B', 'T', 'T'], dtype=object)
        >>> (q.predict() == adata.obs["cell_type"].to_numpy()).mean()  # doctest: +SKIP
        """
        check_flags(use_posterior_mean=use_posterior_mean, ig_interpretability=ig_interpretability)
        if not use_posterior_mean:
            raise ValueError(
                f"use_posterior_mean={short_repr(use_posterior_mean)}: CGMDVAE predicts at "
                "the posterior mean of z only; pass use_posterior_mean=True (the default)."
            )
        _check_soft(soft)
        if ig_interpretability:
            raise NotImplementedError(
                "ig_interpretability=True: CGMDVAE offers no integrated gradients (scvi-tools' "
                "SCANVI.predict's, through captum). For the genes that tell its labels apart, "
                "run model.differential_expression(groupby=<labels_key>)."
            )
        if dataloader is not None:
            check_dataloader_alone({"indices": indices, "batch_size": batch_size,
                                    "dataloader": dataloader}, "predict")  # fmt: skip
            if adata is not None:
                raise ValueError("predict() reads adata or dataloader=, not both.")
            probs = self._posterior(None, dataloader=dataloader, labels=True)["probs"]
            if soft:
                names = pd.Index(labels_of(self, np.arange(probs.shape[1])).categories)
                return pd.DataFrame(probs.astype(np.float32), columns=names)
            return pd.Series(labels_of(self, probs.argmax(1))).to_numpy()
        if soft:
            return self.predict_labels(adata, indices=indices, soft=True, batch_size=batch_size)
        probs = self._posterior(self._resolve_adata(adata), indices, batch_size, labels=True)
        probs = probs["probs"]
        # predict_labels' labels without its typicality (whose scores would decode every
        # cell). The categories' dtype: int64 for integer labels, object for names (never <U).
        return pd.Series(labels_of(self, probs.argmax(1))).to_numpy()

    @indices_after_adata("soft", "batch_size")
    def predict_clusters(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Cluster of every cell from q(y | z, c) at the posterior mean of z (for the cells of
        conditions whose labelled training cells lacked a label, a vote over conditions: see
        :meth:`predict_labels`).

        With ``soft``, the probabilities rank cells by certainty; they run high and are not
        chances of being right (see :meth:`predict_labels`). For the same probabilities in a
        DataFrame with the cells' names as index and the cluster names as columns (as
        scvi-tools' ``SCANVI.predict(soft=True)``), use ``predict_labels(soft=True)``.

        Parameters
        ----------
        adata
            AnnData set up like the training data; default the training AnnData.
        indices
            Cells to predict (positions or a boolean mask; default all), in this order.
        soft
            Return a cells x K array of probabilities (columns in :attr:`cluster_names`
            order) instead of cluster indices.
        batch_size
            Cells per minibatch.

        Returns
        -------
        Without ``soft``, each cell's cluster as an index (int64) into :attr:`cluster_names`
        and the columns of ``soft`` (as scikit-learn's ``GaussianMixture.predict``), not the
        cluster's name: :meth:`write_to_adata`'s ``obs["cgmdvae_cluster"]`` holds names, a
        categorical as scanpy's ``leiden`` writes, so ``predict_clusters() ==
        adata.obs["cgmdvae_cluster"]`` compares indices with names. Name them with
        ``adata.uns["cgmdvae"]["cluster_names"][idx]`` (typed as the obs column:
        integer labels as integers), or take the names from :meth:`predict_labels`'
        ``label``. Indices from the obs column are not its ``cat.codes`` (clusters without
        cells are left out of its categories): use
        ``adata.obsm["cgmdvae_cluster_probs"].argmax(1)``.

        Examples
        --------
        >>> g.predict_clusters()[:5]  # doctest: +SKIP
        array([3, 3, 0, 7, 1])
        >>> names = adata.uns["cgmdvae"]["cluster_names"]  # doctest: +SKIP
        >>> (names[g.predict_clusters()] == adata.obs["cgmdvae_cluster"]).all()  # doctest: +SKIP
        True
        """
        _check_soft(soft)
        probs = self._posterior(adata, indices, batch_size, labels=True)["probs"]
        return probs if soft else probs.argmax(1)

    @indices_after_adata("batch_size")
    @doc_params(parameters=_doc_cells)
    def predict_labels(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        soft: bool = False,
        batch_size: int | None = None,
        unknown_below: float | None = None,
    ) -> pd.DataFrame:
        """Label of every cell, from q(y | z, c), with its confidence.

        The label is the reference label of the most probable cluster (its name
        ``novel_j`` for a cluster no label claimed; without labels, the cluster's name,
        ``"0"`` to ``"K-1"``); the confidence is that cluster's probability. For a query model (see
        :meth:`load_query_data`) this is label transfer from the reference. Cells whose label
        was given are predicted as the others (their label is not copied), as by scvi-tools'
        ``SCANVI.predict``.

        The confidence ranks cells; it is not the chance of being right. On Kang's PBMCs with
        70% of the labels hidden (a trial, seeds 0-2), wrong labels had a median confidence
        of 1.0 (its AUROC for right against wrong 0.80-0.85, as a kNN vote's on PCA), and
        the cells of a type missing from the reference took a known label with confidence
        near 1, not a ``novel_j`` cluster. ``typicality`` tells such cells apart: how typical
        the cell is of the reference's cells (for a query model, its reference's), from two
        scores, how badly the decoder explains the cell's counts (deviance per UMI at its
        posterior mean of z) and how unlikely its posterior means are under the prior given its
        conditions (log p(z, w | c)), each ranked among the reference's cells outside the test
        split; the typicality is the share of the reference's validation cells (every cell
        outside the test split where fewer than 200 validated) whose lower rank is lower than
        the cell's: about uniform over new cells like the reference's, near 0 for a cell unlike
        them. ``unknown_below`` labels the cells under it with the model's unlabelled mark
        (``unlabeled_category``, ``"Unknown"``), as scArches' uncertainty threshold and
        CellTypist's ``p_thres`` do. On Kang's control PBMCs with NK or B cells left out of the
        reference and a query of two other donors (benchmarks/README.md, "Cells of types the
        reference never saw"; seeds 0-1), its AUROC (held-out against known cells) was 0.80
        (NK; the confidence's 0.61-0.68) and 0.92-0.94 (B; 0.81-0.89); ``unknown_below=0.1``
        marked 30-41% of the NK cells, 84-90% of the B cells and 12-14% of the known ones.
        Known cells of new donors fall under a threshold somewhat more often than the
        reference's own: pick it from the share it marks. Where half or more of 20 or more
        cells fall under 0.01 (the reference's own cells: about 1%; a stimulated query of a
        control reference: 8%) and ``unknown_below`` is not given, a warning says that most
        of them are unlike the reference and their labels likely wrong (a query of other
        genes, other data or another tissue).
        q(y | z, c) reads the cell's conditions. Under a combination of conditions whose
        labelled training cells lacked a label that others carried (a type held out of a
        stimulation; the combinations that trained are ``label_conditions_``), it learned that
        the label does not occur, and gave that type's cells the nearest label it saw there.
        The cells of such a combination are labelled by a vote instead: each label's
        probability is the mean of q(y | z, c') over the combinations c' its labelled
        training cells carried, renormalised (``soft``, ``confidence``, :meth:`predict`,
        :meth:`predict_clusters` and :meth:`write_to_adata` read the same). On muscat's Kang
        example with one type's stimulated cells held out (30 epochs, seeds 0-2), the share of
        them labelled right went from 0.05-0.32 to 0.71-0.83 (CD4 T cells; a 15-nearest-
        neighbour vote in ``get_latent_representation()``: 0.77-0.82) and from 0.79-0.95 to
        0.98-0.99 (B cells), the other cells' labels moving by 3% of a group at most
        (benchmarks/README.md, "Labels of a type held out of one condition"). A combination
        without any labelled training cell (labels given for the control cells only) lacks
        every label, and its cells are voted too: on Kang's harmony PBMCs with the control
        cells labelled (40 epochs), 50% of the stimulated cells took the type their markers
        say under their own condition (stimulated CD4 T cells called megakaryocytes), 87% by
        the vote (200 epochs: 92% and 95%). The cells of combinations where every label
        trained, and of those holding a category a query added (a query's new donor), are
        read under their own conditions, as before.
        A query model's :meth:`write_to_adata` writes the three columns into obs
        (``cgmdvae_label``, ``cgmdvae_label_confidence``, ``cgmdvae_typicality``) and takes
        ``unknown_below`` too.

        {parameters}
        soft
            Return every cluster's probability instead, as scvi-tools'
            ``SCANVI.predict(soft=True)`` does.
        batch_size
            Cells per minibatch.
        unknown_below
            A typicality in [0, 1] (e.g. 0.1) under which a cell is labelled with the
            model's unlabelled mark instead (their number said at INFO); ``None`` (the
            default) labels every cell. Not with ``soft``. A model saved before deltavae
            kept the scores of its training cells refuses it (``typicality`` is NaN): train
            it again.

        Returns
        -------
        DataFrame indexed by the cells' names (``adata.obs_names``, of ``indices`` when
        given). Without ``soft``: ``label`` (categorical over the clusters that hold one of
        these cells, in :attr:`cluster_names`' order (the reference labels' order, ordered
        where the labels column is), and the unlabelled mark where ``unknown_below`` gave a
        cell it, as :meth:`write_to_adata`'s columns: scanpy draws a legend entry for every
        category and ``sc.tl.rank_genes_groups`` refuses an empty group;
        ``.cat.set_categories(model.predict_labels(soft=True).columns)`` adds the others back;
        an ordered labels column's scale is kept whole instead, every label and, with
        ``unknown_below``, the mark, so that the labels of two calls concatenate as one
        ordered column;
        integer labels as integers, but as strings ``"1"`` beside ``novel_j`` clusters:
        compare with ``adata.obs[labels_key].astype(str)``), ``confidence`` (in [1/K, 1]) and
        ``typicality`` (in [0, 1]; see above). With ``soft``: one column per cluster, every
        one of :attr:`cluster_names` in its order (typed as ``label``), rows summing to 1;
        ``idxmax(axis=1)`` is the label.
        To score the labels against a truth column, compare values, not categoricals:
        ``(pred["label"].astype(str) == adata.obs["cell_type"].astype(str)).mean()``, or
        :meth:`predict`'s array of labels (as scvi-tools' ``SCANVI.predict``) against it.
        pandas refuses ``==`` between two categoricals over other categories ("Categoricals
        can only be compared if 'categories' are the same"), as where a type was never
        predicted, or the truth holds one the reference lacks; so does it for
        :meth:`write_to_adata`'s ``obs["cgmdvae_label"]`` (and for any column scanpy's plots
        made categorical). ``pd.crosstab`` and ``sklearn.metrics`` (``accuracy_score``,
        ``adjusted_rand_score``) take the columns as they are.

        Examples
        --------
        >>> q.predict_labels().head()  # doctest: +SKIP
        >>> q.predict_labels(soft=True).idxmax(axis=1).head()  # doctest: +SKIP
        >>> q.predict_labels(unknown_below=0.1)["label"].value_counts()  # doctest: +SKIP
        >>> truth = query.obs["cell_type"].astype(str)  # doctest: +SKIP
        >>> (q.predict_labels(query)["label"].astype(str) == truth).mean()  # doctest: +SKIP
        """
        _check_soft(soft)
        check_unknown_below(unknown_below, soft)
        adata = self._resolve_adata(adata)
        # The model's own cells, all in their order: the typicality record's too.
        every_cell = adata is self.adata and indices is None
        # Labels and typicality's scores in one pass over the cells (one inference each).
        post = self._posterior(adata, indices, batch_size, scores=not soft, labels=True)
        probs = post["probs"]
        names = cell_names(adata, indices)
        label = labels_of(self, probs.argmax(1))
        if soft:
            return pd.DataFrame(
                probs.astype(np.float32), index=names, columns=pd.Index(label.categories)
            )
        label, typical = typical_labels(self, label, post["scores"], unknown_below, every_cell)
        label = kept_categories(label)  # as write_to_adata's columns: no empty group
        confidence = probs.max(1).astype(np.float32)
        return pd.DataFrame(
            {"label": label, "confidence": confidence, "typicality": typical}, index=names
        )
