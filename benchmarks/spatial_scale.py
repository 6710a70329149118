"""NMFDeconv at tissue scale: pseudo-spots from real PBMC cells, backed next to in memory.

Data: PBMC 3k restricted to its 2,000 seurat_v3 highly variable genes; half of each cell
type's cells is held out as the reference (written to ``reference.h5ad``), the other half is
the pool that spots are summed from (:func:`deltavae.datasets.pseudo_spots`, 2-10 cells of up
to 4 types per spot, so the true proportions are known exactly). Spots are made ``CHUNK`` at
a time and appended to the .h5ad files of every size at once (the 1M file holds the 100k
file's spots as its first rows, which hold the 10k file's), so no size is ever in memory
whole; the truth goes to ``obsm["proportions_true"]``.

Each (size, mode) runs in a fresh interpreter, so each peak RSS is its own:

* ``memory``: ``anndata.read_h5ad(path)``, the sparse matrix in RAM;
* ``backed``: ``deltavae.read_lazy(path)``, each minibatch read from the file.

Both build ``NMFDeconv.from_reference`` (its default: amortised proportions, 50 marker genes
per type), train ``--spot-passes`` spot-visits in all (so every size takes the same number of
optimiser steps: epochs = passes / spots, at least 1) with ``--batch-size`` spots per step
and blocks of ``--block`` neighbouring spots per minibatch (both modes, so they see the same
minibatches), then infer every spot's proportions and score them: the median over cell types
of the Pearson correlation with the truth (``--model archetypes``: with the archetype weight
matched to each type one-to-one, Hungarian, as ``dv.metrics.matched_profile_correlation``
does, so no archetype counts for two types). Targets (issue 22): backed peak RSS within 1.5x
from 100k to 1M spots, and median PCC on 1M within 0.01 of 10k.

Run from the repository root (``--sizes 10000,100000`` takes about 10 minutes on 2 CPUs)::

    python benchmarks/spatial_scale.py --sizes 10000,100000,1000000 --data-dir /tmp/dv-spatial
"""

from __future__ import annotations

import os

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import (
    PeakRSS,
    Timer,
    load_average,
    markdown_table,
    mib,
    quiet,
    run_json_subprocess,
)
from _env import announce, with_versions  # noqa: E402

N_GENES = 2000
CHUNK = 50_000
TARGET_MEMORY_GROWTH = 1.5
TARGET_PCC_GAP = 0.01
MODES = ("memory", "backed")


def _file(data_dir: Path, n_spots: int) -> Path:
    return data_dir / f"spots_{n_spots}.h5ad"


def make_data(sizes: list[int], data_dir: Path, seed: int = 0) -> None:
    """Write ``spots_<n>.h5ad`` for every size and ``reference.h5ad`` into ``data_dir``."""
    import anndata as ad
    import h5py
    import pandas as pd
    import scanpy as sc
    from anndata.io import sparse_dataset, write_elem

    import deltavae as dv

    data_dir.mkdir(parents=True, exist_ok=True)
    cells = dv.datasets.pbmc3k()
    hvg = sc.pp.highly_variable_genes(cells, n_top_genes=N_GENES, flavor="seurat_v3", inplace=False)
    cells = cells[:, hvg["highly_variable"].to_numpy()].copy()
    # The held-out half: pseudo_spots splits every type (its first spot is discarded).
    _, reference = dv.datasets.pseudo_spots(cells, "cell_type", n_spots=1, seed=seed)
    reference.write_h5ad(data_dir / "reference.h5ad")
    pool = cells[~cells.obs_names.isin(reference.obs_names)].copy()
    files = {n: h5py.File(_file(data_dir, n), "w") for n in sizes}
    matrices, truths, written = {}, {n: [] for n in sizes}, dict.fromkeys(sizes, 0)
    types = None
    for i, start in enumerate(range(0, max(sizes), CHUNK)):
        n_chunk = min(CHUNK, max(sizes) - start)
        # reference_fraction: pseudo_spots keeps >= 1 cell per type aside; a small share.
        spots, _ = dv.datasets.pseudo_spots(
            pool, "cell_type", n_spots=n_chunk, seed=seed + 1 + i, reference_fraction=0.01
        )
        truth = spots.obsm["proportions_true"]
        types = list(truth.columns)
        for n, file in files.items():
            take = min(n - written[n], n_chunk)
            if take <= 0:
                continue
            X = spots.X[:take].tocsr()
            if n not in matrices:
                write_elem(file, "X", X)
                matrices[n] = sparse_dataset(file["X"])
            else:
                matrices[n].append(X)
            truths[n].append(truth.to_numpy(np.float32)[:take])
            written[n] += take
        print(f"  chunk {i}: {start + n_chunk:,} spots", file=sys.stderr, flush=True)
    for n, file in files.items():
        names = pd.Index([f"spot_{s}" for s in range(n)])
        meta = ad.AnnData(obs=pd.DataFrame(index=names), var=pool.var[[]].copy())
        for key in ("obs", "var"):
            write_elem(file, key, getattr(meta, key))
        write_elem(file, "obsm", {"proportions_true": np.concatenate(truths[n])})
        write_elem(file, "uns", {"cell_types": np.asarray(types, dtype=str), "seed": seed})
        for key in ("layers", "obsp", "varm", "varp"):
            write_elem(file, key, {})
        file.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        file.close()


def _made(data_dir: Path, sizes: list[int], seed: int) -> bool:
    """Whether ``data_dir`` holds the reference and the spots of every size, made from
    ``seed``."""
    import h5py

    if not (data_dir / "reference.h5ad").exists():
        return False
    for n in sizes:
        if not _file(data_dir, n).exists():
            return False
        with h5py.File(_file(data_dir, n), "r") as file:
            if "seed" not in file["uns"] or int(file["uns"]["seed"][()]) != seed:
                return False
    return True


def _remove(data_dir: Path, sizes: list[int]) -> None:
    """Delete the files this script writes, and ``data_dir`` if that leaves it empty."""
    for path in [data_dir / "reference.h5ad", *(_file(data_dir, n) for n in sizes)]:
        path.unlink(missing_ok=True)
    if data_dir.is_dir() and not any(data_dir.iterdir()):
        data_dir.rmdir()


def archetype_scores(truth, weights: np.ndarray):
    """Archetypes have no labels: each type's proportions across spots (a column of
    ``truth``) against the archetype weight matched to it one-to-one (Hungarian, on the
    Pearson correlation across spots: ``dv.metrics.matched_profile_correlation``), so two
    types cannot both claim one archetype; a type left without one scores 0. No RMSE."""
    import pandas as pd

    import deltavae as dv

    matched = dv.metrics.matched_profile_correlation(truth.to_numpy().T, np.asarray(weights).T)
    return pd.DataFrame({"pcc": matched["correlation"].to_numpy(), "rmse": np.nan})


def worker(path: str, mode: str, args: argparse.Namespace) -> dict:
    """Fit NMFDeconv on ``path`` read in ``mode``; times, peak RSS and accuracy as a dict."""
    import anndata as ad
    import pandas as pd
    import scvi
    import torch

    import deltavae as dv

    torch.set_num_threads(1)
    quiet()
    scvi.settings.seed = args.seed
    reference = ad.read_h5ad(Path(path).with_name("reference.h5ad"))
    archetypes = args.model == "archetypes"
    with PeakRSS() as peak:
        with Timer() as load:
            adata = dv.read_lazy(path) if mode == "backed" else ad.read_h5ad(path)
        with Timer() as setup:
            if archetypes:
                dv.model.Archetypes.setup_anndata(adata)
                model = dv.model.Archetypes(adata, n_archetypes=len(adata.uns["cell_types"]))
            else:
                model = dv.model.NMFDeconv.from_reference(
                    adata, reference=reference, labels_key="cell_type", inference=args.inference
                )
        epochs = max(1, round(args.spot_passes / adata.n_obs))
        with Timer() as fit:
            model.train(
                max_epochs=epochs,
                batch_size=args.batch_size,
                shuffle_block_size=args.block,
                accelerator="cpu",
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        with Timer() as infer:
            if archetypes:
                weights = model.get_archetype_weights(batch_size=4096).to_numpy()
            else:
                proportions = model.get_proportions(batch_size=4096)
    truth = adata.obsm["proportions_true"]
    types = [str(t) for t in adata.uns["cell_types"]]
    truth = pd.DataFrame(np.asarray(truth), index=adata.obs_names, columns=types)
    if archetypes:
        scores = archetype_scores(truth, weights)
    else:
        scores = dv.metrics.deconvolution_scores(truth, proportions)
    return {
        "n_spots": adata.n_obs,
        "mode": mode,
        "epochs": epochs,
        "load_setup_s": load.seconds + setup.seconds,
        "epoch_s": fit.seconds / epochs,
        "spots_per_s": adata.n_obs * epochs / fit.seconds,
        "infer_s": infer.seconds,
        "peak_rss_mib": mib(peak.peak),
        "pcc": float(scores["pcc"].median()),
        "rmse": float(scores["rmse"].median()),
        "load": load_average(),
    }


def _table(results: list[dict]) -> str:
    rows = [
        [
            f"{r['n_spots']:,}",
            r["mode"],
            r["epochs"],
            f"{r['load_setup_s']:.1f}",
            f"{r['epoch_s']:.1f}",
            f"{r['spots_per_s']:,.0f}",
            f"{r['infer_s']:.1f}",
            f"{r['peak_rss_mib']:,.0f}",
            f"{r['pcc']:.3f}",
            f"{r['rmse']:.3f}",
        ]
        for r in results
    ]
    headers = [
        "spots",
        "mode",
        "epochs",
        "read + setup (s)",
        "s / epoch",
        "spots / s",
        "proportions (s)",
        "peak RSS (MiB)",
        "median PCC",
        "median RMSE",
    ]
    return markdown_table(headers, rows)


def _verdict(results: list[dict]) -> list[str]:
    """One line per target and mode: the smallest size against the largest (for memory,
    the smallest of at least 100k spots)."""
    lines = []
    for mode in MODES:
        runs = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["n_spots"])
        big = [r for r in runs if r["n_spots"] >= 100_000]
        pairs = [("peak RSS", big, "peak_rss_mib"), ("median PCC", runs, "pcc")]
        for what, sized, key in pairs:
            if len(sized) < 2:
                continue
            small, large = sized[0], sized[-1]
            if key == "pcc":
                value, target = small[key] - large[key], TARGET_PCC_GAP
                change = f"{small[key]:.3f} -> {large[key]:.3f}, drop {value:+.3f}"
            else:
                value, target = large[key] / small[key], TARGET_MEMORY_GROWTH
                change = f"{small[key]:,.0f} -> {large[key]:,.0f} MiB, x{value:.2f}"
            lines.append(
                f"{mode} {what}, {small['n_spots']:,} -> {large['n_spots']:,} spots: {change} "
                f"(target <= {target}: {'yes' if value <= target else 'no'})"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated spot counts")
    parser.add_argument("--modes", default="memory,backed")
    parser.add_argument(
        "--memory-max", type=int, default=100_000, help="largest size also run in memory"
    )
    parser.add_argument("--data-dir", default="/tmp/dv-spatial")
    parser.add_argument("--spot-passes", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--block", type=int, default=64, help="shuffle_block_size")
    parser.add_argument("--inference", default="amortized", help="NMFDeconv's inference")
    parser.add_argument(
        "--model",
        default="nmfdeconv",
        choices=("nmfdeconv", "archetypes"),
        help="archetypes: as many as cell types; PCC of each type with the archetype weight "
        "matched to it one-to-one (Hungarian)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-only", action="store_true", help="write the files and stop")
    parser.add_argument("--keep", action="store_true", help="keep the data files")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--worker", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args)))
        return
    announce("spatial_scale.py")  # its header: the versions it ran on
    sizes = sorted(int(s) for s in args.sizes.split(","))
    data_dir = Path(args.data_dir)
    if not _made(data_dir, sizes, args.seed):
        with Timer() as t:
            make_data(sizes, data_dir, args.seed)
        print(f"wrote {sizes} spots in {t.seconds:.0f} s", file=sys.stderr)
    if args.data_only:
        return
    results = []
    forwarded = [
        f"--spot-passes={args.spot_passes}",
        f"--batch-size={args.batch_size}",
        f"--block={args.block}",
        f"--inference={args.inference}",
        f"--model={args.model}",
        f"--seed={args.seed}",
    ]
    for n in sizes:
        for mode in args.modes.split(","):
            if mode == "memory" and n > args.memory_max:
                continue
            start = time.perf_counter()
            result = run_json_subprocess(
                [__file__, "--worker", str(_file(data_dir, n)), mode, *forwarded]
            )
            results.append(result)
            print(
                f"{n:,} {mode}: {time.perf_counter() - start:.0f} s, " + json.dumps(result),
                file=sys.stderr,
                flush=True,
            )
    name = (
        "Archetypes (PCC: each type against the archetype weight matched to it one-to-one)"
        if args.model == "archetypes"
        else f"NMFDeconv, {args.inference}"
    )
    print(
        f"\n{name}; {args.spot_passes:,} spot passes, batch "
        f"{args.batch_size}, blocks of {args.block}, seed {args.seed}, 1 torch thread\n"
    )
    print(_table(results))
    print()
    for line in _verdict(results):
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps(with_versions(results), indent=1))
    if not args.keep:
        _remove(data_dir, sizes)


if __name__ == "__main__":
    main()
