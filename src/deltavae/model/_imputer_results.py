"""SpatialImputer's read-outs: imputed genes, the deconvolution design's proportions and
abundance and the latent design's latent, with the ``adata``, ``batch_size`` and ``indices``
arguments NMFDeconv's read-outs take."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from ..distributions._draws import CellDraws
from ._backed import writes_backed
from ._de_checks import check_draws
from ._few_cell_genes import warn_few_cell_genes
from ._gathered import Gathered
from ._genes import check_own_adata
from ._imputer_reference import OTHER_SPOTS, imputed_spots, requested_genes, warn_silent_genes
from ._modes import in_eval_mode
from ._positions import indices_after_adata
from ._query_source import spots_now
from ._same_spots import check_same_spots, given_order
from ._spots import (
    fitted_rows,
    missing_empty_rows,
    prefixed,
    second_argument_was,
    selected_rows,
    warn_empty_spots,
)
from ._training_checks import _is_int, check_batch_size
from ._validation import check_flags


def _default_chunk() -> int:
    """Spots imputed at a time without ``batch_size``: ``_imputer._CHUNK`` (4096)."""
    from . import _imputer

    return _imputer._CHUNK


class ImputerResultsMixin:
    """:meth:`impute`, :meth:`get_latent_representation`, :meth:`get_proportions`,
    :meth:`get_abundance`, :meth:`write_to_adata`."""

    #: obsm key of the proportions and obs column of the abundance, as NMFDeconv's.
    proportions_key = "proportions"
    abundance_key = "cell_abundance"
    #: obsm key of the latent design's spots' latent (``X_<key_added>_spatialimputer``).
    latent_key = "X_spatialimputer"

    @indices_after_adata("batch_size", "indices")
    def impute(
        self,
        genes: list[str] | None = None,
        adata: AnnData | None = None,
        indices=None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Expected counts of reference genes in every spot, on the spots' scale.

        Parameters
        ----------
        genes
            Reference genes to impute, by name (one name is one gene; a set is read in the
            reference's order), in the order wanted (measured ones too: the
            model's expectation of them, fitted to their counts, so no test of the imputation:
            hide genes from the spots and refit for that, as ``benchmarks/imputation.py``);
            ``None`` for the reference genes the spots did not measure, in the reference's
            order.
        adata
            The model's spots or some of them (matched by name, in any order; any genes);
            rows follow its order. Default every spot of the model; once the spots given
            to :meth:`from_reference` (or :meth:`load`) were subset or reordered in place
            (``sc.pp.filter_cells``), those they hold now, in their order. Spots of those
            names holding other counts (another slide's, its barcodes the same; the spots
            given, their ``X`` replaced since) are refused.
        indices
            Spots of ``adata`` (default the model's) to impute: positions or a boolean mask,
            as the single-cell models' ``indices`` (default all), in this order.
        batch_size
            Spots imputed at a time (default 4096, fewer with neighbour profiles).

        Returns
        -------
        pandas.DataFrame
            Spots x genes, float64. A gene's platform factor is fitted for the measured genes
            only; the other genes take the geometric mean of those factors, so their overall
            level is the reference's, while their pattern across spots is what the model
            infers. A spot without counts in the measured genes has no evidence of its
            expression: its row is NaN (warned, counting such spots), as NMFDeconv's
            proportions of such spots, not the model's output for an all-zero spot (its
            start, or the mean spot), which would look like a real imputation.
            Reference genes without counts come out about 0 in every spot, no estimate of
            their expression: a warning names those imputed. So does another for genes the
            reference counts in fewer than 5 cells, whose values rest on those few cells
            (on a lymph-node Visium pair they tracked the real counts barely: Pearson
            0.02-0.09, against 0.3-0.5 for genes counted in 20 cells or more).

        Examples
        --------
        >>> imputer.impute(["gene_45"]).shape  # doctest: +SKIP
        >>> imputer.impute(adata=spots[spots.obs["region"] == "cortex"])  # doctest: +SKIP
        """
        return self._imputed(genes, adata, batch_size, indices)[0]

    @in_eval_mode
    def _imputed(self, genes, adata, batch_size, indices, latents=None) -> tuple:
        """:meth:`impute`'s table and which of its spots have no counts (their NaN rows); the
        latent design's spots' latents (posterior means, float32) appended to ``latents``,
        a list, when given, from the same read of the spots."""
        check_batch_size(batch_size)
        positions, names = self._spot_positions(adata, indices)  # checked before the state
        self._check_if_trained(warn=False)
        check_own_adata(self)  # its counts, read below, not normalised in place since setup
        given = getattr(self, "_query_adata", None) if adata is None else adata
        spot_genes = () if given is None else given.var_names  # the model's: the shared only
        chosen = requested_genes(self.reference_genes_, self.adata.var_names, genes, spot_genes)
        layer = getattr(self, "reference_layer_", None)  # from_reference's, for the advice
        warn_silent_genes(chosen, self._silent_genes, named=genes is not None, layer=layer)
        warn_few_cell_genes(self, chosen, named=genes is not None, layer=layer)
        columns = torch.as_tensor(self.reference_genes_.get_indexer(chosen), dtype=torch.long)
        device, dtype = self.module.device, next(self.module.parameters()).dtype
        chunk = _default_chunk() if batch_size is None else int(batch_size)
        if self.profiles_ == "neighbours" and batch_size is None:
            # spots x cells similarities, at most 2^24 a chunk
            chunk = max(1, min(chunk, 2**24 // max(len(self.module.cell_states), 1)))
        empty, columns = [], columns.to(device)
        # Values kept on the device and brought to the host together: a .cpu() a chunk made
        # a GPU wait.
        gathered = Gathered()
        # The spots' counts: read only by the latent design and the neighbours.
        reads_counts = self.design_ == "latent" or self.profiles_ == "neighbours"
        if self.design_ == "deconvolution":  # parameters per fitted spot; the latent: any spots
            rows = torch.as_tensor(fitted_rows(self), dtype=torch.long)
            # the observed genes' cells, made once (each making waits for the device)
            cells = self.module.observed_cells() if self.module.neighbours else None
        for start in range(0, len(positions), chunk):
            at = positions[start : start + chunk]
            x = None
            if reads_counts:
                read, back = np.unique(at, return_inverse=True)  # in file order, each once
                block = self._read_rows(read)[back]
                empty.append(block.sum(axis=1) == 0)
                x = torch.as_tensor(block).to(device, dtype)  # the module's: double too
            if self.design_ == "deconvolution":
                values = self.module.expected(rows[at].to(device), x, cells)
            else:
                values = self.module.expected(x)
                if latents is not None:  # as get_latent_representation reads them
                    with torch.no_grad():
                        gathered.add(z=self.module._encode(x, 0).loc)
            gathered.add(values=values[:, columns])
        got = gathered.result()
        if latents is not None and "z" in got:
            latents.append(got["z"].numpy().astype(np.float32))
        values = got["values"].numpy() if got else np.zeros((0, len(chosen)))
        values = values.astype(np.float64)
        if not reads_counts:  # type profiles: the spots' totals only, not a dense copy
            empty = [self._empty(positions)]
        empty = np.concatenate(empty) if empty else np.zeros(0, dtype=bool)
        missing_empty_rows(empty, "imputed values", self, values)
        return pd.DataFrame(values, index=names, columns=chosen), empty

    def _spot_positions(self, adata, indices, what="Imputations") -> tuple[np.ndarray, pd.Index]:
        """Rows, in the model's spots, of ``adata``'s spots (the model's for ``None``; its own
        spots only, by name) that ``indices`` selects, and their names, in that order. For
        ``None``, the spots given to ``from_reference`` or ``load`` where they were subset,
        reordered or their data replaced in place since (``spots_now``)."""
        if adata is None:
            adata = spots_now(self)
        if adata is not None:
            adata = imputed_spots(self, adata, what)
        spots = self.adata if adata is None else adata
        names = spots.obs_names if adata is not None else given_order(self)
        names = spots.obs_names if names is None else names  # the order of the spots given
        positions = np.arange(spots.n_obs)
        if adata is not None or not names.equals(spots.obs_names):
            positions = self.adata.obs_names.get_indexer(names)
        if adata is not None:
            check_same_spots(self, adata, positions, OTHER_SPOTS[self.design_])
        rows = selected_rows(spots, indices)
        if rows is None:
            return positions, names
        return positions[rows], names[rows]

    @in_eval_mode
    def get_latent_representation(
        self,
        adata: AnnData | None = None,
        indices=None,
        give_mean: bool = True,
        mc_samples: int = 5000,
        batch_size: int | None = None,
        return_dist: bool = False,
        *,
        reference: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The joint latent space of the latent design: the posterior of z of every spot (or,
        with ``reference=True``, of every reference cell), spots x ``n_latent``, float32.

        The arguments are scvi-tools' ``get_latent_representation``'s, in its order. One
        encoder maps spots and reference cells (their counts of the spots' genes) into the
        same space, as scvi-tools' GIMVI does: neighbours across the two transfer labels. A
        spot without counts in the measured genes gets a NaN row (mean and variance; warned,
        counting such spots), as in :meth:`impute`.

        Parameters
        ----------
        adata
            The model's spots or some of them (matched by name, in any order; any genes);
            default every spot of the model, or the spots given, changed in place, as in
            :meth:`impute`.
        indices
            Spots of ``adata`` to read, as in :meth:`impute`.
        give_mean
            The posterior mean; ``False`` draws one z from q, its normal draws made on the
            CPU spot after spot from a generator seeded by torch's (CPU) generator: one
            ``torch.manual_seed``, the same z on a GPU as on the CPU and for any
            ``batch_size``.
        mc_samples
            Accepted for scvi-tools' signature; q is Gaussian, so its mean needs no sampling.
        batch_size
            Spots (or cells) encoded at a time; default all of them up to 4096.
        return_dist
            Return the mean and the variance of q instead.
        reference
            The reference cells' latents instead of the spots' (``adata`` and ``indices``
            then unused: pass neither); rows in the reference's order.

        Examples
        --------
        >>> spots.obsm["X_imputer"] = imputer.get_latent_representation()  # doctest: +SKIP
        >>> cells = imputer.get_latent_representation(reference=True)  # doctest: +SKIP
        """
        check_batch_size(batch_size)
        check_flags(give_mean=give_mean, return_dist=return_dist, reference=reference)
        check_draws({"mc_samples": mc_samples}, ("mc_samples",))  # unread, but not "a"
        if self.design_ != "latent":
            raise ValueError(
                "get_latent_representation needs design='latent': the deconvolution design "
                "has no latent space (its spots' read-outs are get_proportions() and "
                "get_abundance()). Build the model with design='latent'."
            )
        if reference and (adata is not None or indices is not None):
            raise ValueError(
                "reference=True reads the reference cells the model holds; adata and indices "
                "select spots: pass neither."
            )
        positions = None
        if not reference:
            positions, _ = self._spot_positions(adata, indices, "Latents")
        self._check_if_trained(warn=False)
        if not reference:
            check_own_adata(self)  # its counts, read below, not normalised in place since setup
        module, chunk = self.module, _default_chunk() if batch_size is None else int(batch_size)
        dtype = next(module.parameters()).dtype
        n_rows = len(module.reference_counts) if reference else len(positions)
        gathered, empty = Gathered(), []  # on the host together: a .cpu() a chunk waited
        draws = None if give_mean or return_dist else CellDraws()
        for start in range(0, n_rows, chunk):
            if reference:
                x = module.reference_counts[start : start + chunk][:, module.visible]
            else:
                read, back = np.unique(positions[start : start + chunk], return_inverse=True)
                x = torch.as_tensor(self._read_rows(read)[back])
                empty.append((x.sum(dim=1) == 0).numpy())
            with torch.no_grad():
                q = module._encode(x.to(module.device, dtype), int(reference))
                z = (
                    q.loc
                    if draws is None
                    else q.loc + q.scale * draws.standard_normal(q.loc, 1, "z")
                )
            gathered.add(z=z, scale=q.scale if return_dist else None)
        got = {key: [value.numpy().astype(np.float32)] for key, value in gathered.result().items()}
        locs, scales = np.concatenate(got.get("z", [])), got.get("scale")
        scales = None if scales is None else np.concatenate(scales) ** 2
        if not reference:  # as get_proportions and impute: NaN rows for spots without counts
            empty = np.concatenate(empty) if empty else np.zeros(0, dtype=bool)
            missing_empty_rows(empty, "latents", self, *([locs, scales] if return_dist else [locs]))
        return (locs, scales) if return_dist else locs

    def _empty(self, positions: np.ndarray) -> np.ndarray:
        """Which of the model's spots at ``positions`` (repeats too) have no counts."""
        read, back = np.unique(positions, return_inverse=True)
        return self._row_totals(read)[back] == 0

    def _per_spot(self, adata, batch_size, indices, method: str, what: str):
        """Rows of the fitted spots that ``adata`` holds (all for ``None``) and ``indices``
        selects, their names and their rows in the model's AnnData, after the checks every
        per-spot read-out makes (deconvolution design only)."""
        check_batch_size(batch_size)  # as NMFDeconv's: nothing is read by minibatch here
        if self.design_ != "deconvolution":
            raise ValueError(
                f"{method} needs design='deconvolution' (the default): the latent design "
                f"fits no {what}. Build the model with design='deconvolution'."
            )
        # The spots checked before the model's state.
        positions, names = self._spot_positions(adata, indices, what.capitalize())
        self._check_if_trained(warn=False)
        return fitted_rows(self)[positions], names, positions

    @indices_after_adata("batch_size", "indices")
    def get_proportions(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Shares of the reference states in every spot (deconvolution design).

        Parameters
        ----------
        adata
            The model's spots or some of them (matched by name, in any order; any genes),
            e.g. the AnnData passed to :meth:`from_reference`; rows follow its order. Default
            every spot of the model, or the spots given, changed in place, as in
            :meth:`impute`. Other spots are refused: the proportions are fitted per
            spot (as are spots of the model's names holding other counts, another slide's).
        indices
            Spots of ``adata`` (default the model's) to read, as in :meth:`impute`.
        batch_size
            Accepted, and checked, as NMFDeconv's: the proportions are fitted per spot, so
            nothing is read in minibatches.

        Returns
        -------
        pandas.DataFrame
            Spots x reference states, float64, rows summing to 1. A spot without counts in
            the measured genes has a NaN row (warned, counting such spots), as in
            :meth:`impute`: its fitted proportions are its start, not an estimate.

        Examples
        --------
        >>> imputer.get_proportions().idxmax(axis=1).head()  # doctest: +SKIP
        >>> imputer.get_proportions(spots[spots.obs["region"] == "cortex"])  # doctest: +SKIP
        """
        rows, names, at = self._per_spot(
            adata, batch_size, indices, "get_proportions", "proportions"
        )
        values = self._fitted_proportions(rows)
        # As NMFDeconv's and impute: NaN, not the start of a spot without counts.
        missing_empty_rows(self._empty(at), "proportions", self, values)
        return pd.DataFrame(values, index=names, columns=self.state_names_)

    def _fitted_proportions(self, rows: np.ndarray) -> np.ndarray:
        """The fitted proportions of the spots at ``rows``, float64, rows summing to 1."""
        with torch.no_grad():
            values = self.module.proportions().cpu().numpy()[rows].astype(np.float64)
        values /= values.sum(axis=1, keepdims=True)
        return values

    def _fitted_abundance(self, rows: np.ndarray) -> np.ndarray:
        """The fitted abundance of the spots at ``rows``, float64."""
        with torch.no_grad():
            return torch.exp(self.module.log_abundance).cpu().numpy()[rows].astype(np.float64)

    @indices_after_adata("batch_size", "indices")
    def get_abundance(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.Series:
        """Cells' worth of signal per spot (deconvolution design), as
        :meth:`deltavae.model.NMFDeconv.get_abundance`: ``a_s``, in units of one reference
        cell's expected counts (those of the reference's states), on the spots' platform
        scale.

        Parameters
        ----------
        adata, indices, batch_size
            As for :meth:`get_proportions`.

        Returns
        -------
        pandas.Series
            float64, indexed by the spots' names, named ``"cell_abundance"``; NaN for a
            spot without counts in the measured genes (warned), as :meth:`get_proportions`.

        Examples
        --------
        >>> imputer.get_abundance().describe()  # doctest: +SKIP
        """
        rows, names, at = self._per_spot(adata, batch_size, indices, "get_abundance", "abundances")
        values = self._fitted_abundance(rows)
        missing_empty_rows(self._empty(at), "abundances", self, values)
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
        """Write the imputed genes to ``obsm["imputed"]``, a spots x genes DataFrame of
        :meth:`impute`'s expected counts (not normalised; see its Returns for their scale), and,
        for the latent design, the spots' latent (posterior mean, as
        :meth:`get_latent_representation`) to ``obsm["X_spatialimputer"]``; for the
        deconvolution design, what :meth:`NMFDeconv.write_to_adata` writes: the
        proportions to ``obsm["proportions"]`` (spots x reference states) and the abundance to
        ``obs["cell_abundance"]``.

        The imputed genes are not among the spots' genes, so they go to ``obsm`` (gene names
        as columns) rather than to a layer, which would need the AnnData's own genes. Genes
        and reference states named with a "/" keep their names, and were said when the model
        was built: anndata >= 0.13 cannot write them to .h5ad as column names. Spots
        without counts in the measured genes get NaN rows in every key written (as the
        read-outs give them): one warning counts them, for the imputed values and the
        proportions (or latents) alike. A backed AnnData whose file no longer holds its spots
        in its order (rewritten since it was opened, or obs_names changed in memory) is
        refused before anything is written.

        Parameters
        ----------
        adata
            The spots (the model's spots or some of them, matched by name, in any order; any
            genes; others besides, left out of the fit, get NaN rows, with a warning), e.g.
            the AnnData passed to :meth:`from_reference`; default the spots given
            to :meth:`load` or to :meth:`from_reference` (not a view of them: the model's own
            copy then).
        batch_size
            As in :meth:`impute` (as every model's ``write_to_adata``). Before, the second
            argument was ``genes``: a second positional argument other than an integer is
            still read as ``genes``, with a FutureWarning; pass it by name.
        key_added
            Prefix of the keys written (several imputations, e.g. from two references, side
            by side): ``obsm/<key_added>_imputed``, ``obsm/<key_added>_proportions``,
            ``obs/<key_added>_cell_abundance``, and the latent design's
            ``obsm/X_<key_added>_spatialimputer``; default none.
        genes
            As in :meth:`impute`.

        Returns
        -------
        The keys written, as ``"slot/key"`` strings, the imputed genes' first.

        Examples
        --------
        >>> imputer.write_to_adata(spots)  # doctest: +SKIP
        ['obsm/imputed', 'obsm/proportions', 'obs/cell_abundance']
        >>> latent_imputer.write_to_adata(spots)  # doctest: +SKIP
        ['obsm/imputed', 'obsm/X_spatialimputer']
        >>> imputer.write_to_adata(spots, genes=["gene_45"], key_added="ref2")  # doctest: +SKIP
        ['obsm/ref2_imputed', 'obsm/ref2_proportions', 'obs/ref2_cell_abundance']
        """
        keys = prefixed(key_added, self.imputed_key, self.proportions_key, self.abundance_key)
        check_batch_size(batch_size)
        adata = imputed_spots(self, self._resolve_adata(self._write_target(adata)))
        with warnings.catch_warnings():  # said once below, of every result
            warnings.filterwarnings("ignore", message=r".* spots have no counts in the")
            # the same spots, any order, read once: the spots without counts, the latents
            latents = [] if self.design_ == "latent" else None
            imputed, empty = self._imputed(genes, adata, batch_size, None, latents)
            if self.design_ == "deconvolution":
                rows, _, _ = self._per_spot(adata, None, None, "write_to_adata", "proportions")
                proportions = self._fitted_proportions(rows)
                abundance = self._fitted_abundance(rows)
                missing_empty_rows(empty, "", self, proportions, abundance)
                proportions = pd.DataFrame(
                    proportions, index=imputed.index, columns=self.state_names_
                )
        what = ", proportions and abundance" if self.design_ == "deconvolution" else " and latents"
        warn_empty_spots(int(empty.sum()), len(empty), f"imputed values{what}", self)
        if self.design_ != "deconvolution":  # NaN rows for the spots without counts
            z = np.concatenate(latents) if latents else np.zeros((0, self.module.n_latent))
            z[empty] = np.nan
            name = self.latent_key.removeprefix("X_")
            latent = f"X_{name}" if key_added is None else f"X_{key_added}_{name}"
            adata.obsm[keys[0]], adata.obsm[latent] = imputed, z
            return [f"obsm/{keys[0]}", f"obsm/{latent}"]
        adata.obsm[keys[0]], adata.obsm[keys[1]] = imputed, proportions
        adata.obs[keys[2]] = abundance
        return [f"obsm/{keys[0]}", f"obsm/{keys[1]}", f"obs/{keys[2]}"]
