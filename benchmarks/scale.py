"""ZINBVAE on atlases of growing size: one epoch in memory and backed (read from disk).

Writes synthetic sparse count .h5ad files (2,000 genes, ``--sizes`` cells, ~10% non-zero)
chunk by chunk, so no size is ever held whole, dense or sparse, while writing. Each (size,
mode) runs one epoch of ZINBVAE in a fresh interpreter, so every peak memory is its own:

* ``memory``: ``anndata.read_h5ad(path)``, the whole sparse matrix in RAM;
* ``backed``: ``anndata.read_h5ad(path, backed="r")``, each minibatch read from the file;
* ``zarr``: the same cells in a zarr store opened with ``deltavae.read_lazy``, each minibatch
  read from the store;
* ``zarr-blocks``: as ``zarr``, with ``train(shuffle_block_size=32)``: each minibatch is four
  random blocks of 32 neighbouring cells, so it reads 4 stretches of the store, not 128 cells
  scattered over it (zarr decompresses whole chunks for every read).

An epoch is a training pass over 90% of the cells and a validation pass over the other 10%,
so cells/s counts every cell once. Peak RSS covers reading, setup (which checks the counts
chunk by chunk) and the epoch.
Targets (issue 7): backed peak memory flat (within 1.5x) from 100k to 1M cells, and backed
throughput at least half of in-memory throughput.

Run from the repository root::

    python benchmarks/scale.py --sizes 10000 100000 --data-dir /tmp/dv-scale
    python benchmarks/scale.py --sizes 10000 100000 1000000 --out scale.json

The data files are deleted afterwards unless ``--keep`` is given.
"""

from __future__ import annotations

import os

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads

# One thread and passive waiting: the machine is shared (see zinbvae_vs_scvi.py).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import PeakRSS, Timer, markdown_table, mib, quiet, run_json_subprocess
from _env import announce, with_versions  # noqa: E402

N_GENES = 2000
GENES_PER_CELL = 200  # ~10% non-zero, typical of 10x data after gene filtering
CHUNK = 50_000
BATCH_SIZE = 128
MODES = ("memory", "backed", "zarr", "zarr-blocks")
SHUFFLE_BLOCK_SIZE = 32
TARGET_MEMORY_GROWTH = 1.5
TARGET_THROUGHPUT_RATIO = 0.5


def _counts_chunk(rng: np.random.Generator, n_cells: int):
    """Sparse CSR counts for ``n_cells`` cells: negative-binomial-like values on random genes."""
    from scipy import sparse

    rows = np.repeat(np.arange(n_cells), GENES_PER_CELL)
    cols = rng.integers(0, N_GENES, size=rows.size)
    values = 1 + rng.poisson(rng.gamma(0.5, 2.0, size=rows.size))
    # Duplicate (row, col) pairs are summed by the constructor: still integer counts.
    return sparse.csr_matrix(
        (values.astype(np.float32), (rows, cols)), shape=(n_cells, N_GENES), dtype=np.float32
    )


def write_h5ad(path: Path, n_cells: int, seed: int = 0, zarr_path: Path | None = None) -> None:
    """Write ``n_cells`` x 2,000 sparse counts to ``path``, ``CHUNK`` cells at a time.

    With ``zarr_path``, the same cells also go into a zarr store there, chunk by chunk.
    """
    import anndata as ad
    import h5py
    import pandas as pd
    import zarr
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(seed)
    obs = pd.DataFrame(index=[f"cell_{i}" for i in range(n_cells)])
    var = pd.DataFrame(index=[f"gene_{j}" for j in range(N_GENES)])
    ad.AnnData(obs=obs, var=var).write_h5ad(path)
    stores = [h5py.File(path, "r+")]
    if zarr_path is not None:
        ad.AnnData(obs=obs, var=var).write_zarr(zarr_path)
        stores.append(zarr.open_group(zarr_path, mode="r+", use_consolidated=False))
    chunk = _counts_chunk(rng, min(CHUNK, n_cells))
    for store in stores:
        write_elem(store, "X", chunk)
    matrices = [sparse_dataset(store["X"]) for store in stores]
    for start in range(CHUNK, n_cells, CHUNK):
        chunk = _counts_chunk(rng, min(CHUNK, n_cells - start))
        for X in matrices:
            X.append(chunk)
    stores[0].close()
    if zarr_path is not None:
        zarr.consolidate_metadata(zarr_path)


def worker(path: str, mode: str) -> dict:
    """One epoch of ZINBVAE on ``path`` read in ``mode``; times and peak RSS as a dict."""
    import anndata as ad
    import scvi
    import torch

    import deltavae as dv

    torch.set_num_threads(1)
    quiet()
    scvi.settings.seed = 0
    with PeakRSS() as peak:
        with Timer() as load:
            if mode.startswith("zarr"):
                adata = dv.read_lazy(Path(path).with_suffix(".zarr"))
            else:
                adata = ad.read_h5ad(path, backed="r" if mode == "backed" else None)
        with Timer() as setup:
            dv.model.ZINBVAE.setup_anndata(adata)
            model = dv.model.ZINBVAE(adata, n_latent=10, n_hidden=128)
        with Timer() as epoch:
            model.train(
                max_epochs=1,
                batch_size=BATCH_SIZE,
                accelerator="cpu",
                shuffle_block_size=SHUFFLE_BLOCK_SIZE if mode.endswith("blocks") else None,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    return {
        "n_cells": adata.n_obs,
        "mode": mode,
        "load_s": load.seconds,
        "setup_s": setup.seconds,
        "epoch_s": epoch.seconds,
        "cells_per_s": adata.n_obs / epoch.seconds,
        "peak_rss_mib": mib(peak.peak),
        "elbo_train": float(model.history["elbo_train"]["elbo_train"].iloc[-1]),
    }


def _table(results: list[dict]) -> str:
    rows = []
    by = {(r["n_cells"], r["mode"]): r for r in results}
    for r in results:
        ratio = ""
        if r["mode"] != "memory" and (r["n_cells"], "memory") in by:
            ratio = f"{r['cells_per_s'] / by[r['n_cells'], 'memory']['cells_per_s']:.2f}"
        rows.append(
            [
                f"{r['n_cells']:,}",
                r["mode"],
                f"{r['load_s'] + r['setup_s']:.1f}",
                f"{r['epoch_s']:.1f}",
                f"{r['cells_per_s']:,.0f}",
                ratio,
                f"{r['peak_rss_mib']:,.0f}",
            ]
        )
    return markdown_table(
        [
            "cells",
            "mode",
            "read + setup (s)",
            "s / epoch",
            "cells / s",
            "on disk / memory cells/s",
            "peak RSS (MiB)",
        ],
        rows,
    )


def _verdict(results: list[dict]) -> list[str]:
    lines = []
    memory = {r["n_cells"]: r for r in results if r["mode"] == "memory"}
    for mode in MODES[1:]:
        on_disk = sorted((r for r in results if r["mode"] == mode), key=lambda r: r["n_cells"])
        big = [r for r in on_disk if r["n_cells"] >= 100_000]
        if len(big) >= 2:
            growth = big[-1]["peak_rss_mib"] / big[0]["peak_rss_mib"]
            ok = "yes" if growth <= TARGET_MEMORY_GROWTH else "no"
            lines.append(
                f"{mode} peak RSS {big[0]['n_cells']:,} -> {big[-1]['n_cells']:,} cells: "
                f"x{growth:.2f} (target <= {TARGET_MEMORY_GROWTH}: {ok})"
            )
        for r in on_disk:
            if r["n_cells"] in memory:
                ratio = r["cells_per_s"] / memory[r["n_cells"]]["cells_per_s"]
                ok = "yes" if ratio >= TARGET_THROUGHPUT_RATIO else "no"
                lines.append(
                    f"{mode} / memory throughput at {r['n_cells']:,} cells: {ratio:.2f} "
                    f"(target >= {TARGET_THROUGHPUT_RATIO}: {ok})"
                )
    return lines


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--data-dir", default=None, help="where to write the .h5ad files [a tmp dir]")
    p.add_argument("--keep", action="store_true", help="keep the .h5ad files")
    p.add_argument("--out", default=None, help="write all numbers as JSON here")
    p.add_argument("--worker", nargs=2, metavar=("PATH", "MODE"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(worker(*args.worker)))
        return 0
    announce("scale.py")  # its header: the versions it ran on
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="deltavae_scale_"))
    data_dir.mkdir(parents=True, exist_ok=True)
    results = []
    try:
        for n in args.sizes:
            path = data_dir / f"counts_{n}.h5ad"
            zarr_path = (
                path.with_suffix(".zarr") if any(m.startswith("zarr") for m in args.modes) else None
            )
            start = time.perf_counter()
            write_h5ad(path, n, zarr_path=zarr_path)
            print(
                f"wrote {path} ({path.stat().st_size / 2**20:,.0f} MiB) in "
                f"{time.perf_counter() - start:.0f} s",
                file=sys.stderr,
            )
            for mode in args.modes:
                result = run_json_subprocess([__file__, "--worker", str(path), mode])
                print(json.dumps(result), file=sys.stderr)
                results.append(result)
            if not args.keep:
                path.unlink()
                if zarr_path is not None:
                    shutil.rmtree(zarr_path)
    finally:
        if not args.keep and args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    print(f"ZINBVAE, one epoch, {N_GENES} genes, batch {BATCH_SIZE}, 1 CPU thread\n")
    print(_table(results))
    print()
    print("\n".join(_verdict(results)))
    if args.out:
        Path(args.out).write_text(json.dumps(with_versions(results), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
