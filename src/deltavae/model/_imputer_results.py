"""SpatialImputer's read-outs: imputed genes, and the deconvolution design's proportions and
abundance, with the ``adata`` and ``batch_size`` arguments NMFDeconv's read-outs take."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from .._checks import dense
from ._backed import writes_backed
from ._genes import check_own_adata
from ._imputer_reference import imputed_spots, requested_genes
from ._modes import in_eval_mode
from ._spots import fitted_rows, prefixed, second_argument_was, warn_empty_spots
from ._training_checks import _is_int, check_batch_size


def _default_chunk() -> int:
    """Spots imputed at a time without ``batch_size``: ``_imputer._CHUNK`` (4096)."""
    from . import _imputer

    return _imputer._CHUNK


class ImputerResultsMixin:
    """:meth:`impute`, :meth:`get_proportions`, :meth:`get_abundance`, :meth:`write_to_adata`."""

    #: obs column of the abundance, as NMFDeconv's.
    abundance_key = "cell_abundance"

    @in_eval_mode
    def impute(
        self,
        genes: list[str] | None = None,
        adata: AnnData | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Expected counts of reference genes in every spot, on the spots' scale.

        Parameters
        ----------
        genes
            Reference genes to impute, by name (measured ones too: the model's expectation
            of them); ``None`` for the reference genes the spots did not measure.
        adata
            The model's spots or some of them (matched by name, in any order; any genes);
            rows follow its order. Default every spot of the model.
        batch_size
            Spots imputed at a time (default 4096, fewer with neighbour profiles).

        Returns
        -------
        pandas.DataFrame
            Spots x genes, float64. A gene's platform factor is fitted for the measured genes
            only; the other genes take the geometric mean of those factors, so their overall
            level is the reference's, while their pattern across spots is what the model
            infers.

        Examples
        --------
        >>> imputer.impute(["gene_45"]).shape  # doctest: +SKIP
        >>> imputer.impute(adata=spots[spots.obs["region"] == "cortex"])  # doctest: +SKIP
        """
        check_batch_size(batch_size)
        if adata is not None:  # checked before the model's state
            adata = imputed_spots(self, adata)
        self._check_if_trained(warn=False)
        check_own_adata(self)  # its counts, read below, not normalised in place since setup
        chosen = requested_genes(self.reference_genes_, self.adata.var_names, genes)
        columns = torch.as_tensor(self.reference_genes_.get_indexer(chosen), dtype=torch.long)
        counts = self.adata_manager.get_from_registry(REGISTRY_KEYS.X_KEY)
        device, dtype = self.module.device, next(self.module.parameters()).dtype
        chunk = _default_chunk() if batch_size is None else int(batch_size)
        if self.profiles_ == "neighbours" and batch_size is None:
            # spots x cells similarities, at most 2^24 a chunk
            chunk = max(1, min(chunk, 2**24 // max(len(self.module.cell_states), 1)))
        blocks, n_empty = [], 0
        if self.design_ == "deconvolution":  # parameters per fitted spot; the latent: any spots
            rows = torch.as_tensor(fitted_rows(self), dtype=torch.long)
        for start in range(0, self.adata.n_obs, chunk):
            stop = min(start + chunk, self.adata.n_obs)
            block = counts[start:stop]
            n_empty += int((np.asarray(block.sum(axis=1)).ravel() == 0).sum())
            x = None  # the spots' counts: read only by the latent design and the neighbours
            if self.design_ == "latent" or self.profiles_ == "neighbours":
                x = torch.as_tensor(dense(block)).to(device, dtype)  # the module's: double too
            if self.design_ == "deconvolution":
                values = self.module.expected(rows[start:stop].to(device), x)
            else:
                values = self.module.expected(x)
            blocks.append(values[:, columns.to(device)].cpu().numpy().astype(np.float64))
        warn_empty_spots(n_empty, self.adata.n_obs, "imputed values", self.adata.n_vars)
        table = pd.DataFrame(np.concatenate(blocks), index=self.adata.obs_names, columns=chosen)
        return table if adata is None else table.loc[adata.obs_names]

    def _per_spot(self, adata, batch_size, method: str, what: str) -> np.ndarray:
        """Rows of the fitted spots that ``adata`` holds (all for ``None``), after the
        checks every per-spot read-out makes (deconvolution design only)."""
        check_batch_size(batch_size)  # as NMFDeconv's: nothing is read by minibatch here
        if self.design_ != "deconvolution":
            raise ValueError(
                f"{method} needs design='deconvolution' (the default): the latent design "
                f"fits no {what}. Build the model with design='deconvolution'."
            )
        if adata is not None:  # checked before the model's state
            adata = imputed_spots(self, adata, what=what.capitalize())
        self._check_if_trained(warn=False)
        rows = fitted_rows(self)
        if adata is not None:
            rows = rows[self.adata.obs_names.get_indexer(adata.obs_names)]
        return rows

    def get_proportions(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Shares of the reference states in every spot (deconvolution design).

        Parameters
        ----------
        adata
            The model's spots or some of them (matched by name, in any order; any genes),
            e.g. the AnnData passed to :meth:`from_reference`; rows follow its order. Default
            every spot of the model. Other spots are refused: the proportions are fitted per
            spot.
        batch_size
            Accepted, and checked, as NMFDeconv's: the proportions are fitted per spot, so
            nothing is read in minibatches.

        Returns
        -------
        pandas.DataFrame
            Spots x reference states, float64, rows summing to 1.

        Examples
        --------
        >>> imputer.get_proportions().idxmax(axis=1).head()  # doctest: +SKIP
        >>> imputer.get_proportions(spots[spots.obs["region"] == "cortex"])  # doctest: +SKIP
        """
        rows = self._per_spot(adata, batch_size, "get_proportions", "proportions")
        with torch.no_grad():
            values = self.module.proportions().cpu().numpy()[rows].astype(np.float64)
        values /= values.sum(axis=1, keepdims=True)
        names = self.adata.obs_names if adata is None else adata.obs_names
        return pd.DataFrame(values, index=names, columns=self.state_names_)

    def get_abundance(
        self, adata: AnnData | None = None, batch_size: int | None = None
    ) -> pd.Series:
        """Cells' worth of signal per spot (deconvolution design), as
        :meth:`deltavae.model.NMFDeconv.get_abundance`: ``a_s``, in units of one reference
        cell's expected counts (those of the reference's states), on the spots' platform
        scale.

        Parameters
        ----------
        adata, batch_size
            As for :meth:`get_proportions`.

        Returns
        -------
        pandas.Series
            float64, indexed by the spots' names, named ``"cell_abundance"``.

        Examples
        --------
        >>> imputer.get_abundance().describe()  # doctest: +SKIP
        """
        rows = self._per_spot(adata, batch_size, "get_abundance", "abundances")
        with torch.no_grad():
            values = torch.exp(self.module.log_abundance).cpu().numpy()[rows].astype(np.float64)
        names = self.adata.obs_names if adata is None else adata.obs_names
        return pd.Series(values, index=names, name=self.abundance_key)

    @writes_backed
    @second_argument_was("genes", is_new=_is_int)
    def write_to_adata(
        self,
        adata: AnnData | None = None,
        batch_size: int | None = None,
        key_added: str | None = None,
        *,
        genes: list[str] | None = None,
    ) -> list[str]:
        """Write the imputed genes to ``obsm["imputed"]``, a spots x genes DataFrame.

        The imputed genes are not among the spots' genes, so they go to ``obsm`` (gene names
        as columns) rather than to a layer, which would need the AnnData's own genes.

        Parameters
        ----------
        adata
            The spots (the model's spots or some of them, matched by name, in any order; any
            genes), e.g. the AnnData passed to :meth:`from_reference`; default the spots given
            to :meth:`load`, else the model's own copy.
        batch_size
            As in :meth:`impute` (as every model's ``write_to_adata``). Before, the second
            argument was ``genes``: a second positional argument other than an integer is
            still read as ``genes``, with a FutureWarning; pass it by name.
        key_added
            Prefix of the key written, ``obsm/<key_added>_imputed`` (several imputations,
            e.g. from two references, side by side); default none.
        genes
            As in :meth:`impute`.

        Returns
        -------
        The keys written, as ``"slot/key"`` strings.

        Examples
        --------
        >>> imputer.write_to_adata(spots)  # doctest: +SKIP
        ['obsm/imputed']
        >>> imputer.write_to_adata(spots, genes=["gene_45"], key_added="ref2")  # doctest: +SKIP
        ['obsm/ref2_imputed']
        """
        (key,) = prefixed(key_added, self.imputed_key)
        check_batch_size(batch_size)
        adata = imputed_spots(self, self._resolve_adata(self._write_target(adata)))
        adata.obsm[key] = self.impute(genes, adata, batch_size)  # the same spots, any order
        return [f"obsm/{key}"]
