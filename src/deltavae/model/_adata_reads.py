"""The AnnData a deltavae model reads and writes: its setup looked up (a copy or a subset
since setup named as such) and registered with the field registries sealed; an AnnData of new
cells read by name on the training genes, its labels, categories and data checked before
scvi-tools registers it; and which AnnData a read-out reads and ``write_to_adata`` writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData

from .._anndata_or_folder import check_anndata
from ._backing import record_contents
from ._count_advice import layer_fixed
from ._genes import check_own_adata, match_genes
from ._labels import check_known_categories, with_labels_column
from ._live_models import forget_when_gone
from ._matrices import check_still_on_disk, memory_copy
from ._obs_checks import check_size_factors
from ._scvi_glue import _sealed, _transferring_quietly, forget_old_copies
from ._shared_setup import check_setup_columns, fresh_copy_id, take_back_read
from ._training_checks import rows_unit
from ._validation import check_data


class AnnDataReadsMixin:
    """How every deltavae model finds, checks and registers the AnnData it reads (mixed into
    :class:`~deltavae.model._base.DeltaModelMixin`, before scvi-tools' ``BaseModelClass``)."""

    @classmethod
    def _get_most_recent_anndata_manager(cls, adata, required: bool = False):
        """scvi-tools' lookup of the setup of ``adata``, with its "Did you make a copy?" said as
        what to do: a copy or subset (e.g. to highly variable genes) needs its own setup."""
        try:
            manager = super()._get_most_recent_anndata_manager(adata, required=required)
        except ValueError as err:
            if "does not match the AnnData object" not in str(err):
                raise
            raise ValueError(
                "This AnnData's setup is not current: it is a copy or subset of the one set up "
                "(e.g. subset to highly variable genes after setup_anndata), or a copy of it was "
                f"set up since. Call {cls.__name__}.setup_anndata on it, then build the model."
            ) from err
        n_vars = None if manager is None else manager.summary_stats.get("n_vars")
        if n_vars is not None and adata.n_vars != n_vars:
            # Subset in place (scanpy's highly_variable_genes(subset=True), adata._inplace_
            # subset_var): the object, and so its setup's id, stayed; its genes did not.
            raise ValueError(
                f"This AnnData's setup is not current: it was set up with {n_vars} genes and "
                f"holds {adata.n_vars} now (subset in place after setup_anndata, e.g. by "
                "sc.pp.highly_variable_genes(..., subset=True)). Call "
                f"{cls.__name__}.setup_anndata on it again, then build the model."
            )
        return manager

    @classmethod
    def register_manager(cls, adata_manager):
        """scvi-tools' registration of ``adata_manager``, its field registries sealed."""
        record_contents(adata_manager.adata)  # a file replaced since is refused (_backing.py)
        fresh_copy_id(cls, adata_manager)  # a copy set up: the original keeps its setup
        super().register_manager(_sealed(adata_manager))

    def _register_manager_for_instance(self, adata_manager):
        registry, name = adata_manager.registry, type(self).__name__
        check_setup_columns(adata_manager, registry, name, of=self)  # another's taken back
        super()._register_manager_for_instance(_sealed(adata_manager))
        forget_when_gone(self)  # scvi-tools keeps a model's registrations for good

    def _training_genes(self) -> pd.Index | None:
        registry = getattr(self, "registry_", None) or {"field_registries": {}}
        state = registry["field_registries"].get("X", {}).get("state_registry", {})
        names = state.get("column_names")
        return None if names is None else pd.Index(np.asarray(names).astype(str))

    def _match_genes(self, adata: AnnData) -> AnnData:
        """``adata`` with the training genes in the training order, read by name from an
        AnnData with more genes too, as ``write_to_adata`` reads them (:func:`match_genes`)."""
        return match_genes(adata, self._training_genes(), extra_genes=True)

    def _validate_anndata(self, adata: AnnData | None = None, copy_if_view: bool = True):
        """scvi-tools' check and registration, after the genes are matched by name (once for
        every public method that reads an AnnData)."""
        given = adata = check_anndata(adata)
        check_still_on_disk(getattr(self, "_adata", None) if adata is None else adata)
        if adata is not None and adata is not getattr(self, "_adata", None):
            if adata.is_view and copy_if_view:
                # scvi-tools copied a view in place (and fails on a backed one): ours is a copy.
                adata = memory_copy(adata)
            adata = self._match_genes(adata)
            if getattr(self, "registry_", None) is not None:
                adata = with_labels_column(adata, self.registry_)
                check_known_categories(adata, self.registry_, model=self)
                check_size_factors(adata, self.registry_["setup_args"].get("size_factor_key"))
                layer = self.registry_["setup_args"].get("layer")
                kind = self._data_kind
                with layer_fixed():  # the model's layer: advice puts the counts there
                    unit = f"{rows_unit(self)}s"
                    check_data(adata, layer, kind, min_cells=1, warn_empty=False, unit=unit)
            take_back_read(self, adata)  # read before: another setup or dropped codes since
        else:
            check_own_adata(self)
        with _transferring_quietly():  # registered like the training AnnData
            adata = super()._validate_anndata(adata, copy_if_view=copy_if_view)
        if adata is not given and adata is not getattr(self, "_adata", None):
            forget_old_copies(self, adata)  # a copy made here: not kept for every read
        return adata

    def _resolve_adata(self, adata: AnnData | None) -> AnnData:
        adata = self.adata if adata is None else check_anndata(adata)
        if adata is None:
            raise ValueError("No AnnData given and the model holds none.")
        return adata

    def _write_target(self, adata: AnnData | None) -> AnnData:
        """Where ``write_to_adata`` writes: ``adata``, else the AnnData given to ``load`` (also
        when the model reads a copy: genes aligned, labels added, spots reordered), else its own."""
        return self._resolve_adata(getattr(self, "_query_adata", None) if adata is None else adata)
