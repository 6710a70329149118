"""Accuracy of a CGMDVAE trained with one labelled cell per type, per mixture start.

``deltavae.datasets.synthetic_counts`` (4 types, 2 conditions), one cell of each type labelled
(drawn with ``--label-seeds``), ``scvi.settings.seed = 0``, default training for ``--epochs``;
per run the accuracy of ``predict()`` against the truth (the clusters named by the labels)
and the accuracy of the clusters matched to the truth one to one (Hungarian). A named
accuracy below the matched one: the labels named some clusters wrong; a low matched one: the
clusters merged types. ``--likelihood normal`` trains on log1p(counts per 10,000).

    python benchmarks/few_labels.py --threads 1
    python benchmarks/few_labels.py --methods kmeans umap --label-seeds 1 2
    python benchmarks/few_labels.py --likelihood normal --cells 600 --genes 100
"""

from __future__ import annotations

import argparse
import time
import warnings

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from _env import announce  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["leiden", "umap", "spectral", "kmeans"])
    parser.add_argument("--data-seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--label-seeds", nargs="+", type=int, default=[1, 2, 3, 4])
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--genes", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--likelihood", default="zinb", choices=["zinb", "nb", "normal"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    announce("few_labels.py")  # its header: the versions it ran on

    import numpy as np
    import scanpy as sc
    import scvi
    import torch
    from scipy.optimize import linear_sum_assignment

    import deltavae as dv

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    for method in args.methods:
        accuracies = []
        for data_seed in args.data_seeds:
            for label_seed in args.label_seeds:
                adata = dv.datasets.synthetic_counts(
                    n_cells=args.cells, n_genes=args.genes, n_clusters=4, n_conditions=2,
                    seed=data_seed,
                )  # fmt: skip
                if args.likelihood == "normal":
                    sc.pp.normalize_total(adata, target_sum=1e4)
                    sc.pp.log1p(adata)
                    adata.X = adata.X.toarray()
                truth = adata.obs["cluster"].astype(str).to_numpy()
                rng = np.random.default_rng(label_seed)
                labels = np.full(adata.n_obs, "Unknown", dtype=object)
                for kind in np.unique(truth):
                    labels[rng.choice(np.flatnonzero(truth == kind))] = kind
                adata.obs["label"] = labels
                scvi.settings.seed = 0
                dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="label")
                model = dv.model.CGMDVAE(adata, n_clusters=4, likelihood=args.likelihood)
                start = time.perf_counter()
                model.train(max_epochs=args.epochs, enable_progress_bar=False, mixture_init=method)
                predicted = np.asarray(model.predict()).astype(str)
                named = float((predicted == truth).mean())
                kinds, found = np.unique(truth), np.unique(predicted)
                table = np.array([[np.sum((predicted == p) & (truth == t)) for t in kinds]
                                  for p in found])  # fmt: skip
                rows, cols = linear_sum_assignment(table, maximize=True)
                matched = table[rows, cols].sum() / adata.n_obs
                accuracies.append(named)
                print(
                    f"{method} data seed {data_seed} label seed {label_seed}: accuracy "
                    f"{named:.3f}, matched {matched:.3f} ({time.perf_counter() - start:.0f} s)",
                    flush=True,
                )
        print(f"{method}: mean {np.mean(accuracies):.3f}, lowest {np.min(accuracies):.3f}")


if __name__ == "__main__":
    main()
