"""Semi-supervised CGMDVAE on PBMC 3k: is a cell type without labelled cells warned of?

PBMC 3k as ``cgmdvae_quality.py``'s semi-supervised run loads it (2,000 HVGs, seurat_v3),
a share ``--fraction`` of the cells labelled (numpy ``default_rng(seed).random``, as
``run_semi``), the types of ``--leave-out`` none (all their cells unlabelled), one cluster per
label unless ``--extra-clusters``; ``scvi.settings.seed = seed``, ``--epochs`` of default
training. Per run: the accuracy on the unlabelled cells, and the groups that training's
warning (``deltavae.model._unlabelled_types``) names, with their cells' true types.

    python benchmarks/unlabelled_types.py --seeds 0 1 2 3
    python benchmarks/unlabelled_types.py --seeds 0 2 --leave-out B NK DC
    python benchmarks/unlabelled_types.py --seeds 1 --extra-clusters 1
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
    args = parser.parse_args()

    import numpy as np
    import pandas as pd
    import scanpy as sc
    import scvi
    import torch

    import deltavae as dv
    from deltavae.model._unlabelled_types import training_groups

    torch.set_num_threads(args.threads)
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
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                model.train(max_epochs=args.epochs, enable_progress_bar=False)
            warned = any("without labelled cells" in str(w.message) for w in seen)
            predicted = np.asarray(model.predict()).astype(str)
            accuracy = float((predicted[~labelled] == truth[~labelled]).mean())
            missing = sorted(set(truth) - set(truth[labelled]))
            groups = "; ".join(
                f"{len(cells)} given {label!r}: "
                + ", ".join(f"{t} {n}" for t, n in pd.Series(truth[cells]).value_counts().items())
                for label, cells in training_groups(model)
            )
            print(
                f"seed {seed}, left out {left}, no label: {missing or 'none'}, K={k}: accuracy "
                f"{accuracy:.3f}, warned {warned} ({groups or 'no group'}; "
                f"{time.perf_counter() - start:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
