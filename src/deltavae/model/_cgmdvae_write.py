"""CGMDVAE's ``write_to_adata``: latents, clusters and cluster probabilities, and for a query
model the transferred labels with their confidence and typicality (``unknown_below`` marks the
cells unlike the reference's, as :meth:`~deltavae.model.CGMDVAE.predict_labels` does)."""

from __future__ import annotations

import numpy as np
from anndata import AnnData

from .._docs import doc_params, doc_write_keyed
from ._backed import writes_backed
from ._label_colours import carry_label_colours
from ._label_order import kept_categories
from ._labels import labels_of
from ._registered_columns import refuse_overwriting_read_columns, warn_changing_others_columns
from ._stale_labels import drop_stale_labels
from ._typicality import check_unknown_below, typical_labels
from ._validation import check_key_added

_UNKNOWN_BELOW = """\
unknown_below
    A query model's: a typicality in [0, 1] (e.g. 0.1) under which a cell's
    ``obs["<key_added>_label"]`` is the model's unlabelled mark (``unlabeled_category``,
    ``"Unknown"``) instead of a reference label, as :meth:`predict_labels`'
    ``unknown_below``; ``None`` (the default) labels every cell. A model that is not a query
    model writes no labels and refuses it (:meth:`predict_labels` marks its labels).
"""

_write_doc = doc_write_keyed.replace("\nReturns\n", f"{_UNKNOWN_BELOW}\nReturns\n", 1)


def _refuse_unknown_below(model, unknown_below, key: str) -> None:
    """``unknown_below`` is a typicality, and given to a query model only (the one whose write
    holds labels)."""
    check_unknown_below(unknown_below, False)
    if unknown_below is not None and not model.is_query_model:
        raise ValueError(
            f"unknown_below={unknown_below!r} marks the labels a query model writes "
            f"(obs['{key}_label']); this model is not a query model and writes its clusters "
            f"only. Map the cells onto it (CGMDVAE.load_query_data(adata, model)), or take "
            "model.predict_labels(adata, unknown_below=...)."
        )


class WriteMixin:
    """``write_to_adata`` of CGMDVAE."""

    @writes_backed
    @doc_params(write=_write_doc)
    def write_to_adata(
        self,
        adata: AnnData | None = None,
        batch_size: int | None = None,
        key_added: str = "cgmdvae",
        unknown_below: float | None = None,
    ) -> list[str]:
        """Write latents, clusters and cluster probabilities into the AnnData.

        Writes ``obsm["X_cgmdvae"]`` (z mean), ``obsm["X_cgmdvae_w"]`` (w mean),
        ``obs["cgmdvae_cluster"]`` (categorical over the clusters that hold cells, in
        :attr:`cluster_names`' order, the labels' or a reference's: ``sc.tl.rank_genes_groups``
        refuses an empty group; ``.cat.set_categories(model.cluster_names)`` adds them; where
        the labels column is ordered, over every label, ordered, so that ``anndata.concat``
        of two AnnData written keeps one ordered column: it made ``object`` of ordered
        columns whose categories differ; ``.cat.remove_unused_categories()`` drops them),
        ``obsm["cgmdvae_cluster_probs"]`` (a column per cluster, named in
        ``uns["cgmdvae"]["cluster_names"]``) and ``uns["cgmdvae"]`` (cluster names, typed as
        ``obs["cgmdvae_cluster"]``'s (see :attr:`cluster_names`), their sizes in this AnnData
        and the clusters without cells in it: of a subset, not of the model); for a query
        model also ``obs["cgmdvae_label"]``, ``obs["cgmdvae_label_confidence"]`` and
        ``obs["cgmdvae_typicality"]`` (:meth:`predict_labels`' ``label`` (its categories as
        ``obs["cgmdvae_cluster"]``'s, and the unlabelled mark with ``unknown_below``, kept in
        an ordered column where no cell holds it), ``confidence`` and
        ``typicality``: how typical each cell is of the reference's cells, near 0 for
        a cell of a type the reference never saw; NaN for a reference saved before deltavae
        kept their scores; score the labels against a truth column by value,
        ``query.obs["cgmdvae_label"].astype(str) == query.obs["cell_type"].astype(str)``:
        pandas refuses ``==`` between categoricals over other categories, as where a type was
        never predicted). With another ``key_added``, ``"cgmdvae"`` in each of these
        keys is replaced by it. Clusters are written by name (as scanpy's ``leiden``), where
        :meth:`predict_clusters` gives indices into ``uns["cgmdvae"]["cluster_names"]``.
        Columns named after the labels get the colours of ``uns["<labels_key>_colors"]`` by
        name (``adata``'s, the model's AnnData's, a query model's reference's) where every
        category has one, unless the colours they have cover them (``uns`` keys returned),
        so that scanpy draws each cell type as in the labels' plot (as ``sc.tl.ingest``).

        {write}

        Examples
        --------
        >>> g.write_to_adata()  # doctest: +SKIP
        ['obsm/X_cgmdvae', 'obsm/X_cgmdvae_w', 'obs/cgmdvae_cluster', ...]
        >>> g_k12.write_to_adata(adata, key_added="cgmdvae_k12")  # doctest: +SKIP
        ['obsm/X_cgmdvae_k12', 'obsm/X_cgmdvae_k12_w', 'obs/cgmdvae_k12_cluster', ...]
        >>> q.write_to_adata(query, unknown_below=0.1)  # doctest: +SKIP
        >>> query.obs["cgmdvae_label"].value_counts()  # "Unknown" under 0.1  # doctest: +SKIP
        """
        key = check_key_added(key_added, embedding=True)
        _refuse_unknown_below(self, unknown_below, key)
        query = self.is_query_model
        written = [f"{key}_cluster", *([f"{key}_label", f"{key}_typicality"] * query)]
        refuse_overwriting_read_columns(self.registry_, written, key)
        adata = self._write_target(adata)
        post = self._posterior(adata, None, batch_size, scores=query, labels=True)  # one pass
        drop_stale_labels(adata, key, query)  # an earlier query model's
        clusters = post["probs"].argmax(1)
        labelled = labels_of(self, clusters)  # integer labels as integers, as obs holds them
        names = labelled.categories.to_numpy()  # object for pandas string dtypes (pandas 3)
        sizes = np.bincount(clusters, minlength=len(names))
        # rank_genes_groups: no empty groups; an ordered column keeps its scale (concat)
        labelled = kept_categories(labelled)
        columns = {f"{key}_cluster": labelled}
        if query:
            label, typical = typical_labels(self, labelled.copy(), post["scores"], unknown_below)
            if unknown_below is not None:  # the mark's category only where a cell holds it
                label = kept_categories(label)
            columns[f"{key}_label"] = label
        warn_changing_others_columns(self, adata, columns, key)  # before anything is written
        adata.obsm[f"X_{key}"] = post["z"].astype(np.float32)
        adata.obsm[f"X_{key}_w"] = post["w"].astype(np.float32)
        coloured = carry_label_colours(self, adata, columns)
        adata.obs[f"{key}_cluster"] = labelled
        adata.obsm[f"{key}_cluster_probs"] = post["probs"].astype(np.float32)
        adata.uns[key] = {
            "cluster_names": names,
            "cluster_sizes": sizes,
            "empty_clusters": names[sizes == 0],
        }
        written = [f"obsm/X_{key}", f"obsm/X_{key}_w", f"obs/{key}_cluster"]
        written += [f"obsm/{key}_cluster_probs", f"uns/{key}"]
        if query:
            adata.obs[f"{key}_label"] = columns[f"{key}_label"]
            adata.obs[f"{key}_label_confidence"] = post["probs"].max(1).astype(np.float32)
            adata.obs[f"{key}_typicality"] = typical
            written += [f"obs/{key}_label", f"obs/{key}_label_confidence"]
            written += [f"obs/{key}_typicality"]
        return written + coloured
