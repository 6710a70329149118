"""NMFDeconv's read-outs: the spots' proportions and abundance (amortised: of any spots, through
the encoder; per spot: of the fitted spots), and :meth:`write_to_adata`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from ._backed import writes_backed
from ._gathered import Gathered
from ._positions import indices_after_adata
from ._query_source import spots_now
from ._same_spots import check_fitted_ranks, check_same_spots, given_order, spot_rows
from ._spots import (
    SPOT_INDEX,
    missing_empty_rows,
    prefixed,
    selected_rows,
    training_rows,
    with_spot_index,
)
from ._training_checks import check_batch_size
from ._validation import warn_user

#: Spots per inference minibatch.
_INFERENCE_BATCH = 2048
#: Where results of other spots than a per-spot model's come from (its refusal of them).
_OTHER = "map them with an inference='amortized' model, or fit one on them"


def warn_idle_factors(proportions: np.ndarray, names) -> None:
    """Warn about learned factors (reference-free mode) that are the largest proportion of
    (almost) no spot: ``n_components`` above the types the spots hold splits off factors that
    take a few percent of every spot and describe none (8 factors on 4 types: 4 led no spot,
    2 to 9% of each spot's mass).

    Examples
    --------
    >>> warn_idle_factors(np.array([[0.7, 0.3], [0.2, 0.8]]), ["F0", "F1"])  # both lead
    """
    n_spots, n_factors = proportions.shape
    leads = np.bincount(proportions.argmax(axis=1), minlength=n_factors)
    idle = np.flatnonzero(leads < max(1, 0.02 * n_spots))  # none, or under 1 in 50
    if not len(idle) or n_spots < 2 * n_factors:
        return
    share = proportions.mean(axis=0)
    which = ", ".join(f"{names[k]!s} ({share[k]:.1%}, {leads[k]} spots)" for k in idle)
    warn_user(
        f"{len(idle)} of the {n_factors} factors are the largest proportion of fewer than 2% "
        f"of the spots: {which} (mean share of a spot, spots it leads). They take part of every "
        "spot's proportions without describing any: the spots support fewer factors than "
        f"n_components={n_factors}. Fit fewer, e.g. n_components={n_factors - len(idle)}, "
        "or read these factors' proportions as noise."
    )


class NMFResultsMixin:
    """:meth:`get_proportions`, :meth:`get_abundance` and :meth:`write_to_adata`."""

    def _infer(self, adata: AnnData | None, batch_size: int | None, indices=None):
        """Proportions and abundance of ``adata``'s spots (those ``indices`` selects), their
        names, and which of them have no counts in the genes the model reads (the model's
        values there, not NaN: see :meth:`_results`)."""
        check_batch_size(batch_size)  # a model fitted per spot reads no minibatches
        self._check_if_trained(warn=False)
        given = None if adata is not None or self.module.amortized else given_order(self)
        if adata is None and not self.module.amortized:
            # The spots given (from_reference, load), subset, reordered or their counts
            # replaced in place since: read by name as they are now (other counts refused).
            adata = spots_now(self)
            given = None if adata is not None else given
        adata = self._resolve_adata(adata)
        rows = selected_rows(adata, indices)
        spots = adata.obs_names if given is None else given  # the order of the spots given
        kept = getattr(self, "_query_adata", None)  # the spots given: their names as given
        if adata is self.adata and kept is not None and kept.obs_names.astype(str).equals(spots):
            spots = kept.obs_names  # spots named 0, 1, ...: not '0', '1' (the model's own obs)
        names = spots if rows is None else spots[rows]
        if not self.module.amortized:
            order = training_rows(pd.Index(spots.astype(str)), self.spot_names_)
            columns = self._read_columns()
            check_fitted_ranks(self, columns)  # spots.X replaced since train: not its fit
            check_same_spots(self, adata, spot_rows(self, adata), _OTHER)
            order = order if rows is None else order[rows]
            with torch.no_grad():
                proportions = self.module.proportions().cpu().numpy()[order]
                abundance = torch.exp(self.module.log_abundance).cpu().numpy()[order]
            # the spots asked for, as the model's AnnData holds them (any genes in ``adata``)
            held = pd.Index(self.adata.obs_names.astype(str))
            at = held.get_indexer(pd.Index(names.astype(str)))
            read = np.unique(at[at >= 0])
            # the spots' totals in the genes read, as stored (not a dense copy of every spot)
            empty_read = self._row_totals(read, columns) == 0
            empty = np.zeros(len(names), dtype=bool)
            if len(read):
                empty[at >= 0] = empty_read[np.searchsorted(read, at[at >= 0])]
            return (
                proportions.astype(np.float64),
                abundance.astype(np.float64),
                names,
                empty,
            )
        if (
            SPOT_INDEX not in adata.obs
            and REGISTRY_KEYS.INDICES_KEY in self.registry_["field_registries"]
        ):
            adata = with_spot_index(adata)  # set up with spot_index=True: the encoder ignores it
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(
            adata=adata,
            indices=rows,
            batch_size=_INFERENCE_BATCH if batch_size is None else batch_size,
            shuffle=False,
        )
        gathered = Gathered()  # on the host together: a .cpu() a minibatch made a GPU wait
        with torch.no_grad():
            for tensors in loader:
                x = tensors[REGISTRY_KEYS.X_KEY]
                out = self.module.inference(x)
                gathered.add(
                    empty=self.module.genes(x).sum(dim=-1) == 0,
                    proportions=out["proportions"],
                    abundance=out["abundance"],
                )
        got = {key: [value.numpy()] for key, value in gathered.result().items()}
        return (
            np.concatenate(got.get("proportions", [])).astype(np.float64),
            np.concatenate(got.get("abundance", [])).astype(np.float64),
            names,
            np.concatenate(got["empty"]) if got else np.zeros(0, dtype=bool),
        )

    def _results(self, adata, batch_size, indices=None):
        """:meth:`_infer`'s proportions (rows summing to 1) and abundance, NaN for the spots
        without counts in the genes the model reads (warned, counting them), and the names."""
        proportions, abundance, names, empty = self._infer(adata, batch_size, indices)
        proportions /= proportions.sum(axis=1, keepdims=True)
        what = "proportions and abundance"
        missing_empty_rows(empty, what, self, proportions, abundance)
        return proportions, abundance, names

    @indices_after_adata("batch_size", "indices")
    def get_proportions(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Cell-type proportions of every spot (rows sum to 1).

        The amortised model maps any spots with the genes it reads through its encoder,
        without refitting; the per-spot model knows only the spots it was trained on, and
        refuses them once their counts were replaced since (``spots.X = other``: train again;
        counts normalised or log-transformed in place still read as those trained on).

        Parameters
        ----------
        adata
            Spots with the genes the model reads (:meth:`used_genes`), by name in any order;
            rows follow its order. Default the model's spots: after a per-spot model was
            loaded onto them in another order, in the order of the spots given to ``load``.
        indices
            Spots of ``adata`` to read (positions or a boolean mask, as the single-cell
            models' ``indices``; default all), in this order.
        batch_size
            Spots per inference minibatch (amortised).

        Returns
        -------
        pandas.DataFrame
            Spots x cell types. A spot without counts in the genes the model reads has no
            evidence of its proportions: its row is NaN (warned, counting such spots), as
            :meth:`write_to_adata` leaves the rows of spots left out of a fit, where the model
            would give what it gives a spot without data (the encoder's output for an
            all-zero input, or the prior's), which can look like a real mixture.

        Examples
        --------
        >>> d.get_proportions().head()  # doctest: +SKIP
        >>> d.get_proportions(adata=new_spots).head()  # doctest: +SKIP
        """
        values, _, names = self._results(adata, batch_size, indices)
        return pd.DataFrame(values, index=names, columns=self.cell_types_)

    @indices_after_adata("batch_size", "indices")
    def get_abundance(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.Series:
        """Reference cells' worth of counts per spot: its counts in units of one reference
        cell's expected counts (the signatures, mixed by the spot's proportions).

        A number of cells where the spots capture as much of a cell's RNA as the reference
        (pseudo-spots summed from reference cells: about their cells). On another platform
        it is scaled by that platform's capture against the reference's, which the model
        cannot tell from a number of cells: on the MERFISH hypothalamus toy, one cell per
        spot, its median is 12-19 (MERFISH counts ten times the reference's UMIs of its 134
        genes). Compare it between spots of one slide. A point estimate (MAP), without
        cell2location's posterior quantiles (``q05``); each type's share, as cell2location's
        abundance per type: ``d.get_proportions().mul(d.get_abundance(), axis=0)``.

        Parameters
        ----------
        adata, indices, batch_size
            As for :meth:`get_proportions` (NaN for a spot without counts, as there).

        Examples
        --------
        >>> d.get_abundance().describe()  # doctest: +SKIP
        """
        _, values, names = self._results(adata, batch_size, indices)
        return pd.Series(values, index=names, name=self.abundance_key)

    @writes_backed
    def write_to_adata(
        self,
        adata: AnnData | None = None,
        batch_size: int | None = None,
        key_added: str | None = None,
    ) -> list[str]:
        """Write proportions to ``obsm["proportions"]`` and abundance to ``obs``.

        The proportions are a spots x cell types DataFrame, its columns the cell types'
        names as given: :func:`deltavae.pl.spatial_proportions` draws them. scanpy's and
        squidpy's plots colour by obs columns; copy them there, one per type, for
        ``sc.pl.spatial(spots, color="B")``:
        ``spots.obs[list(spots.obsm["proportions"].columns)] = spots.obsm["proportions"]``
        (it replaces obs columns of those names). The abundance is in reference cells'
        worth of counts (:meth:`get_abundance`).

        Names holding "/" ("T/NK") are kept (``obsm["proportions"]["T/NK"]``), and were
        said when the model was built: anndata >= 0.13 cannot write them to .h5ad as column
        names (zarr cannot now); the warning gives the line that renames them.

        Parameters
        ----------
        adata
            The spots (amortised: any spots with the training genes, and maybe others; per
            spot: the training spots or some of them, by name in any order, any genes; spots
            left out of the fit besides get NaN rows, with a warning, as spots without
            counts in the genes the model reads do);
            default the spots given to :meth:`load`, else the model's AnnData. Opened
            ``backed="r+"``, the results also go into its file, in blocks of rows.
        batch_size
            Spots per inference minibatch (amortised).
        key_added
            Prefix of the keys written (``key_added="ref2"``: ``obsm/ref2_proportions``,
            ``obs/ref2_cell_abundance``): deconvolutions with several references side by
            side; default none.

        Returns
        -------
        The keys written: ``obsm/proportions`` and ``obs/cell_abundance``.

        Examples
        --------
        >>> d.write_to_adata(spots)  # doctest: +SKIP
        ['obsm/proportions', 'obs/cell_abundance']
        """
        keys = prefixed(key_added, self.proportions_key, self.abundance_key)
        target = self._write_target(adata)
        proportions, abundance, _ = self._results(target, batch_size)
        target.obsm[keys[0]] = pd.DataFrame(
            proportions, index=target.obs_names, columns=self.cell_types_
        )
        target.obs[keys[1]] = abundance
        return [f"obsm/{keys[0]}", f"obs/{keys[1]}"]
