"""Spots for the plot tests: two genes, coordinates, cell-type proportions, cluster
probabilities and a region column, as the spatial plots read them."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd


def spot_panels(n: int, extent: tuple[float, float], umap: bool = False) -> ad.AnnData:
    """``n`` spots uniform over ``extent`` (both axes) with ``obsm['proportions']`` (Astro,
    Neuron), ``obsm['cgmdvae_cluster_probs']`` (3 clusters), ``obs['region']`` and, with
    ``umap``, ``obsm['X_umap']``; seed 0."""
    rng = np.random.default_rng(0)
    spots = ad.AnnData(rng.poisson(2.0, (n, 2)).astype(np.float32))
    spots.var_names = ["g0", "g1"]
    spots.obsm["spatial"] = rng.uniform(*extent, size=(n, 2))
    spots.obsm["proportions"] = pd.DataFrame(
        rng.dirichlet([1, 1], n), index=spots.obs_names, columns=["Astro", "Neuron"]
    )
    spots.obsm["cgmdvae_cluster_probs"] = rng.dirichlet([1, 1, 1], n)
    if umap:
        spots.obsm["X_umap"] = rng.normal(size=(n, 2))
    spots.obs["region"] = pd.Categorical(rng.choice(["a", "b"], n))
    return spots
