"""Semi-supervised CGMDVAE on PBMC 3k: is a cell type without labelled cells warned of?

PBMC 3k as ``cgmdvae_quality.py``'s semi-supervised run loads it (2,000 HVGs, seurat_v3),
a share ``--fraction`` of the cells labelled (numpy ``default_rng(seed).random``, as
``run_semi``), the types of ``--leave-out`` none (all their cells unlabelled), one cluster per
label unless ``--extra-clusters``; ``scvi.settings.seed = seed``, ``--epochs`` of default
training. Per run: the accuracy on the unlabelled cells, and the groups the candidate check
(``_unlabelled_types.py``, not shipped) names, with their cells' true types. ``--pairs``: the
synthetic set whose three labels each cover two of six natural groups, 10% labelled (every
group has labelled cells: any group named is a false alarm), 80 epochs.

    python benchmarks/unlabelled_types.py --seeds 0 1 2 3
    python benchmarks/unlabelled_types.py --seeds 0 2 --leave-out B NK DC
    python benchmarks/unlabelled_types.py --seeds 1 --extra-clusters 1
    python benchmarks/unlabelled_types.py --pairs --seeds 0 1 2 3 4 5 6 7 8 9 10 11
"""

from __future__ import annotations

import argparse
import time
import warnings

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--leave-out", nargs="*", default=[], help="types never labelled")
    parser.add_argument("--fraction", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--extra-clusters", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", action="store_true", help="the synthetic false-alarm set")
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import scanpy as sc
    import scvi
    import torch
    from _unlabelled_types import training_groups

    import deltavae as dv

    torch.set_num_threads(args.threads)
    if args.pairs:
        for seed in args.seeds:
            scvi.settings.seed = seed
            adata = dv.datasets.synthetic_counts(
                n_cells=600, n_genes=80, n_clusters=6, n_conditions=1, seed=5
            )
            truth = (adata.obs["cluster"].astype(int).to_numpy() // 2).astype(str)
            labelled = np.random.default_rng(0).random(600) < 0.1
            adata.obs["label"] = np.where(labelled, truth, "unknown")
            dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="unknown")
            model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=64)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.train(max_epochs=80, enable_progress_bar=False)
            groups = [(label, len(cells)) for label, cells in training_groups(model)]
            print(f"pairs, seed {seed}: groups named (false alarms) {groups}", flush=True)
        return
    full = dv.datasets.pbmc3k()
    sc.pp.highly_variable_genes(full, flavor="seurat_v3", n_top_genes=2000, subset=True)
    full = full[np.asarray(full.X.sum(1)).ravel() > 0].copy()
    for left in args.leave_out or [None]:
        for seed in args.seeds:
            adata = full.copy()
            truth = adata.obs["cell_type"].astype(str).to_numpy()
            labelled = np.random.default_rng(seed).random(adata.n_obs) < args.fraction
            if left is not None:
                labelled &= truth != left
            adata.obs["label"] = np.where(labelled, truth, "Unknown")
            scvi.settings.seed = seed
            dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="Unknown")
            k = len(set(truth[labelled])) + args.extra_clusters
            model = dv.model.CGMDVAE(adata, likelihood="zinb", n_clusters=k)
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.train(max_epochs=args.epochs, enable_progress_bar=False)
            predicted = np.asarray(model.predict()).astype(str)
            accuracy = float((predicted[~labelled] == truth[~labelled]).mean())
            missing = sorted(set(truth) - set(truth[labelled]))
            groups = "; ".join(
                f"{len(cells)} given {label!r}: "
                + ", ".join(f"{t} {n}" for t, n in pd.Series(truth[cells]).value_counts().items())
                for label, cells in training_groups(model)
            )
            warned = bool(groups)
            print(
                f"seed {seed}, left out {left}, no label: {missing or 'none'}, K={k}: accuracy "
                f"{accuracy:.3f}, warned {warned} ({groups or 'no group'}; "
                f"{time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
