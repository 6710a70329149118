"""``model.adata = other``: scvi-tools' setter, with the AnnData checked and aligned as every
read-out's AnnData is; ``view_registry``, which scvi-tools 1.4 broke; and ``minify_adata``,
which deltavae's models do not offer."""

from __future__ import annotations

from anndata import AnnData
from scvi import REGISTRY_KEYS

from ..train._record import cells_digest
from ._query_source import keep_write_target
from ._spots import SPOT_INDEX, with_spot_index


class AnnDataSetter:
    """The AnnData a model reads, which may be set to another, and a view of its setup
    (mixed into DeltaModelMixin).

    scvi-tools' setter registered the AnnData as it was and kept that registration's genes as
    the model's: genes in another order were read by position (after a warning that they were
    reordered), and the model's training genes became that order, so every later read,
    ``save`` and ``load`` misread them too. Here the model reads what its read-outs read (genes
    matched by name, a labels column added, a per-spot model's spots put in their fitted
    order: a copy where that differs from ``adata``) and writes results into ``adata``.
    """

    @property
    def adata(self) -> AnnData:
        """The AnnData the model reads (its setup, cells, genes). Set another with the
        model's genes and categories to read and write that one instead (genes in another
        order are matched by name, on a copy; results are written into the AnnData set)."""
        return self._adata

    @adata.setter
    def adata(self, adata: AnnData) -> None:
        if adata is None:
            raise ValueError("adata cannot be None.")
        given = adata
        # Setting its own AnnData again keeps where results go (a loaded or query model's).
        keep = getattr(self, "_query_adata", None) if adata is self._adata else None
        fitted = {
            name: getattr(self, name, None) for name in ("spot_names_", "spot_totals_", "registry_")
        }
        adata = self._spots_to_load(adata, fitted, self.module.state_dict())
        fields = self.registry_["field_registries"]
        if REGISTRY_KEYS.INDICES_KEY in fields and SPOT_INDEX not in adata.obs:
            adata = with_spot_index(adata)  # in the fitted order: each spot's own row
        adata = self._validate_anndata(adata)
        manager = self.get_anndata_manager(adata, required=True)
        self._adata, self._adata_manager = adata, manager
        self.registry_, self.summary_stats = manager.registry, manager.summary_stats
        digest = getattr(self, "split_cells_", None)
        if digest is not None and cells_digest(adata.obs_names) != digest:
            # The split's positions are of the cells it trained on, not of these (read as
            # theirs, a test split's ran past the end): forgotten, as load forgets them.
            self.train_indices_ = self.validation_indices_ = self.test_indices_ = None
        # Results go into the AnnData set, as load's and load_query_data's.
        if adata is not given or keep is None:
            keep_write_target(self, given if adata is not given else None)

    def view_registry(self, hide_state_registries: bool = False) -> None:
        """Print the model's setup, as :meth:`view_anndata_setup` does (scvi-tools' own
        ``view_registry`` of a model failed: "object has no attribute '_registry'").

        Parameters
        ----------
        hide_state_registries
            Leave out each field's state registry (its categories and their codes).

        Examples
        --------
        >>> vae.view_registry(hide_state_registries=True)  # doctest: +SKIP
        """
        self.view_anndata_setup(hide_state_registries=hide_state_registries)

    @property
    def minified_data_type(self) -> None:
        """Always None, as no deltavae model has a minified mode (scvi-tools' attribute,
        which code written for its models reads before a read-out, as scvi-tools' own do)."""
        return None

    def minify_adata(self, *args, **kwargs) -> None:
        """Not offered: scvi-tools' ``SCVI.minify_adata`` keeps each cell's posterior in place
        of its counts, but deltavae's models read the counts in every read-out (the library
        size, expression, clusters), so they have no minified mode. Keep the AnnData as it is
        (or save only the results :meth:`write_to_adata` writes); an AnnData minified by
        scvi-tools is refused by the models.

        Examples
        --------
        >>> vae.minify_adata()  # doctest: +SKIP
        NotImplementedError: ZINBVAE has no minified mode ...
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no minified mode: it reads the counts in every "
            "read-out, so minify_adata (scvi-tools' SCVI's) is not offered. Keep the AnnData "
            "with its counts; to share results, write them (model.write_to_adata()) and save "
            "those obs/obsm columns."
        )
