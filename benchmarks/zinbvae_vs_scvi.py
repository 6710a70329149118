"""deltavae's ZINBVAE against scvi-tools' SCVI: same data, same architecture, side by side.

Part 1, PBMC 3k (2,000 seurat_v3 highly variable genes on the counts): seconds per epoch, peak
RSS growth during training, reconstruction NLL per cell on 10% of cells never seen in training,
and ARI/NMI of Leiden clusters of each latent against ``cell_type``; mean ± sd over seeds.

Part 2, memory scaling: synthetic sparse counts (CSR) with 2,000 genes at each ``--sizes``, one
epoch per model, each (model, size) in its own fresh interpreter so no run inherits another's
memory.

Run from the repository root::

    python benchmarks/zinbvae_vs_scvi.py --quick            # smoke run, under 2 minutes
    python benchmarks/zinbvae_vs_scvi.py --out results.json  # the full benchmark
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads
from _common import (
    PeakRSS,
    Timer,
    csr_nbytes,
    environment,
    environment_line,
    leiden_labels,
    load_average,
    mib,
    quiet,
    run_json_subprocess,
)
from _env import announce  # noqa: E402
from _zinbvae_tables import pbmc_table, scaling_table

N_HIDDEN, N_LATENT, N_LAYERS = 128, 10, 1
BATCH_SIZE = 128
TRAIN_SIZE = 0.9  # fraction of the training cells used for SVI; the rest is validation
TEST_FRACTION = 0.1  # cells held out of training altogether, for the NLL
N_TOP_GENES = 2000
N_THREADS = 2
NLL_PASSES = 5  # reconstruction error uses one posterior sample per pass; average a few
PBMC_MEMORY_EPOCHS = 5  # peak memory is reached in the first epoch; a few suffice
MODELS = ("ours", "scvi")


def _setup_torch(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- models
def _build(kind: str, adata):
    """Register ``adata`` and build the model; both get the same architecture."""
    import scvi

    import deltavae as dv

    cls = dv.model.ZINBVAE if kind == "ours" else scvi.model.SCVI
    # The two spell the likelihood argument differently.
    likelihood = {"likelihood" if kind == "ours" else "gene_likelihood": "zinb"}
    cls.setup_anndata(adata, layer=None, batch_key=None)
    return cls(
        adata,
        n_latent=N_LATENT,
        n_hidden=N_HIDDEN,
        n_layers=N_LAYERS,
        dropout_rate=0.1,
        dispersion="gene",
        **likelihood,
    )


def _train(kind: str, model, epochs: int, kl_warmup: int) -> None:
    common = {
        "max_epochs": epochs,
        "batch_size": BATCH_SIZE,
        "train_size": TRAIN_SIZE,
        "accelerator": "cpu",
        # ZINBVAE validates every epoch by default; make SCVI do the same work.
        "check_val_every_n_epoch": 1,
        "enable_progress_bar": False,
    }
    if kind == "ours":
        model.train(n_epochs_kl_warmup=kl_warmup, **common)
    else:
        model.train(plan_kwargs={"n_epochs_kl_warmup": kl_warmup}, **common)


def _timed_train(kind: str, model, epochs: int, kl_warmup: int) -> dict:
    gc.collect()
    load_before = load_average()
    with PeakRSS() as mem, Timer() as timer:
        _train(kind, model, epochs, kl_warmup)
    return {
        "sec_per_epoch": timer.seconds / epochs,
        "cpu_sec_per_epoch": timer.cpu_seconds / epochs,
        "train_seconds": timer.seconds,
        "load_average": (load_before + load_average()) / 2,
        "rss_before_mib": mib(mem.baseline),
        "rss_peak_mib": mib(mem.peak),
        "rss_delta_mib": mib(mem.delta),
    }


# --------------------------------------------------------------------------- part 1: PBMC
def load_pbmc(n_top_genes: int):
    import scanpy as sc

    import deltavae as dv

    adata = dv.datasets.pbmc3k()
    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top_genes, subset=True)
    # A cell without counts in the selected genes has log library -inf in both models.
    counts = adata.X.sum(axis=1).A1 if hasattr(adata.X, "toarray") else adata.X.sum(axis=1)
    adata = adata[counts > 0].copy()
    return adata


def split_cells(n_cells: int, fraction: float, seed: int = 0):
    """Fixed held-out test cells, identical for every model and seed."""
    import numpy as np

    perm = np.random.default_rng(seed).permutation(n_cells)
    n_test = int(round(fraction * n_cells))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _leiden_scores(latent, labels, resolution: float) -> dict:
    import deltavae as dv

    pred = leiden_labels(latent, resolution, seed=0)
    return {
        "ari": float(dv.metrics.ari(labels, pred)),
        "nmi": float(dv.metrics.nmi(labels, pred)),
        "n_leiden_clusters": len(set(pred)),
    }


def run_pbmc_one(kind: str, seed: int, data, epochs: int, kl_warmup: int, resolution: float):
    import numpy as np
    import scvi

    adata, train_idx, test_idx = data
    scvi.settings.seed = seed  # seeds torch, numpy and the train/validation split
    a_train = adata[train_idx].copy()
    model = _build(kind, a_train)
    out = {"model": kind, "seed": seed, **_timed_train(kind, model, epochs, kl_warmup)}

    a_test = adata[test_idx].copy()
    scvi.settings.seed = seed
    nll = [
        float(model.get_reconstruction_error(a_test)["reconstruction_loss"])
        for _ in range(NLL_PASSES)
    ]
    out["test_nll"] = float(np.mean(nll))
    hist = model.history
    if "elbo_validation" in hist:
        out["final_elbo_validation"] = float(hist["elbo_validation"].iloc[-1, 0])

    a_all = adata.copy()
    latent = model.get_latent_representation(a_all)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    out.update(_leiden_scores(latent, labels, resolution))
    del model
    gc.collect()
    return out


def _fresh_process_run(kind: str, h5ad: Path, epochs: int, seed: int) -> dict:
    args = [
        str(Path(__file__).resolve()),
        "--_worker",
        kind,
        "--_h5ad",
        str(h5ad),
        "--epochs",
        str(epochs),
        "--seeds",
        str(seed),
        "--threads",
        str(_ARGS.threads),
    ]
    return run_json_subprocess(args)


def run_pbmc(seeds, epochs: int, kl_warmup: int, resolution: float, log) -> dict:
    adata = load_pbmc(N_TOP_GENES)
    train_idx, test_idx = split_cells(adata.n_obs, TEST_FRACTION)
    data = (adata, train_idx, test_idx)
    log(
        f"PBMC: {adata.n_obs} cells x {adata.n_vars} genes; {len(train_idx)} for training "
        f"({TRAIN_SIZE:.0%} SVI / {1 - TRAIN_SIZE:.0%} validation), {len(test_idx)} held out"
    )
    # Warm-up (not measured): first-call costs (lazy imports, kernel selection, allocator
    # growth) would otherwise be charged to whichever model runs first.
    for kind in MODELS:
        _train(kind, _build(kind, adata[train_idx[:512]].copy()), 1, 1)
    gc.collect()

    runs = []
    for i, seed in enumerate(seeds):
        # Alternate the order so neither model always runs on a freshly warmed process.
        order = MODELS if i % 2 == 0 else MODELS[::-1]
        for kind in order:
            r = run_pbmc_one(kind, seed, data, epochs, kl_warmup, resolution)
            log(
                f"  seed {seed} {kind:4s}: {r['sec_per_epoch']:.3f} s/epoch, "
                f"dRSS {r['rss_delta_mib']:.0f} MiB, NLL {r['test_nll']:.2f}, "
                f"ARI {r['ari']:.3f}, NMI {r['nmi']:.3f} ({r['n_leiden_clusters']} clusters)"
            )
            runs.append(r)

    # In this process the allocator keeps what earlier runs freed, so a later run's RSS growth
    # understates its needs; the peak memory reported comes from a fresh process per model.
    mem_epochs = min(epochs, PBMC_MEMORY_EPOCHS)
    memory = {}
    with tempfile.TemporaryDirectory(prefix="deltavae_bench_") as tmp:
        path = Path(tmp) / "pbmc_train.h5ad"
        adata[train_idx].copy().write_h5ad(path)
        for kind in MODELS:
            memory[kind] = _fresh_process_run(kind, path, mem_epochs, seeds[0])
            log(
                f"  fresh process {kind:4s}, {mem_epochs} epochs: RSS before "
                f"{memory[kind]['rss_before_mib']:.0f} MiB, peak "
                f"{memory[kind]['rss_peak_mib']:.0f} MiB (+{memory[kind]['rss_delta_mib']:.0f})"
            )
    return {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "runs": runs,
        "memory_epochs": mem_epochs,
        "memory_fresh_process": memory,
    }


# --------------------------------------------------------------------------- part 2: scaling
def make_synthetic(n_cells: int, path: Path) -> dict:
    """Write a CSR count matrix (n_cells x 2,000) to ``path`` unless it is there already."""
    import anndata as ad

    if not path.exists():
        import deltavae as dv

        adata = dv.datasets.synthetic_counts(
            n_cells=n_cells, n_genes=N_TOP_GENES, n_clusters=10, n_conditions=1, seed=0
        )
        # Keep only what the models read: one CSR matrix of counts.
        adata = ad.AnnData(X=adata.X.tocsr(), obs=adata.obs[["cluster"]], var=adata.var[[]])
        adata.write_h5ad(path)
    adata = ad.read_h5ad(path)
    return {
        "n_cells": adata.n_obs,
        "n_genes": adata.n_vars,
        "nnz": int(adata.X.nnz),
        "x_bytes": csr_nbytes(adata.X),
    }


def worker(kind: str, h5ad: str, epochs: int, seed: int) -> dict:
    """One (model, data set) training run inside a fresh interpreter."""
    import anndata as ad
    import scvi

    adata = ad.read_h5ad(h5ad)
    scvi.settings.seed = seed
    model = _build(kind, adata)
    result = _timed_train(kind, model, epochs, kl_warmup=max(1, epochs // 4))
    result.update({"model": kind, "n_cells": adata.n_obs, "x_bytes": csr_nbytes(adata.X)})
    return result


def run_scaling(sizes, data_dir: Path, seed: int, log) -> dict:
    datasets, runs = {}, []
    for i, n in enumerate(sizes):
        path = data_dir / f"synthetic_{n}x{N_TOP_GENES}.h5ad"
        with Timer() as t:
            datasets[n] = make_synthetic(n, path)
        log(
            f"synthetic {n} cells: {datasets[n]['nnz']:,} non-zeros, "
            f"X {mib(datasets[n]['x_bytes']):.1f} MiB ({t.seconds:.0f} s to make or read)"
        )
        # Alternate the order, as on PBMC.
        for kind in MODELS if i % 2 == 0 else MODELS[::-1]:
            r = _fresh_process_run(kind, path, 1, seed)
            log(
                f"  {kind:4s}: 1 epoch {r['train_seconds']:.1f} s, RSS before "
                f"{r['rss_before_mib']:.0f} MiB, peak {r['rss_peak_mib']:.0f} MiB "
                f"(+{r['rss_delta_mib']:.0f} MiB)"
            )
            runs.append(r)
    return {"datasets": {str(k): v for k, v in datasets.items()}, "runs": runs}


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="training epochs on PBMC (default 100; 3 with --quick)",
    )
    p.add_argument(
        "--kl-warmup",
        type=int,
        default=None,
        help="KL warm-up epochs, passed to both models (default epochs // 4)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        help="seeds for scvi.settings.seed (default 0 1 2; 0 with --quick)",
    )
    p.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=None,
        help="cells in the synthetic scaling data (default 10000 100000; 1000 3000 with --quick)",
    )
    p.add_argument("--resolution", type=float, default=0.5, help="Leiden resolution (both)")
    p.add_argument("--threads", type=int, default=N_THREADS, help="torch threads")
    p.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="directory to cache the synthetic .h5ad files in (default: a temporary "
        "directory removed at the end)",
    )
    p.add_argument("--quick", action="store_true", help="tiny smoke run (< 2 minutes)")
    p.add_argument("--skip-pbmc", action="store_true", help="run only the scaling part")
    p.add_argument("--skip-scaling", action="store_true", help="run only the PBMC part")
    p.add_argument("--out", type=Path, default=None, help="also write all results as JSON")
    p.add_argument("--_worker", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--_h5ad", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.epochs is None:
        args.epochs = 3 if args.quick else 100
    if args.seeds is None:
        args.seeds = [0] if args.quick else [0, 1, 2]
    if args.sizes is None:
        args.sizes = [1000, 3000] if args.quick else [10000, 100000]
    if args.kl_warmup is None:
        args.kl_warmup = max(1, args.epochs // 4)
    args.sizes = sorted(args.sizes)
    return args


_ARGS: argparse.Namespace


def main(argv=None) -> int:
    global _ARGS
    _ARGS = args = parse_args(argv)
    quiet()
    _setup_torch(args.threads)

    if args._worker:
        print(json.dumps(worker(args._worker, args._h5ad, args.epochs, args.seeds[0])))
        return 0
    announce("zinbvae_vs_scvi.py")  # its header: the versions it ran on

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    start_load = tuple(round(v, 2) for v in os.getloadavg())
    results = {
        "settings": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in vars(args).items()
            if not k.startswith("_")
        },
        "environment": environment(),
    }
    out = []
    if not args.skip_pbmc:
        log(f"== PBMC 3k: {args.epochs} epochs, KL warm-up {args.kl_warmup}, seeds {args.seeds}")
        results["pbmc"] = run_pbmc(args.seeds, args.epochs, args.kl_warmup, args.resolution, log)
        out += [
            f"### PBMC 3k, {N_TOP_GENES} HVGs: {results['pbmc']['n_train']} training cells, "
            f"{results['pbmc']['n_test']} held out; {args.epochs} epochs, KL warm-up "
            f"{args.kl_warmup}, mean ± sd over seeds {args.seeds}",
            "",
            pbmc_table(results["pbmc"]),
            "",
        ]
    if not args.skip_scaling:
        log(f"== memory scaling: {args.sizes} cells x {N_TOP_GENES} genes, 1 epoch each")
        if args.data_dir is not None:
            args.data_dir.mkdir(parents=True, exist_ok=True)
            results["scaling"] = run_scaling(args.sizes, args.data_dir, args.seeds[0], log)
        else:
            with tempfile.TemporaryDirectory(prefix="deltavae_bench_") as tmp:
                results["scaling"] = run_scaling(args.sizes, Path(tmp), args.seeds[0], log)
        out += [
            f"### Memory scaling: synthetic CSR counts x {N_TOP_GENES} genes, 1 epoch, "
            "one fresh process per (model, size)",
            "",
            scaling_table(results["scaling"], args.sizes),
            "",
        ]
    results["wall_seconds"] = time.perf_counter() - started
    env = results["environment"]
    loads = [
        r["load_average"]
        for part in ("pbmc", "scaling")
        if part in results
        for r in results[part]["runs"]
    ]
    out.append(
        f"seeds {args.seeds}; load average (1, 5, 15 min) at the start {start_load} and the end "
        f"{tuple(round(v, 2) for v in os.getloadavg())}. "
        f"{environment_line(env)}; 1-min load average during training "
        f"{min(loads):.1f}-{max(loads):.1f}; total {results['wall_seconds']:.0f} s"
    )
    print("\n".join(out), flush=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
        log(f"results written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
