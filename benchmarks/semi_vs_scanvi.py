"""Semi-supervised CGMDVAE against scvi-tools' SCANVI on PBMC 3k, the same cells labelled.

PBMC 3k (2,638 cells), ``--hvg`` seurat_v3 genes, 5% of the cells labelled
(``np.random.default_rng(seed).random(n) < 0.05``, as ``cgmdvae_quality.py``'s ``semi``), the
others marked ``"Unknown"``; ``scvi.settings.seed = seed``; every model at its defaults but
the epochs. Per method the accuracy and macro-F1 of ``predict()`` on the unlabelled cells,
against the Seurat tutorial's cell types, and the seconds it took:

* ``cgmdvae``: ``CGMDVAE(adata)``, ``--epochs``;
* ``scanvi``: ``SCANVI(adata)`` trained from scratch, ``--epochs``;
* ``scvi_scanvi``: scvi-tools' tutorial, ``SCVI`` for ``--epochs``, then
  ``SCANVI.from_scvi_model`` for 20 epochs with ``n_samples_per_label=100``.

    python benchmarks/semi_vs_scanvi.py --seeds 0 1 2 --epochs 100 --hvg 1000
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from _env import announce  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--hvg", type=int, default=1000)
    parser.add_argument("--methods", nargs="+", default=["cgmdvae", "scanvi", "scvi_scanvi"])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    announce("semi_vs_scanvi.py", json_lines=True)  # its header: the versions it ran on

    import numpy as np
    import scanpy as sc
    import scvi
    import torch
    from sklearn.metrics import f1_score

    import deltavae as dv

    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    pbmc = dv.datasets.pbmc3k()
    sc.pp.highly_variable_genes(pbmc, flavor="seurat_v3", n_top_genes=args.hvg, subset=True)
    pbmc = pbmc[np.asarray(pbmc.X.sum(1)).ravel() > 0].copy()
    truth = pbmc.obs["cell_type"].astype(str).to_numpy()
    train = {"enable_progress_bar": False, "enable_model_summary": False}
    for seed in args.seeds:
        labelled = np.random.default_rng(seed).random(pbmc.n_obs) < 0.05
        pbmc.obs["label"] = np.where(labelled, truth, "Unknown")
        for method in args.methods:
            adata = pbmc.copy()
            scvi.settings.seed = seed
            start = time.time()
            if method == "cgmdvae":
                dv.model.CGMDVAE.setup_anndata(
                    adata, labels_key="label", unlabeled_category="Unknown"
                )
                model = dv.model.CGMDVAE(adata)
                model.train(max_epochs=args.epochs, **train)
            elif method == "scanvi":
                scvi.model.SCANVI.setup_anndata(
                    adata, labels_key="label", unlabeled_category="Unknown"
                )
                model = scvi.model.SCANVI(adata)
                model.train(max_epochs=args.epochs, **train)
            else:
                scvi.model.SCVI.setup_anndata(adata)
                vae = scvi.model.SCVI(adata)
                vae.train(max_epochs=args.epochs, **train)
                model = scvi.model.SCANVI.from_scvi_model(
                    vae, unlabeled_category="Unknown", labels_key="label"
                )
                model.train(max_epochs=20, n_samples_per_label=100, **train)
            seconds = time.time() - start
            pred = np.asarray(model.predict()).astype(str)[~labelled]
            row = {
                "method": method,
                "seed": seed,
                "n_labelled": int(labelled.sum()),
                "accuracy": round(float((pred == truth[~labelled]).mean()), 4),
                "macro_f1": round(float(f1_score(truth[~labelled], pred, average="macro")), 4),
                "seconds": round(seconds, 1),
            }
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
