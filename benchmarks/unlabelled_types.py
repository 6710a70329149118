"""Semi-supervised CGMDVAE on PBMC 3k: is a cell type without labelled cells warned of?

PBMC 3k as ``cgmdvae_quality.py``'s semi-supervised run loads it (2,000 HVGs, seurat_v3), a
share ``--fraction`` of the cells labelled (numpy ``default_rng(seed).random``, as
``run_semi``), the types of ``--leave-out`` none (all their cells unlabelled), one cluster per
label unless ``--extra-clusters``; ``scvi.settings.seed = seed``, ``--epochs`` of default
training. Per run: the accuracy on the unlabelled cells, and the groups the first attempt (z
alone, ``training_groups(model, data_sign=False)``, not shipped) and ``train``'s warning (z
with the data's sign; both in ``deltavae.model._unlabelled_types``) name, with their cells'
true types. ``--pairs``: the synthetic set whose three labels each cover two of six natural
groups, 10% labelled (every group has labelled cells: any group named is a false alarm), 80
epochs. ``--synthetic``: the test suite's synthetic counts (400 cells, 80 genes, 4 types, data
seed = seed, a fifth labelled, 40 epochs), with every type labelled and with type 3 left out.
``--kang``: Kang IFN-beta (``kang_ifnb``, 1,556 cells, 5 types, ``condition_key="condition"``,
the default model, ``--epochs``), a share ``--fraction`` (here 0.5 unless given) of the cells
labelled; ``--control-only``: of the control cells only, no stimulated cell labelled.
``--save DIR``: each run's :func:`_unlabelled_types.training_record` as ``DIR/<run>.npz``, for
the criteria to be compared offline (``unlabelled_criteria.py DIR``) without training again.

    python benchmarks/unlabelled_types.py --seeds 0 1 2 3
    python benchmarks/unlabelled_types.py --seeds 0 2 --leave-out B NK DC
    python benchmarks/unlabelled_types.py --seeds 1 --extra-clusters 1
    python benchmarks/unlabelled_types.py --pairs --seeds 0 1 2 3 4 5 6 7 8 9 10 11
    python benchmarks/unlabelled_types.py --synthetic --seeds 0 1 2 3 4 5
    python benchmarks/unlabelled_types.py --kang --seeds 0 1 --leave-out "B cells"
    python benchmarks/unlabelled_types.py --kang --control-only --fraction 0.333 --seeds 0 1
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from _env import announce  # noqa: E402


def _describe(groups, truth) -> str:
    import pandas as pd

    return "; ".join(
        f"{len(cells)} given {label!r}: "
        + ", ".join(f"{t} {n}" for t, n in pd.Series(truth[cells]).value_counts().items())
        for label, cells in groups
    )


def _train(model, epochs: int) -> float:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=epochs, enable_progress_bar=False)
    return time.perf_counter() - start


def _finish(model, truth, labelled, name: str, save: str | None, seconds: float, kinds=None):
    """Print a run's accuracy and the z-only check's groups; save its record (with ``kinds``,
    the cells' natural groups, as their true types where given)."""
    import numpy as np
    from _unlabelled_types import training_record

    from deltavae.model._unlabelled_types import training_groups

    predicted = np.asarray(model.cluster_names)[np.asarray(model.predict_clusters())]
    accuracy = float((predicted[~labelled] == truth[~labelled]).mean())
    missing = sorted(set(truth) - set(truth[labelled]))
    kinds = truth if kinds is None else kinds
    groups = _describe(training_groups(model, data_sign=False), kinds)
    warned = _describe(training_groups(model), kinds)
    if save:
        os.makedirs(save, exist_ok=True)
        np.savez_compressed(os.path.join(save, f"{name}.npz"), **training_record(model, kinds))
    print(
        f"{name}: no label {missing or 'none'}, K={model.module.n_clusters}: accuracy "
        f"{accuracy:.3f}, z-only check: {groups or 'no group'}, warning (z + data): "
        f"{warned or 'none'} ({seconds:.0f} s)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("--leave-out", nargs="*", default=[], help="types never labelled")
    parser.add_argument("--fraction", type=float, help="labelled share (PBMC 0.05, Kang 0.5)")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--extra-clusters", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", action="store_true", help="the synthetic false-alarm set")
    parser.add_argument("--synthetic", action="store_true", help="the test suite's counts")
    parser.add_argument("--kang", action="store_true", help="Kang IFN-beta, two conditions")
    parser.add_argument("--control-only", action="store_true", help="Kang: label ctrl cells")
    parser.add_argument("--save", default=None, help="a folder for each run's record")
    args = parser.parse_args()
    announce("unlabelled_types.py")  # its header: the versions it ran on

    import numpy as np
    import scanpy as sc
    import scvi
    import torch

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
            seconds = _train(model, 80)
            # The natural groups (six) are the truth a criterion must not split.
            groups = adata.obs["cluster"].astype(str).to_numpy()
            _finish(model, truth, labelled, f"pairs_s{seed}", args.save, seconds, groups)
        return
    if args.synthetic:
        for left in [None, "3"]:
            for seed in args.seeds:
                scvi.settings.seed = seed
                adata = dv.datasets.synthetic_counts(
                    n_cells=400, n_genes=80, n_clusters=4, n_conditions=1, seed=seed
                )
                truth = adata.obs["cluster"].astype(str).to_numpy()
                labelled = np.random.default_rng(seed).random(400) < 0.2
                if left is not None:
                    labelled &= truth != left
                adata.obs["label"] = np.where(labelled, truth, "unknown")
                dv.model.CGMDVAE.setup_anndata(
                    adata, labels_key="label", unlabeled_category="unknown"
                )
                model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=64)
                seconds = _train(model, 40)
                name = f"synth_s{seed}" + (f"_out{left}" if left else "")
                _finish(model, truth, labelled, name, args.save, seconds)
        return
    if args.kang:
        for left in args.leave_out or [None]:
            for seed in args.seeds:
                adata = dv.datasets.kang_ifnb()
                truth = adata.obs["cell_type"].astype(str).to_numpy()
                fraction = 0.5 if args.fraction is None else args.fraction
                labelled = np.random.default_rng(seed).random(adata.n_obs) < fraction
                if args.control_only:
                    labelled &= adata.obs["condition"].to_numpy() == "ctrl"
                if left is not None:
                    labelled &= truth != left
                adata.obs["label"] = np.where(labelled, truth, "Unknown")
                scvi.settings.seed = seed
                dv.model.CGMDVAE.setup_anndata(
                    adata,
                    labels_key="label",
                    unlabeled_category="Unknown",
                    condition_key="condition",
                )
                model = dv.model.CGMDVAE(adata)
                seconds = _train(model, args.epochs)
                name = f"kang_s{seed}" + ("_ctrl" if args.control_only else "")
                name += f"_out{left.replace(' ', '')}" if left else ""
                _finish(model, truth, labelled, name, args.save, seconds)
        return
    full = dv.datasets.pbmc3k()
    sc.pp.highly_variable_genes(full, flavor="seurat_v3", n_top_genes=2000, subset=True)
    full = full[np.asarray(full.X.sum(1)).ravel() > 0].copy()
    for left in args.leave_out or [None]:
        for seed in args.seeds:
            adata = full.copy()
            truth = adata.obs["cell_type"].astype(str).to_numpy()
            fraction = 0.05 if args.fraction is None else args.fraction
            labelled = np.random.default_rng(seed).random(adata.n_obs) < fraction
            if left is not None:
                labelled &= truth != left
            adata.obs["label"] = np.where(labelled, truth, "Unknown")
            scvi.settings.seed = seed
            dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="Unknown")
            k = len(set(truth[labelled])) + args.extra_clusters
            model = dv.model.CGMDVAE(adata, likelihood="zinb", n_clusters=k)
            seconds = _train(model, args.epochs)
            name = f"pbmc_s{seed}" + (f"_out{left.replace(' ', '')}" if left else "")
            name += f"_k{k}" if args.extra_clusters else ""
            _finish(model, truth, labelled, name, args.save, seconds)


if __name__ == "__main__":
    main()
