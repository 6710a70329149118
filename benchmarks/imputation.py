"""Gene imputation: SpatialImputer against kNN, scvi-tools' GIMVI and Tangram (Li et al. 2022).

Protocol of Li et al. (Nat. Methods 2022): for every spatial/reference pair of the RCTD toys
(cerebellum Slide-seq, hippocampus Visium, hypothalamus MERFISH, lymph node Visium), the genes
shared by the two are split into ``--folds`` folds (scikit-learn KFold, shuffled with
``--seed``; the package's protocol, which ``SpatialImputer.cross_validate`` runs on a user's
data); each fold in turn is hidden from the spatial data, every method imputes it from
the reference and the remaining shared genes, and each hidden gene is scored once
(``deltavae.metrics.imputation_scores``: PCC; SSIM on genes scaled to [0, 1] by their
maximum; RMSE on z-scored genes; Jensen-Shannon distance, base 2, on genes normalised to sum
1). Spots without counts on the shared genes are dropped. The reference is reduced to the
shared genes for every method.

Scale. Methods return different per-spot scales (expected counts, normalised expression,
mapped cells), so the measured and imputed values of a spot are both divided by a per-spot
total before scoring: the measured values by the spot's counts over the visible shared genes
the reference counts (what every method sees and predicts), each method's predictions by its
own predicted total over those same visible genes. Spot genes the reference never counts
(2 on the hypothalamus, 16 on the lymph node) are in neither total: no method predicts them.
Every score is invariant to a gene's scale, so only these per-spot factors matter.

Genes. Every method is scored on the same hidden genes: those the reference expresses (no
method can impute a gene without reference counts) and that vary across the spots (a constant
has no pattern to score). A score a method leaves undefined on one of them (a constant
prediction: PCC and RMSE; all zeros: JSD) counts as a failure, as
``imputation_scores`` asks: PCC 0, RMSE sqrt(2) and JSD 1, an unrelated prediction's values.

    python benchmarks/imputation.py                      # all pairs and methods
    python benchmarks/imputation.py --pairs hypothalamus --methods deltavae knn
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
import warnings

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads
import numpy as np
import pandas as pd
import scvi
import torch
from _common import Timer, load_average, markdown_table
from _env import announce  # noqa: E402
from anndata import AnnData
from sklearn.neighbors import NearestNeighbors

import deltavae as dv
from deltavae.model._imputer_cross_val import cross_validate_genes

PAIRS = ["cerebellum", "hippocampus", "hypothalamus", "lymphnode"]
METHODS = ["deltavae", "deltavae-type", "deltavae-latent", "knn", "gimvi", "tangram"]
TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}
# A score a method leaves undefined on a scored gene is a failure: an unrelated prediction's.
FAILED = {"pcc": 0.0, "rmse": float(np.sqrt(2)), "jsd": 1.0}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=float)


def load_pair(name: str, data_dir=None) -> tuple[AnnData, AnnData]:
    """Spots and reference on their shared genes (spots without shared counts dropped)."""
    spatial, reference = dv.datasets.spatial_reference_pair(name, data_dir)
    shared = spatial.var_names[spatial.var_names.isin(reference.var_names)]
    spatial = spatial[:, shared]
    spatial = spatial[dense(spatial.X).sum(axis=1) > 0].copy()
    return spatial, reference[:, shared].copy()


# ------------------------------------------------------------------ methods
def run_deltavae(spots, reference, hidden, args, design="deconvolution", profiles="neighbours"):
    model = dv.model.SpatialImputer.from_reference(
        spots, reference=reference, labels_key="cell_type", design=design, profiles=profiles
    )
    model.train(
        max_epochs=args.epochs if design == "deconvolution" else args.latent_epochs, **TRAIN
    )
    # Spot genes the reference never counts are not reference genes (no state explains
    # them): 0, as a reference without their counts predicts them.
    genes = list(hidden) + list(spots.var_names)
    known = [g for g in genes if g in model.reference_genes_]
    return model.impute(known).reindex(columns=genes, fill_value=0.0)


def _normalized_log(x: np.ndarray) -> np.ndarray:
    return np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1) * 1e4)


def run_knn(spots, reference, hidden, args):
    """Mean profile of each spot's k nearest reference cells (correlation on visible genes)."""
    visible = list(spots.var_names)
    a = _normalized_log(dense(spots.X))
    b = _normalized_log(dense(reference[:, visible].X))
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-12
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-12
    k = min(args.knn_k, reference.n_obs)
    _, neighbours = NearestNeighbors(n_neighbors=k).fit(b).kneighbors(a)
    ref_counts = dense(reference.X)
    totals = np.maximum(dense(reference[:, visible].X).sum(axis=1, keepdims=True), 1)
    profiles = ref_counts / totals
    return pd.DataFrame(
        profiles[neighbours].mean(axis=1), index=spots.obs_names, columns=reference.var_names
    )


def run_gimvi(spots, reference, hidden, args):
    from scvi.external import GIMVI

    seq, spatial = reference.copy(), spots.copy()
    GIMVI.setup_anndata(seq)
    GIMVI.setup_anndata(spatial)
    model = GIMVI(seq, spatial)
    model.train(max_epochs=args.gimvi_epochs, **TRAIN)
    _, imputed = model.get_imputed_values(normalized=True)
    return pd.DataFrame(imputed, index=spots.obs_names, columns=seq.var_names)


def run_tangram(spots, reference, hidden, args):
    import tangram as tg

    sc_data = reference.copy()
    sc_data.X = sc_data.X.astype(np.float32)
    sp_data = spots.copy()
    tg.pp_adatas(sc_data, sp_data, genes=list(spots.var_names))
    mapping = tg.map_cells_to_space(
        sc_data,
        sp_data,
        mode="cells",
        density_prior="rna_count_based",
        num_epochs=args.tangram_epochs,
        device="cpu",
        verbose=False,
        random_state=args.seed,
    )
    projected = tg.project_genes(mapping, sc_data)
    values = pd.DataFrame(dense(projected.X), index=spots.obs_names, columns=projected.var_names)
    genes = list(reference.var_names)
    # pp_adatas drops genes without reference counts: they are imputed as 0.
    values = values.reindex(columns=[g.lower() for g in genes], fill_value=0.0)
    return values.set_axis(genes, axis=1)


RUNNERS = {
    "deltavae": run_deltavae,
    "deltavae-type": lambda s, r, h, a: run_deltavae(s, r, h, a, profiles="type"),
    "deltavae-latent": lambda s, r, h, a: run_deltavae(s, r, h, a, design="latent"),
    "knn": run_knn,
    "gimvi": run_gimvi,
    "tangram": run_tangram,
}
NAMES = {
    "deltavae": "deltavae SpatialImputer",
    "deltavae-type": "deltavae SpatialImputer (type profiles)",
    "deltavae-latent": "deltavae SpatialImputer (latent)",
    "knn": "kNN on shared genes",
    "gimvi": "scvi GIMVI",
    "tangram": "Tangram",
}


# ------------------------------------------------------------------ protocol
def run_method(spatial, reference, method: str, args) -> tuple[pd.DataFrame, float]:
    """The package's k-fold protocol (``cross_validate_genes``, which
    ``SpatialImputer.cross_validate`` runs for users) with one method: its per-gene scores,
    with ``fold``, and its seconds."""
    seconds = 0.0

    def impute(spots, ref, hidden):
        nonlocal seconds
        with Timer() as t:
            pred = RUNNERS[method](spots, ref.copy(), hidden, args)
        seconds += t.seconds
        return pred

    with warnings.catch_warnings():
        # The methods' own notes, and imputation_scores' of constant predictions (counted
        # below as failures).
        warnings.simplefilter("ignore")
        table = cross_validate_genes(
            spatial,
            reference,
            impute,
            spatial.var_names,
            n_folds=args.folds,
            seed=args.seed,
            only_folds=args.only_folds,
        )
    return table, seconds


def failures(table: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The scores of ``imputation_scores`` (``fold`` dropped) with an undefined score counted
    as a failure (``FAILED``), and the number of genes that failed (so the metric's warning of
    constant predictions, which ``.median()`` would skip, is said here by that count)."""
    scores = table.drop(columns="fold", errors="ignore")
    return scores.fillna(FAILED), int(scores.isna().any(axis=1).sum())


def run_pair(name: str, args) -> dict[str, dict]:
    spatial, reference = load_pair(name, args.data_dir)
    out, n_scored = {}, 0
    for method in args.methods:
        table, seconds = run_method(spatial, reference, method, args)
        for fold, pcc in table.groupby("fold")["pcc"].median().items():
            log(f"{name} fold {fold} {method}: median PCC {pcc:.3f}")
        n_scored = len(table)
        scores, n_failed = failures(table)
        row = scores.median().to_dict()
        row["seconds"] = seconds
        row["failed"] = n_failed
        out[method] = row
        log(f"{name} {method}: {seconds:.1f} s")
    out["_info"] = {
        "spots": spatial.n_obs,
        "cells": reference.n_obs,
        "genes": spatial.n_vars,
        "scored": n_scored,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=PAIRS, choices=PAIRS)
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--only-folds", type=int, nargs="+", help="run these folds only (quick checks)"
    )
    parser.add_argument("--epochs", type=int, default=400, help="SpatialImputer epochs")
    parser.add_argument("--latent-epochs", type=int, default=100, help="latent design epochs")
    parser.add_argument("--gimvi-epochs", type=int, default=100)
    parser.add_argument("--tangram-epochs", type=int, default=300)
    parser.add_argument("--knn-k", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=None, help="shared data root")
    args = parser.parse_args()
    announce("imputation.py")  # its header: the versions it ran on
    torch.set_num_threads(args.threads)
    for noisy in ("lightning", "lightning.pytorch", "scvi", "tangram", "root"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    print(
        f"deltavae {dv.__version__}, scvi-tools {scvi.__version__}, torch {torch.__version__}, "
        f"{args.threads} torch thread(s); load average at start {load_average():.1f}"
    )
    if "tangram" in args.methods and importlib.util.find_spec("tangram") is None:
        print("tangram-sc is not installed (pip install tangram-sc): Tangram is left out.")
        args.methods = [m for m in args.methods if m != "tangram"]
    rows, wins = [], []
    for name in args.pairs:
        result = run_pair(name, args)
        info = result.pop("_info")
        for method, row in result.items():
            rows.append(
                [
                    f"{name} ({info['spots']} spots, {info['cells']} cells, {info['genes']} "
                    f"genes, {info['scored']} scored)",
                    NAMES[method],
                    *(f"{row[m]:.3f}" for m in ("pcc", "ssim", "rmse", "jsd")),
                    row["failed"],
                    f"{row['seconds']:.0f}",
                ]
            )
        if "deltavae" in result:
            others = {m: r["pcc"] for m, r in result.items() if not m.startswith("deltavae")}
            best = max(others.values(), default=float("-inf"))
            wins.append((name, result["deltavae"]["pcc"] > best))
    folds = f"{args.folds} folds"
    if args.only_folds is not None:
        folds = f"folds {args.only_folds} of {folds}"
    settings = {
        "deltavae": f"SpatialImputer {args.epochs} epochs",
        "knn": f"kNN k={args.knn_k}",
        "gimvi": f"GIMVI {args.gimvi_epochs} epochs",
        "tangram": f"Tangram {args.tangram_epochs} epochs",
    }
    settings = ", ".join(
        text
        for method, text in settings.items()
        if any(m.split("-")[0] == method for m in args.methods)
    )
    print(
        f"\n### Held-out genes, {folds} (seed {args.seed}); medians over "
        "the scored genes (failures counted); "
        f"{settings}\n"
    )
    print(
        markdown_table(
            ["pair", "method", "PCC", "SSIM", "RMSE", "JSD", "failed genes", "seconds"], rows
        )
    )
    if wins:
        met = ", ".join(f"{n}: {'yes' if w else 'no'}" for n, w in wins)
        print(f"\nTarget (median PCC above every other method): {met}")
    print(f"load average at end {load_average():.1f}")


if __name__ == "__main__":
    main()
