"""Archetypes' merged archetypes: the raw archetypes whose profiles point the same way, or
that too few spots weigh most, merged into one; the one encoder pass over the training spots
that every result reads, kept while the module and the spots hold; the names of the merged
archetypes and each spot's weights over them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from . import _archetype_results as results
from ._archetype_checks import check_batch_size
from ._gathered import Gathered
from ._genes import check_own_adata
from ._one_state import warn_one_state
from ._positions import indices_after_adata
from ._query_source import read_matrix
from ._same_spots import given_order
from ._spots import missing_empty_rows, selected_rows


class ArchetypeMergingMixin:
    """The merge of :class:`~deltavae.model.Archetypes`' raw archetypes and the weights over
    the merged ones (its settings: :class:`~deltavae.model._archetype_checks.MergeSettings`)."""

    # ------------------------------------------------------------------------- merging
    def _raw_profiles(self) -> np.ndarray:
        with torch.no_grad():
            return self.module.archetype_profiles().cpu().numpy().astype(np.float64)

    def _raw_weights(self, adata, batch_size, empty: bool = False, rows=None):  # rows: all
        self._check_if_trained(warn=False)
        check_batch_size(batch_size)  # also where the cached weights are served
        if adata is None or adata is self.adata:
            check_own_adata(self)  # the cache too: an obs column it reads changed since setup
            # One pass over the training spots serves every result (weights, anchors, usage).
            out = self._cached("weights", lambda: self._encode(self.adata, batch_size))
            out = out if rows is None else (out[0][rows], out[1][rows])
        else:  # only the spots asked for (3 of 2,000 new spots encoded all 2,000)
            out = self._encode(adata, batch_size, rows)
        return out if empty else out[0]

    def _encode(self, adata: AnnData, batch_size: int | None, rows=None):
        adata = self._validate_anndata(adata)
        loader = self._make_data_loader(adata, rows, batch_size, shuffle=False)
        gathered = Gathered()  # on the host together: a .cpu() a minibatch made a GPU wait
        with torch.no_grad():
            for tensors in loader:
                inputs = self.module._get_inference_input(tensors)
                gathered.add(
                    empty=tensors[REGISTRY_KEYS.X_KEY].sum(dim=-1) == 0,
                    weights=self.module.inference(**inputs, draw=False)["weights_map"],
                )
        got = {key: [value.numpy()] for key, value in gathered.result().items()}
        return (
            np.concatenate(got.get("weights", [])).astype(np.float64),
            np.concatenate(got.get("empty", [])),
        )

    def _merge(self) -> tuple[np.ndarray, np.ndarray]:
        """Merged group of each raw archetype (0..n-1, by first member) and the linkage.

        Archetypes merge when their deviations from the mean spot point the same way
        (``merge_threshold``); an archetype that fewer than ``min_spots`` training spots weigh
        most then joins the group of its most similar archetype, with a warning.
        """
        return self._cached("merge", self._fresh_merge, self.merge_threshold, self.min_spots)

    def _cached(self, name: str, compute, *settings):
        """``compute()``, kept while ``settings``, the module's parameters, the spots and
        their counts hold (a copy, an edit, a load, more training, an in-place subset or
        ``spots.X = other`` computes it again: the weights of the counts replaced were served)."""
        params = tuple((p.data_ptr(), p._version) for p in self.module.parameters())
        spots = self.adata.obs_names  # a new Index once the spots are subset in place
        layer = self.registry_["setup_args"].get("layer")
        # backed: a new dataset object at every access, and a file's counts are not replaced
        counts = None if self.adata.isbacked else read_matrix(self.adata, layer)
        key = (params, settings, id(spots), id(counts))
        if name not in self._cache or self._cache[name][0] != key:
            # spots and counts kept: their ids are not reused while the entry holds them
            self._cache[name] = (key, compute(), (spots, counts))
        return self._cache[name][1]

    def _fresh_merge(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.module.mean_profile.cpu().numpy().astype(np.float64)
        weights, empty = self._raw_weights(None, None, empty=True)
        weights = weights[~empty]  # a spot without counts weighs no archetype most
        groups, tree, thin = results.merge_groups(
            self._raw_profiles(), mean, weights, self.merge_threshold, self.min_spots
        )
        warn_one_state(getattr(self, "noise_check_", None), groups.max() + 1)  # saved then
        results.warn_thin(thin, self.min_spots, weights, groups)
        return groups, tree

    def archetype_names(self) -> list[str]:
        """Names of the merged archetypes, ``"A0"``, ``"A1"``, ...

        Examples
        --------
        >>> a.archetype_names()  # doctest: +SKIP
        ['A0', 'A1', 'A2', 'A3']
        """
        groups, _ = self._merge()
        return [f"A{k}" for k in range(groups.max() + 1)]

    @indices_after_adata("batch_size", "indices")
    def get_archetype_weights(
        self, adata: AnnData | None = None, indices=None, batch_size: int | None = None
    ) -> pd.DataFrame:
        """Each spot's weights over the (merged) archetypes; new spots go through the encoder.

        Parameters
        ----------
        adata
            Spots with the training genes (others left out); default the training spots.
        indices
            Spots of ``adata`` to read (positions or a boolean mask; default all), in order.
        batch_size
            Spots per minibatch.

        Returns
        -------
        pandas.DataFrame
            Spots x archetypes, rows sum to 1; NaN for a spot without counts (warned; left
            out of anchors, profiles, merges and markers).

        Examples
        --------
        >>> a.get_archetype_weights().idxmax(axis=1).value_counts()  # doctest: +SKIP
        """
        given = given_order(self) if adata is None else None
        adata = self._resolve_adata(adata)
        rows = selected_rows(adata, indices)
        if given is not None:  # loaded onto its spots in another order: rows in that order
            at = adata.obs_names.get_indexer(given)
            rows = at if rows is None else at[rows]
        raw, empty = self._raw_weights(adata, batch_size, empty=True, rows=rows)
        groups, _ = self._merge()
        merged = np.zeros((raw.shape[0], groups.max() + 1))
        np.add.at(merged.T, groups, raw.T)
        merged /= merged.sum(axis=1, keepdims=True)  # the encoder's float32: off by 3e-8
        missing_empty_rows(empty, "weights", self, merged)  # as NMFDeconv's
        names = adata.obs_names if rows is None else adata.obs_names[rows]
        return pd.DataFrame(merged, index=names, columns=self.archetype_names())
