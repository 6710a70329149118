"""How well the pipeline that made PBMC 3k's labels reproduces them, run again in scanpy.

PBMC 3k's ``cell_type`` labels are Seurat's tutorial clusters renamed one to one
(``seurat_clusters``, Louvain at resolution 0.5 on a shared-neighbour graph of 10 principal
components of 2,000 scaled highly variable genes). Their ARI against a rerun of that pipeline
is the ceiling the labels themselves allow any method; leiden on principal components (the
clustering benchmark's baseline) runs on the space the labels were cut in. Rows: scanpy's
closest equivalent of the Seurat pipeline (10 components of scaled HVGs, 20 neighbours,
resolution 0.5) on Seurat's shared-neighbour (Jaccard) graph and on scanpy's fuzzy graph,
and the fuzzy graph at other resolutions and with 50 components; ARI and the number of
clusters per seed (leiden where Seurat's tutorial ran Louvain).

    python benchmarks/pbmc_labels.py --data-dir ../shared/data --seeds 0 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common  # sets OMP_WAIT_POLICY before torch loads
from _env import announce

# (graph, components, neighbours, resolution): Seurat's tutorial first, then variations of it.
PIPELINES = (
    ("snn", 10, 20, 0.5),
    ("umap", 10, 20, 0.5),
    ("umap", 10, 20, 0.8),
    ("umap", 10, 15, 1.0),
    ("umap", 50, 15, 0.5),
    ("umap", 50, 15, 1.0),
)


def snn_graph(pcs, k: int):
    """Seurat's shared-neighbour graph: each cell's k nearest neighbours (itself included),
    edges weighted by the Jaccard index of two cells' neighbour sets, pruned below 1/15."""
    import numpy as np
    from scipy import sparse
    from sklearn.neighbors import NearestNeighbors

    index = NearestNeighbors(n_neighbors=k).fit(pcs).kneighbors(pcs, return_distance=False)
    rows = np.repeat(np.arange(len(pcs)), k)
    member = sparse.csr_matrix((np.ones(rows.size), (rows, index.ravel())), (len(pcs),) * 2)
    shared = (member @ member.T).tocoo()
    jaccard = shared.data / (2 * k - shared.data)
    keep = (jaccard >= 1 / 15) & (shared.row != shared.col)
    return sparse.csr_matrix((jaccard[keep], (shared.row[keep], shared.col[keep])), shared.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default=None, help="write every number as JSON here")
    args = parser.parse_args()

    import anndata as ad
    import scanpy as sc

    import deltavae as dv

    _common.quiet()
    env = announce("pbmc_labels.py")
    adata = ad.read_h5ad(Path(args.data_dir) / "pbmc3k" / "pbmc3k_seurat_counts.h5ad")
    truth = adata.obs["cell_type"].to_numpy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000, flavor="seurat")
    hvg = adata[:, adata.var["highly_variable"]].copy()
    sc.pp.scale(hvg, max_value=10)
    sc.tl.pca(hvg, n_comps=50, random_state=0)

    rows, records = [], []
    for graph, n_pcs, k, resolution in PIPELINES:
        scores, sizes = [], []
        adjacency = snn_graph(hvg.obsm["X_pca"][:, :n_pcs], k) if graph == "snn" else None
        for seed in args.seeds:
            if adjacency is None:
                sc.pp.neighbors(hvg, n_pcs=n_pcs, n_neighbors=k, random_state=seed)
            sc.tl.leiden(
                hvg,
                adjacency=adjacency,
                resolution=resolution,
                random_state=seed,
                flavor="igraph",
                n_iterations=2,
                directed=False,
            )
            clusters = hvg.obs["leiden"].to_numpy()
            scores.append(dv.metrics.ari(truth, clusters))
            sizes.append(hvg.obs["leiden"].nunique())
        per_seed = " / ".join(f"{s:.3f} ({n})" for s, n in zip(scores, sizes, strict=True))
        rows.append([graph, n_pcs, k, resolution, per_seed, _common.fmt_mean_sd(scores)])
        records.append(
            dict(graph=graph, n_pcs=n_pcs, neighbors=k, resolution=resolution, ari=scores, k=sizes)
        )
    headers = ["graph", "components", "neighbours", "resolution", "ARI per seed (clusters)", "mean"]
    print(_common.markdown_table(headers, rows))
    _common.save_json({"versions": env, "seeds": args.seeds, "rows": records}, args.out)


if __name__ == "__main__":
    main()
