"""Translating into a condition that only a query brought, against one model trained on both.

Kang IFN-beta (muscat's example: 1,556 cells x 1,267 genes, two donors, five types). For a
held-out cell type T: (a) one count CGMDVAE (``likelihood="nb"``, labels ``cell_type``,
condition ``condition``) trained on every cell but T's stimulated ones; (b) a reference of
the control cells, and the stimulated cells but T's, unlabelled, mapped onto it with
``load_query_data`` and trained. Each translates T's control cells to ``"stim"`` with the model
alone (``response_weight=0``). Scores on log-normalized counts (``dv.metrics.log_normalize``
of one draw per cell), as ``benchmarks/transfer.py`` measures them: R² of the per-gene means
against T's real stimulated cells (all genes; T's top-100 DE genes, Wilcoxon, real ctrl vs
stim), and R² between the predicted and the true change of the mean on those genes
(``dv.metrics.mean_expression_r2(..., control=)``; 0 for a prediction that changes none of
them up to rounding, such as no change, whose R² is undefined).

With ``--donors``, the query is another donor, which may hold both conditions: a reference of
donor 101 (its control cells alone, or both conditions) and donor 107 mapped as a query with T's
stimulated cells held out everywhere. The query's conditions: the reference's labels (nothing
new), its stimulated cells alone under a new label, its control cells as ``ctrl`` and the
stimulated ones under a new label, or both under new labels. Donor 107's T control cells are
translated at ``response_weight`` 0, 0.5 and 1 (1: the query's observed responses alone),
against no change, the additive baseline (the mean response of donor 107's other types) and
one model trained on both donors.

Run from the repository root::

    python benchmarks/query_translation.py --seeds 0 1 --data-dir ../shared/data
    python benchmarks/query_translation.py --donors --seeds 0 1 2 --data-dir ../shared/data
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scanpy as sc  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402
from _common import Timer, delta_r2  # noqa: E402
from _env import announce  # noqa: E402

import deltavae as dv  # noqa: E402

QUIET = {"enable_progress_bar": False, "enable_model_summary": False}
FILE = "kang2018_ifnb_muscat/kang_ctrl_stim_muscat_example.h5ad"


def log_means(counts) -> np.ndarray:
    counts = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    return np.asarray(dv.metrics.log_normalize(counts))


def scores(pred, ctrl, real, top) -> str:
    """R² all genes | R² top-100 | R² of the change (``_common.delta_r2``: 0 for no change)."""
    r2_all = dv.metrics.mean_expression_r2(pred, real)
    r2_top = dv.metrics.mean_expression_r2(pred, real, genes=top)
    return f"{r2_all:.3f} | {r2_top:.3f} | {delta_r2(pred, real, ctrl, top):.3f}"


def run(adata, held: str, seed: int, epochs: int, query_epochs: int) -> None:
    held_cells = (adata.obs["cell_type"] == held).to_numpy()
    stim = (adata.obs["condition"] == "stim").to_numpy()
    ctrl_cells = adata[held_cells & ~stim].copy()
    ctrl, real = log_means(ctrl_cells.X), log_means(adata[held_cells & stim].X)
    both = ad.AnnData(np.vstack([ctrl, real]), var=adata.var[[]].copy())
    both.obs["group"] = ["ctrl"] * len(ctrl) + ["stim"] * len(real)
    sc.tl.rank_genes_groups(both, "group", groups=["stim"], reference="ctrl", method="wilcoxon")
    ranked = [str(g) for g in both.uns["rank_genes_groups"]["names"]["stim"]]
    top = adata.var_names.isin(ranked[:100])
    print(f"| {held} | {seed} | no change | {scores(ctrl, ctrl, real, top)} | |")

    scvi.settings.seed = seed
    together = adata[~(held_cells & stim)].copy()
    dv.model.CGMDVAE.setup_anndata(together, condition_key="condition", labels_key="cell_type")
    with Timer() as t:
        model = dv.model.CGMDVAE(together, likelihood="nb")
        model.train(max_epochs=epochs, **QUIET)
    pred = model.translate(ctrl_cells, "stim", response_weight=0, seed=0).layers["counts"]
    row = scores(log_means(pred), ctrl, real, top)
    print(f"| {held} | {seed} | one model, both conditions | {row} | {t.seconds:.0f} |")

    scvi.settings.seed = seed
    reference = adata[~stim].copy()
    query = adata[stim & ~held_cells].copy()
    query.obs["cell_type"] = "Unknown"
    dv.model.CGMDVAE.setup_anndata(reference, condition_key="condition", labels_key="cell_type")
    with Timer() as t:
        ref_model = dv.model.CGMDVAE(reference, likelihood="nb")
        ref_model.train(max_epochs=epochs, **QUIET)
        query_model = dv.model.CGMDVAE.load_query_data(query, ref_model)
        query_model.train(max_epochs=query_epochs, **QUIET)
    pred = query_model.translate(ctrl_cells, "stim", response_weight=0, seed=0).layers["counts"]
    row = scores(log_means(pred), ctrl, real, top)
    print(f"| {held} | {seed} | stim mapped as a query | {row} | {t.seconds:.0f} |")


#: The query's condition labels for its control and stimulated cells (None: left out).
QUERY_LABELS = {
    "the reference's labels": ("ctrl", "stim"),
    "stim alone, new": (None, "stim2"),
    "ctrl + new stim": ("ctrl", "stim2"),
    "new ctrl + new stim": ("ctrl2", "stim2"),
}


def additive(log, obs, held: str, ctrl) -> np.ndarray:
    """``ctrl`` plus the mean over the other types of their stim minus ctrl mean of ``log``."""
    responses = []
    for other in sorted(set(obs["cell_type"]) - {held}):
        member = (obs["cell_type"] == other).to_numpy()
        under = {c: member & (obs["condition"] == c).to_numpy() for c in ("ctrl", "stim")}
        if under["ctrl"].any() and under["stim"].any():
            responses.append(log[under["stim"]].mean(0) - log[under["ctrl"]].mean(0))
    return np.maximum(ctrl + np.mean(responses, axis=0), 0.0)


def run_donors(adata, held: str, seed: int, epochs: int, query_epochs: int) -> None:
    stim = (adata.obs["condition"] == "stim").to_numpy()
    keep = ~((adata.obs["cell_type"] == held).to_numpy() & stim)
    query_donor = (adata.obs["donor"] == "107").to_numpy()
    held_107 = query_donor & (adata.obs["cell_type"] == held).to_numpy()
    ctrl_cells = adata[held_107 & ~stim].copy()
    ctrl, real = log_means(ctrl_cells.X), log_means(adata[held_107 & stim].X)
    both = ad.AnnData(np.vstack([ctrl, real]), var=adata.var[[]].copy())
    both.obs["group"] = ["ctrl"] * len(ctrl) + ["stim"] * len(real)
    sc.tl.rank_genes_groups(both, "group", groups=["stim"], reference="ctrl", method="wilcoxon")
    ranked = [str(g) for g in both.uns["rank_genes_groups"]["names"]["stim"]]
    top = adata.var_names.isin(ranked[:100])
    query = adata[query_donor & keep].copy()

    def say(what: str, pred, seconds="") -> None:
        print(f"| {held} | {seed} | {what} | {scores(pred, ctrl, real, top)} | {seconds} |")

    say("no change", ctrl)
    say("additive (donor 107's other types)", additive(log_means(query.X), query.obs, held, ctrl))
    for kind in ("ctrl", "both"):
        scvi.settings.seed = seed
        reference = adata[~query_donor & keep & (~stim if kind == "ctrl" else True)].copy()
        dv.model.CGMDVAE.setup_anndata(reference, condition_key="condition", labels_key="cell_type")
        with Timer() as t:
            ref_model = dv.model.CGMDVAE(reference, likelihood="nb")
            ref_model.train(max_epochs=epochs, **QUIET)
        for name, (c, s) in QUERY_LABELS.items():
            if kind == "ctrl" and s == "stim":
                continue  # stim is new to a control reference: the next row's case
            mapped = query[query.obs["condition"] == "stim"].copy() if c is None else query.copy()
            mapped.obs["condition"] = mapped.obs["condition"].map({"ctrl": c, "stim": s})
            cells = ctrl_cells.copy()
            cells.obs["condition"] = c or "ctrl"
            scvi.settings.seed = seed
            with Timer() as q:
                query_model = dv.model.CGMDVAE.load_query_data(mapped, ref_model)
                query_model.train(max_epochs=query_epochs, **QUIET)
            weights = (0.0,) if c is None else (0.0, 0.5, 1.0)  # no response without ctrl
            for weight in weights:
                pred = query_model.translate(cells, s, response_weight=weight, seed=0)
                what = f"{kind} reference; query: {name}; response_weight {weight}"
                say(what, log_means(pred.layers["counts"]), f"{t.seconds + q.seconds:.0f}")
    scvi.settings.seed = seed
    together = adata[keep].copy()
    dv.model.CGMDVAE.setup_anndata(together, condition_key="condition", labels_key="cell_type")
    with Timer() as t:
        model = dv.model.CGMDVAE(together, likelihood="nb")
        model.train(max_epochs=epochs, **QUIET)
    for weight in (0.0, 0.5, 1.0):
        pred = model.translate(ctrl_cells, "stim", response_weight=weight, seed=0)
        what = f"one model, both donors; response_weight {weight}"
        say(what, log_means(pred.layers["counts"]), f"{t.seconds:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="../shared/data")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--types", nargs="+", default=["CD14+ Monocytes", "B cells"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--query-epochs", type=int, default=50)
    parser.add_argument("--donors", action="store_true", help="a query of donor 107 (see above)")
    args = parser.parse_args()
    announce("query_translation.py")  # its header: the versions it ran on
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")  # convergence notes of the short runs
    adata = ad.read_h5ad(Path(args.data_dir) / FILE)
    for column in ("cell_type", "condition", "donor"):
        adata.obs[column] = adata.obs[column].astype(str)
    print("| held-out type | seed | model | R² all | R² top-100 | R² of the change | s |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for held in args.types:
            (run_donors if args.donors else run)(adata, held, seed, args.epochs, args.query_epochs)


if __name__ == "__main__":
    main()
