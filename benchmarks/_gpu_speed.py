"""gpu_check.py's phase 7: ZINBVAE against scvi.model.SCVI in cells/s, GPU utilisation and
peak memory, on synthetic counts drawn on the device."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time

from _common import markdown_table
from _gpu_report import FAILED, CheckFailed, Context

SPEED_GENES = 2000

SPEED_BATCH_SIZES = (128, 1024)

#: ZINBVAE with pinned minibatches (``datasplitter_kwargs={"pin_memory": True}``), on CUDA.
PINNED = "ZINBVAE pinned"


def make_speed_counts(n_cells: int, n_genes: int, seed: int, device: str):
    """NB (gamma-Poisson) counts, 10 clusters, CSR float32; drawn in chunks on ``device``."""
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp
    import torch

    rng = np.random.default_rng(seed)
    n_clusters = 10
    log_profile = rng.normal(0.0, 1.0, size=(1, n_genes)).repeat(n_clusters, 0)
    for k in range(n_clusters):
        log_profile[k, rng.choice(n_genes, 50, replace=False)] += np.log(4.0)
    rho = np.exp(log_profile)
    rho /= rho.sum(1, keepdims=True)
    theta = torch.as_tensor(np.exp(rng.normal(np.log(5.0), 0.3, n_genes)), dtype=torch.float32)
    theta = theta.to(device)
    cluster = rng.integers(n_clusters, size=n_cells)
    library = np.exp(rng.normal(np.log(1500.0), 0.3, size=n_cells))
    torch.manual_seed(seed)
    blocks = []
    for start in range(0, n_cells, 10_000):
        rows = slice(start, min(start + 10_000, n_cells))
        mean = torch.as_tensor(
            library[rows, None] * rho[cluster[rows]], dtype=torch.float32, device=device
        )
        # Gamma(theta, rate theta / mean) has mean `mean`; Poisson of it is NB(mean, theta).
        shape = theta.expand_as(mean)
        rate = torch.distributions.Gamma(shape, shape / mean, validate_args=False).sample()
        counts = torch.poisson(rate)
        blocks.append(sp.csr_matrix(counts.cpu().numpy()))
    adata = ad.AnnData(X=sp.vstack(blocks).tocsr().astype(np.float32))
    adata.obs_names = [f"cell_{i}" for i in range(n_cells)]
    adata.var_names = [f"gene_{g}" for g in range(n_genes)]
    adata.obs["cluster"] = cluster.astype(str)
    return adata


# --------------------------------------------------------------------------- speed
class _EpochTimer:
    """A Lightning callback with the wall time and cells of every training epoch.

    The device is synchronised at each epoch's ends; cells are counted batch by batch, so an
    epoch cut short by the time box still gives its true throughput.
    """

    def __new__(cls, device: str):
        from lightning.pytorch.callbacks import Callback

        class EpochTimer(Callback):
            def __init__(self):
                self.seconds: list[float] = []
                self.cells: list[int] = []

            def _sync(self):
                if device == "cuda":
                    import torch

                    torch.cuda.synchronize()

            def on_train_epoch_start(self, trainer, pl_module):
                self._sync()
                self._start = time.perf_counter()
                self._cells = 0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                self._cells += len(next(iter(batch.values())))

            def on_train_epoch_end(self, trainer, pl_module):
                self._sync()
                self.seconds.append(time.perf_counter() - self._start)
                self.cells.append(self._cells)

        return EpochTimer()


class GPUUtilisation:
    """Sample the GPU's utilisation (%) every ``interval`` s in a thread during a block."""

    def __init__(self, enabled: bool, interval: float = 0.25):
        self.enabled, self.interval = enabled, interval
        self.samples: list[float] = []
        self.source = "n/a"

    def _read(self) -> float | None:
        import torch

        try:
            value = float(torch.cuda.utilization(0))
            self.source = "torch.cuda.utilization"
            return value
        except Exception:  # noqa: BLE001 - pynvml missing: ask nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None
        out = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-i",
                "0",
            ],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        try:
            value = float(out.stdout.strip().splitlines()[0].rstrip(" %"))
        except (ValueError, IndexError):
            return None
        self.source = "nvidia-smi"
        return value

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            value = self._read()
            if value is None:
                return
            self.samples.append(value)

    def __enter__(self):
        if self.enabled:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self._stop.set()
            self._thread.join()

    def summary(self) -> str:
        if not self.samples:
            return "n/a"
        return f"{statistics.fmean(self.samples):.0f}% mean, {max(self.samples):.0f}% max"


def _speed_model(kind: str, adata):
    import scvi

    import deltavae as dv

    if kind == "ZINBVAE":
        dv.model.ZINBVAE.setup_anndata(adata)
        return dv.model.ZINBVAE(
            adata, n_latent=10, n_hidden=128, n_layers=1, likelihood="zinb", dispersion="gene"
        )
    scvi.model.SCVI.setup_anndata(adata)
    return scvi.model.SCVI(
        adata, n_latent=10, n_hidden=128, n_layers=1, gene_likelihood="zinb", dispersion="gene"
    )


def _speed_run(ctx: Context, kind: str, X, batch_size: int, epochs: int) -> dict:
    """One timed training run; ``kind`` "ZINBVAE", "SCVI" or :data:`PINNED` (ZINBVAE with
    its minibatches in pinned memory)."""
    import anndata as ad
    import scvi
    import torch

    adata = ad.AnnData(X=X)  # its own AnnData per run: setups do not share obs columns
    scvi.settings.seed = ctx.seed
    model = _speed_model("ZINBVAE" if kind == PINNED else kind, adata)
    # Pinned: the copy to the GPU need not wait for the device (a copy from pageable memory
    # waits for the stream's queue: sync debug mode reported one at every batch's transfer).
    pinned = {"datasplitter_kwargs": {"pin_memory": True}} if kind == PINNED else {}
    timer = _EpochTimer(ctx.device)
    cuda = ctx.device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    util = GPUUtilisation(cuda)
    start = time.perf_counter()
    with util:
        model.train(
            max_epochs=epochs,
            batch_size=batch_size,
            train_size=1.0,  # throughput of training alone: no validation pass
            accelerator=ctx.accelerator,
            enable_progress_bar=False,
            callbacks=[timer],
            max_time=ctx.box("speed_time_box"),
            **pinned,
        )
    wall = time.perf_counter() - start
    if not timer.seconds:
        raise CheckFailed("no training epoch was timed")
    # The first epoch pays for warm-up; drop it when there are more.
    first = 1 if len(timer.seconds) > 1 else 0
    cells_per_s = sum(timer.cells[first:]) / sum(timer.seconds[first:])
    return {
        "model": kind,
        "batch_size": batch_size,
        "epochs": len(timer.seconds),
        "train_wall_s": wall,
        "epoch_s": timer.seconds,
        "epoch_cells": timer.cells,
        "s_per_epoch": adata.n_obs / cells_per_s,
        "cells_per_s": cells_per_s,
        "gpu_util": util.summary(),
        "gpu_util_source": util.source,
        "gpu_util_samples": util.samples,
        "peak_gpu_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
    }


def phase_speed(ctx: Context, results: dict) -> None:
    run = ctx.report.run
    n = ctx.cfg["speed_cells"]
    adata = run(
        "speed",
        f"synthetic NB counts {n:,} x {SPEED_GENES}",
        lambda: make_speed_counts(n, SPEED_GENES, ctx.seed, ctx.torch_device),
        detail=lambda a: f"{a.n_obs:,} x {a.n_vars}, {a.X.nnz:,} non-zeros",
    )
    if adata is FAILED:
        return
    # Warm-up (not measured): first-call costs (CUDA context, kernels, lazy imports).
    for kind in ("ZINBVAE", "SCVI"):
        run(
            "speed",
            f"warm-up {kind} (1 epoch, 2,048 cells)",
            lambda k=kind: _speed_run(ctx, k, adata.X[:2048], 128, 1),
            detail=lambda r: f"{r['train_wall_s']:.1f} s",
            finite=False,
        )
    runs = []
    for i, batch_size in enumerate(SPEED_BATCH_SIZES):
        order = ("ZINBVAE", "SCVI") if i % 2 == 0 else ("SCVI", "ZINBVAE")
        for kind in order:
            epochs = ctx.cfg["speed_epochs"][batch_size]
            r = run(
                "speed",
                f"{kind} batch {batch_size} ({epochs} epochs)",
                lambda k=kind, b=batch_size, e=epochs: _speed_run(ctx, k, adata.X, b, e),
                detail=lambda r: f"{r['cells_per_s']:,.0f} cells/s",
                finite=False,
            )
            if r is not FAILED:
                runs.append(r)
    if ctx.device == "cuda":  # pinning needs a GPU; whether it pays is measured, not assumed
        batch_size = SPEED_BATCH_SIZES[0]
        epochs = ctx.cfg["speed_epochs"][batch_size]
        r = run(
            "speed",
            f"{PINNED} batch {batch_size} ({epochs} epochs)",
            lambda: _speed_run(ctx, PINNED, adata.X, batch_size, epochs),
            detail=lambda r: f"{r['cells_per_s']:,.0f} cells/s",
            finite=False,
        )
        if r is not FAILED:
            runs.append(r)
    results["speed"] = {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "runs": runs}


def speed_table(speed: dict) -> str:
    rows = []
    by = {(r["model"], r["batch_size"]): r for r in speed["runs"]}
    for batch_size in SPEED_BATCH_SIZES:
        pinned = (PINNED,) if (PINNED, batch_size) in by else ()
        for kind in ("ZINBVAE", "SCVI", *pinned):
            r = by.get((kind, batch_size))
            if r is None:
                rows.append([kind, batch_size, "failed", "", "", "", ""])
                continue
            ours, theirs = by.get((kind, batch_size)), by.get(("SCVI", batch_size))
            ratio = (
                f"{ours['cells_per_s'] / theirs['cells_per_s']:.2f}x"
                if kind != "SCVI" and ours and theirs
                else ""
            )
            peak = "n/a" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:,.0f}"
            rows.append(
                [
                    kind,
                    batch_size,
                    f"{r['s_per_epoch']:.2f}",
                    f"{r['cells_per_s']:,.0f}",
                    ratio,
                    r["gpu_util"],
                    peak,
                ]
            )
    headers = [
        "model",
        "batch",
        "s / epoch",
        "cells / s",
        "ZINBVAE / SCVI",
        "GPU utilisation",
        "peak GPU MiB",
    ]
    return markdown_table(headers, rows)
