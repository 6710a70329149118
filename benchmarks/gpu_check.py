"""GPU check: train every deltavae model on a CUDA device and call everything that runs it.

One script, for a machine with one NVIDIA GPU. It records each step as ok, FAIL (the
exception's type and first line; the script goes on) or skip (an earlier step it needs failed)
and ends with a table and the line ``gpu_check: N passed, M failed``. Exit status 1 when any
step failed.

Phases (real data shipped with the package, nothing downloaded):

1. ZINBVAE on PBMC 3k (2,000 ``seurat_v3`` genes on the counts): training on the device, then
   every public method that runs the module: latents (of the training cells, of a new AnnData,
   sampled), normalized expression, differential expression (B against CD14+ monocytes), ELBO,
   reconstruction error, marginal likelihood, likelihood parameters, posterior predictive
   samples, feature correlations, library sizes, the aggregated posterior, Pyro posterior
   samples and ``write_to_adata``. scvi-tools' own mixin methods (ELBO onwards in that list)
   run last, after phase 6: one that fails can leave scvi-tools' registry of the model's
   AnnData broken, and that must not hide the other checks (it is restored and reported).
2. Kang IFN-beta (``condition`` ctrl / stim): a semi-supervised CGMDVAE (half the cells keep
   their ``cell_type``) with z, w and z moved to ctrl, hard and soft clusters, labels,
   ``write_to_adata``, generated cells (one cluster and condition; drawn ones), ``translate``
   and ``predict_perturbation`` by translate, latent shift and nearest response (expression and
   latent similarity), plus the scvi-tools methods above. A ZINBVAE (condition as batch, donor
   as covariate) trained on donor 101 gives ``predict_perturbation`` by latent shift and
   nearest response and differential abundance.
3. Query mapping: donor 107 mapped onto donor-101 references with ``load_query_data`` (a new
   ``donor`` category), a few epochs of query training, then ``predict_labels`` (CGMDVAE) and
   a 15-NN label transfer on the latent (ZINBVAE), scored against the held-out cell types.
4. Spatial: pseudo-spots summed from half of PBMC 3k with known proportions, the other half
   as reference: ``NMFDeconv.from_reference`` (proportions, abundance, signatures, technology
   factor, ``write_to_adata``) and ``Archetypes`` (``n_archetypes="auto"``; weights of the
   training and of new spots, profiles, anchors, markers, signature matching, names,
   ``write_to_adata``).
5. Devices: each trained model is copied to the CPU with ``to_device("cpu")``; its latent (for
   CGMDVAE also the cluster probabilities, for NMFDeconv the proportions, for Archetypes the
   weights) is recomputed there and compared with the device's result: the maximum absolute
   difference is printed and a relative difference (to the largest value) above 1e-3 fails.
   The model then goes back to the device.
6. Save and load: each of the four models is saved, loaded with ``Model.load(path, adata,
   accelerator="gpu")``, checked to give the same latent as before saving, and trained for a
   few more epochs: the loss must stay finite and the parameters must change.
7. Speed: ZINBVAE and ``scvi.model.SCVI`` with the same architecture (10 latent, 1 hidden layer
   of 128, ZINB, one dispersion per gene) on 100,000 synthetic cells x 2,000 genes (NB counts,
   10 clusters, fixed seed) at batch sizes 128 and 1024, alternating which model runs first:
   cells/s (all cells trained on, no validation; the first epoch is dropped as warm-up when
   there are more), GPU utilisation sampled during training and peak GPU memory
   (``torch.cuda.max_memory_allocated``).

Time on one H200 with 16 CPU cores: estimated, not yet measured, about 5 minutes. A ZINBVAE
step of 128 cells is taken as ~6 ms on the GPU (Pyro's Python overhead included) and a CGMDVAE
step as ~20 ms; the CPU-side parts were timed here at full size with 1-2 epochs (2 CPU cores,
one torch thread: 86 s without the speed phase). Imports and data ~20 s; ZINBVAE on PBMC,
100 epochs of 21 steps ~15 s, its methods ~5 s; CGMDVAE on Kang, 100 epochs of 12 steps ~25 s,
UMAP's first compilation for the mixture start ~20 s, its methods ~15 s; the donor-101
references (100 epochs) and queries (30) ~25 s; NMFDeconv (500 full-batch steps) ~5 s,
Archetypes (choosing among 2-8 archetypes ~15 s, 200 epochs of 8 steps ~10 s) ~30 s; CPU
copies ~5 s; save / load / 5 more epochs ~20 s (reloading Archetypes refits its start, ~5 s);
scvi-tools methods ~20 s (feature correlations ~10 s); speed ~100 s (100,000 cells are 782
steps of 128 or 98 of 1024; 3 epochs at 128 and 4 at 1024 per model at ~3-10 ms per step of
128). Nothing is left to the estimate alone: every training call is cut by Lightning's
``max_time`` at 60 s (40 s per speed run) or at what is left of ``--budget-minutes`` (7.5),
whichever comes first, and a phase that would start after the budget is reported as failed;
the detail column says when a box cut training short.

Run from the repository root::

    python benchmarks/gpu_check.py --out gpu_check.json       # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --small       # smoke check on a CPU, minutes
"""

from __future__ import annotations

import os

# OpenMP threads that spin while another process holds a core make torch many times slower
# on a busy machine (see benchmarks/README.md). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import markdown_table, quiet  # noqa: E402

# Relative difference (to the largest absolute value) above which two devices disagree.
DEVICE_TOLERANCE = 1e-3
# Relative difference above which a reloaded model's result differs from the saved one's.
LOAD_TOLERANCE = 1e-5
# Marker sets for Archetypes.match_signatures on the PBMC pseudo-spots.
PBMC_SIGNATURES = {
    "B": ["MS4A1", "CD79A", "CD79B"],
    "T": ["CD3E", "CD3D", "IL7R"],
    "NK": ["GNLY", "NKG7"],
    "CD14+ Mono": ["CD14", "LYZ", "S100A9"],
    "FCGR3A+ Mono": ["FCGR3A", "MS4A7"],
    "Platelet": ["PPBP", "PF4"],
}

# Epochs, data sizes and time boxes (seconds per training call). "small" is a CPU smoke run.
SETTINGS = {
    "full": {
        "pbmc_cells": None,
        "kang_cells": None,
        "zinbvae_epochs": 100,
        "cgmdvae_epochs": 100,
        "reference_epochs": 100,
        "query_epochs": 30,
        "nmf_epochs": 500,
        "archetype_epochs": 200,
        "max_archetypes": 8,
        "resume_epochs": 5,
        "n_spots": 1000,
        "mixture_init": "umap",
        "speed_cells": 100_000,
        "speed_epochs": {128: 3, 1024: 4},
        "time_box": 60,
        "speed_time_box": 40,
    },
    "small": {
        "pbmc_cells": 500,
        "kang_cells": 600,
        "zinbvae_epochs": 2,
        "cgmdvae_epochs": 4,
        "reference_epochs": 3,
        "query_epochs": 2,
        "nmf_epochs": 20,
        "archetype_epochs": 3,
        "max_archetypes": 4,
        "resume_epochs": 2,
        "n_spots": 150,
        "mixture_init": "kmeans",
        "speed_cells": 3_000,
        "speed_epochs": {128: 2, 1024: 2},
        "time_box": 120,
        "speed_time_box": 60,
    },
}
SPEED_GENES = 2000
SPEED_BATCH_SIZES = (128, 1024)


# --------------------------------------------------------------------------- recording
class _Failed:
    """Result of a step that failed: later steps that need it are skipped."""

    def __repr__(self) -> str:
        return "FAILED"


FAILED = _Failed()


class CheckFailed(AssertionError):
    """A step ran but its result is wrong (non-finite, devices disagree, no training...)."""


@dataclass
class Row:
    model: str
    check: str
    status: str  # "ok", "FAIL" or "skip"
    seconds: float
    detail: str
    traceback: str = ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0][:160] if text else ''}".rstrip(": ")
    return " ".join([line, *(f"[{note}]" for note in getattr(exc, "__notes__", []))])


def _shape(value) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} {tuple(shape)}"
    if isinstance(value, dict | list | tuple):
        return f"{type(value).__name__} of {len(value)}"
    return type(value).__name__


def _assert_finite(value, where: str = "result") -> None:
    """Raise CheckFailed when a numeric array, tensor or AnnData holds NaN or infinity."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    import torch
    from anndata import AnnData

    if isinstance(value, AnnData):
        _assert_finite(value.X, f"{where}.X")
        for key, layer in value.layers.items():
            _assert_finite(layer, f"{where}.layers[{key!r}]")
        return
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, pd.DataFrame | pd.Series):
        value = value.select_dtypes("number").to_numpy() if value.ndim == 2 else value
        value = np.asarray(value)
    if sp.issparse(value):
        value = value.data
    if isinstance(value, np.ndarray) and np.issubdtype(value.dtype, np.number):
        bad = int((~np.isfinite(value)).sum())
        if bad:
            raise CheckFailed(f"{bad} non-finite values in {where} {value.shape}")


class Report:
    """Runs steps, records ok / FAIL / skip with seconds and a detail, and prints progress."""

    def __init__(self, device: str):
        self.rows: list[Row] = []
        self.device = device

    def _sync(self) -> None:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()

    def run(self, model: str, check: str, fn, *, needs=(), detail=None, finite=True):
        """Call ``fn()``; return its value, or FAILED when it raised or when ``needs`` failed.

        ``detail(value)`` gives the detail column (default: the result's type and shape);
        ``finite`` checks numeric results for NaN and infinity.
        """
        if any(v is FAILED for v in needs):
            return self._add(Row(model, check, "skip", 0.0, "needs an earlier step that failed"))
        start = time.perf_counter()
        try:
            value = fn()
            self._sync()
            if finite:
                _assert_finite(value)
            info = detail(value) if detail is not None else _shape(value)
            row = Row(model, check, "ok", time.perf_counter() - start, str(info))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, then we go on
            value = FAILED
            row = Row(
                model,
                check,
                "FAIL",
                time.perf_counter() - start,
                _first_line(exc),
                traceback.format_exc(limit=-6),
            )
        self._add(row)
        return value

    def _add(self, row: Row):
        self.rows.append(row)
        print(
            f"[{row.status:4s}] {row.model:18s} {row.check:46s} {row.seconds:7.2f} s  {row.detail}",
            file=sys.stderr,
            flush=True,
        )
        return FAILED if row.status != "ok" else None

    def counts(self) -> tuple[int, int, int]:
        status = [r.status for r in self.rows]
        return status.count("ok"), status.count("FAIL"), status.count("skip")

    def table(self) -> str:
        rows = [
            [r.model, r.check, r.status, f"{r.seconds:.2f}", r.detail.replace("|", "/")]
            for r in self.rows
        ]
        return markdown_table(["model", "method", "result", "seconds", "detail"], rows)


# --------------------------------------------------------------------------- helpers
class Context:
    """What every phase needs: the device, the settings and the report."""

    def __init__(self, args: argparse.Namespace, report: Report):
        self.device = args.device
        self.accelerator = "gpu" if args.device == "cuda" else "cpu"
        self.torch_device = "cuda:0" if args.device == "cuda" else "cpu"
        self.cfg = SETTINGS["small" if args.small else "full"]
        self.seed = args.seed
        self.report = report
        self.tmp = Path(tempfile.mkdtemp(prefix="deltavae_gpu_check_"))
        self.deadline = time.perf_counter() + 60 * args.budget_minutes

    def remaining(self) -> float:
        """Seconds left of ``--budget-minutes``."""
        return self.deadline - time.perf_counter()

    def box(self, key: str = "time_box") -> dict:
        """Lightning's ``max_time`` for one training call: its box, or what the budget has left."""
        return {"seconds": max(1, int(min(self.cfg[key], self.remaining())))}

    def fit(self, epochs: int, **kwargs) -> dict:
        """Keyword arguments for ``train``: the device, no progress bar, a time box."""
        return {
            "max_epochs": epochs,
            "accelerator": self.accelerator,
            "enable_progress_bar": False,
            "max_time": self.box(),
            **kwargs,
        }


def _epochs_detail(model, asked: int, before: int = 0) -> str:
    """Epochs trained by the last ``train`` (the history had ``before``) and the last loss."""
    trained = len(model.history["elbo_train"]) if "elbo_train" in model.history else 0
    trained -= before
    final = float(model.history["elbo_train"].iloc[-1, 0]) if trained else float("nan")
    cut = "" if trained >= asked else f" (time box: {asked} asked)"
    return f"{trained} epochs{cut}, final elbo_train {final:.4g}"


def _train(ctx: Context, model, epochs: int, **kwargs):
    """Train, then require a finite loss history; the detail gives the epochs and the loss."""
    import numpy as np

    model.train(**ctx.fit(epochs, **kwargs))
    losses = np.asarray(model.history["elbo_train"], dtype=float).ravel()
    if not len(losses) or not np.isfinite(losses).all():
        raise CheckFailed(f"elbo_train not finite: {losses[-5:]}")
    return model


def _module_device(model) -> str:
    return str(next(model.module.parameters()).device)


def _on_device(ctx: Context, model) -> str:
    found = _module_device(model)
    if not found.startswith(ctx.device):
        raise CheckFailed(f"module on {found}, expected {ctx.device}")
    return found


def _accuracy(pred, truth) -> float:
    import numpy as np

    return float((np.asarray(pred).astype(str) == np.asarray(truth).astype(str)).mean())


def _numbers(value):
    import numpy as np

    if hasattr(value, "to_numpy"):
        value = value.to_numpy()
    return np.asarray(value, dtype=np.float64)


def _relative_difference(a, b) -> tuple[float, float]:
    import numpy as np

    a, b = _numbers(a), _numbers(b)
    if a.shape != b.shape:
        raise CheckFailed(f"shapes differ: {a.shape} and {b.shape}")
    if not a.size:
        return 0.0, 0.0
    diff = float(np.abs(a - b).max())
    return diff, diff / max(float(np.abs(a).max()), 1e-12)


def _same(a, b, tolerance: float, what: str) -> str:
    diff, rel = _relative_difference(a, b)
    text = f"{what}: max |diff| {diff:.2e} (relative {rel:.1e})"
    if not rel <= tolerance:
        raise CheckFailed(f"{text} > {tolerance:g}")
    return text


def _float_state(model) -> dict:
    return {
        k: v.detach().to("cpu", copy=True)
        for k, v in model.module.state_dict().items()
        if v.is_floating_point()
    }


# --------------------------------------------------------------------------- data
def prepare_pbmc(n_cells: int | None, seed: int):
    """PBMC 3k, 2,000 seurat_v3 genes on the counts (as ``deltavae demo`` prepares it)."""
    import numpy as np
    import scanpy as sc

    import deltavae as dv

    adata = dv.datasets.pbmc3k()
    if n_cells is not None:
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    sc.pp.filter_genes(adata, min_cells=3)
    n_top = min(2000, adata.n_vars)
    try:
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top)
    except ValueError:  # the loess can be singular on a few hundred cells; a wider span fits
        sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=n_top, span=1.0)
    adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    return adata


def prepare_kang(n_cells: int | None, seed: int):
    """Kang IFN-beta with donor as strings (so a subset carries only its own donors)."""
    import numpy as np

    import deltavae as dv

    adata = dv.datasets.kang_ifnb()
    if n_cells is not None:
        rng = np.random.default_rng(seed)
        adata = adata[np.sort(rng.choice(adata.n_obs, n_cells, replace=False))].copy()
    for key in ("donor", "cell_type", "condition", "sample"):
        adata.obs[key] = adata.obs[key].astype(str).astype("category")
    return adata


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


# --------------------------------------------------------------------------- phases
def _fields(registry: dict) -> dict:
    return {key: bool(value) for key, value in registry["field_registries"].items()}


def _guarded(model, fn):
    """Call ``fn``; when it fails and leaves the model's AnnData registry changed, restore it.

    scvi-tools' ``get_state_registry`` adds an empty entry for a field the model never
    registered (e.g. a batch key); every later call on that AnnData then fails with
    ``KeyError: 'data_registry'``. The restore keeps one failure from hiding the next checks;
    the failure's detail says it happened.
    """
    manager = model.adata_manager
    saved = copy.deepcopy(manager._registry)
    try:
        return fn()
    except Exception as exc:
        if _fields(manager._registry) != _fields(saved):
            manager._registry = saved
            exc.add_note("it also broke the model's registry for later calls; restored here")
        raise


def scvi_mixin_checks(ctx: Context, name: str, model, groupby: str, group1: str, group2: str):
    """scvi-tools' VAEMixin / RNASeqMixin / PyroSampleMixin methods, which run the module.

    Methods that read a batch mapping come last, and every call is guarded (``_guarded``).
    """

    def run(model_name, check, fn, **kwargs):
        return ctx.report.run(model_name, check, lambda: _guarded(model, fn), **kwargs)

    run(name, "get_elbo", lambda: float(model.get_elbo()), detail=lambda v: f"{v:.4g}")
    run(
        name,
        "get_reconstruction_error",
        lambda: model.get_reconstruction_error(),
        detail=lambda d: ", ".join(f"{k} {float(v):.4g}" for k, v in d.items()),
    )
    run(
        name,
        "get_marginal_ll",
        lambda: float(model.get_marginal_ll(n_mc_samples=5)),
        detail=lambda v: f"{v:.4g}",
    )
    run(
        name,
        "get_latent_library_size(give_mean=False)",
        lambda: model.get_latent_library_size(give_mean=False),
    )
    run(
        name,
        "get_aggregated_posterior",
        lambda: model.get_aggregated_posterior(),
        detail=lambda d: type(d).__name__,
    )
    run(name, "get_likelihood_parameters", lambda: model.get_likelihood_parameters())
    run(
        name,
        "posterior_predictive_sample",
        lambda: model.posterior_predictive_sample(n_samples=1),
    )
    run(
        name,
        "get_normalized_expression",
        lambda: model.get_normalized_expression(library_size=1e4, n_samples=1),
    )
    run(
        name,
        "get_feature_correlation_matrix",
        lambda: model.get_feature_correlation_matrix(n_samples=2),
    )
    run(
        name,
        f"differential_expression({groupby}: {group1} vs {group2})",
        lambda: model.differential_expression(
            groupby=groupby, group1=group1, group2=group2, batch_size=256
        ),
        detail=lambda de: f"{len(de)} genes, top {de.index[0]}",
    )


def phase_scvi_methods(ctx: Context, models: dict) -> None:
    """The scvi-tools mixin methods of ZINBVAE and CGMDVAE (last: a failure can break a model)."""
    groups = {
        "ZINBVAE/pbmc": ("cell_type", "B", "CD14+ Mono"),
        "CGMDVAE/kang": ("cell_type", "B cells", "CD14+ Monocytes"),
    }
    for name, (groupby, group1, group2) in groups.items():
        if name in models:
            scvi_mixin_checks(ctx, name, models[name]["model"], groupby, group1, group2)


def phase_zinbvae_pbmc(ctx: Context, models: dict) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "ZINBVAE/pbmc"
    adata = run(
        name, "prepare PBMC 3k (2,000 HVGs)", lambda: prepare_pbmc(ctx.cfg["pbmc_cells"], 0)
    )
    if adata is FAILED:
        return

    def build():
        dv.model.ZINBVAE.setup_anndata(adata)
        return dv.model.ZINBVAE(adata, n_latent=10)

    model = run(name, "setup_anndata + ZINBVAE()", build, finite=False)
    epochs = ctx.cfg["zinbvae_epochs"]
    trained = run(
        name,
        f"train({epochs} epochs, {ctx.accelerator})",
        lambda: _train(ctx, model, epochs),
        needs=[model],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    if trained is FAILED:
        return
    run(name, "module on device after train", lambda: _on_device(ctx, model))
    latent = run(name, "get_latent_representation", lambda: model.get_latent_representation())
    run(
        name,
        "get_latent_representation(new AnnData)",
        lambda: model.get_latent_representation(adata[:200].copy()),
    )
    run(
        name,
        "get_latent_representation(give_mean=False)",
        lambda: model.get_latent_representation(give_mean=False),
    )
    run(name, "write_to_adata", lambda: model.write_to_adata(adata), detail=str)
    models[name] = {"model": model, "adata": adata, "latent": latent, "kind": "latent"}


def phase_kang(ctx: Context, models: dict) -> None:
    run = ctx.report.run
    kang = run("Kang", "prepare Kang IFN-beta", lambda: prepare_kang(ctx.cfg["kang_cells"], 0))
    if kang is FAILED:
        return
    _cgmdvae_main(ctx, models, kang)
    _zinbvae_reference(ctx, models, kang)
    _cgmdvae_reference(ctx, models, kang)


def _cgmdvae_main(ctx: Context, models: dict, kang) -> None:
    import numpy as np

    import deltavae as dv

    run, name = ctx.report.run, "CGMDVAE/kang"
    adata = kang.copy()
    rng = np.random.default_rng(ctx.seed)
    unlabelled = rng.random(adata.n_obs) < 0.5
    labels = adata.obs["cell_type"].astype(str).to_numpy(dtype=object)
    labels[unlabelled] = "Unknown"
    adata.obs["label"] = labels

    def build():
        dv.model.CGMDVAE.setup_anndata(
            adata, condition_key="condition", labels_key="label", unlabeled_category="Unknown"
        )
        return dv.model.CGMDVAE(adata, n_clusters=6, likelihood="zinb")

    model = run(name, "setup_anndata + CGMDVAE() (semi-supervised)", build, finite=False)
    epochs = ctx.cfg["cgmdvae_epochs"]
    trained = run(
        name,
        f"train({epochs} epochs, mixture_init={ctx.cfg['mixture_init']})",
        lambda: _train(ctx, model, epochs, mixture_init=ctx.cfg["mixture_init"]),
        needs=[model],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    if trained is FAILED:
        return
    run(name, "module on device after train", lambda: _on_device(ctx, model))
    z = run(name, "get_latent_representation(z)", lambda: model.get_latent_representation())
    run(
        name,
        "get_latent_representation(w)",
        lambda: model.get_latent_representation(representation="w"),
    )
    run(
        name,
        "get_latent_representation(condition='ctrl')",
        lambda: model.get_latent_representation(condition="ctrl"),
    )
    run(name, "predict_clusters()", lambda: model.predict_clusters())
    soft = run(name, "predict_clusters(soft=True)", lambda: model.predict_clusters(soft=True))
    truth = adata.obs["cell_type"].astype(str).to_numpy()
    run(
        name,
        "predict_labels",
        lambda: model.predict_labels(),
        detail=lambda p: (
            "accuracy on unlabelled cells "
            f"{_accuracy(p['label'].to_numpy()[unlabelled], truth[unlabelled]):.3f}"
        ),
    )
    run(name, "write_to_adata", lambda: model.write_to_adata(adata), detail=str)
    run(
        name,
        "sample(cluster=0, condition='stim')",
        lambda: model.sample(n_cells=50, cluster=0, condition="stim", seed=0),
    )
    run(name, "sample() (drawn cluster, condition)", lambda: model.sample(n_cells=50, seed=1))
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    run(name, "translate(ctrl -> stim)", lambda: model.translate(ctrl, target_condition="stim"))
    for method, extra in (
        ("translate", {}),
        ("latent_shift", {}),
        ("nearest_response", {}),
        ("nearest_response", {"similarity": "latent"}),
    ):
        label = f"predict_perturbation({method}{', latent' if extra else ''})"
        run(
            name,
            label,
            lambda method=method, extra=extra: model.predict_perturbation(
                ctrl, "stim", method=method, **extra
            ),
        )
    models[name] = {
        "model": model,
        "adata": adata,
        "latent": z,
        "soft": soft,
        "kind": "latent",
    }


def _split_donors(kang):
    ref = kang[kang.obs["donor"] == "101"].copy()
    query = kang[kang.obs["donor"] == "107"].copy()
    for frame in (ref, query):
        frame.obs["donor"] = frame.obs["donor"].astype(str).astype("category")
    return ref, query


def _zinbvae_reference(ctx: Context, models: dict, kang) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "ZINBVAE/kang-ref"
    ref, query = _split_donors(kang)

    def build():
        dv.model.ZINBVAE.setup_anndata(
            ref, batch_key="condition", categorical_covariate_keys=["donor"]
        )
        return dv.model.ZINBVAE(ref, n_latent=10)

    model = run(name, "setup_anndata + ZINBVAE() (donor 101)", build, finite=False)
    epochs = ctx.cfg["reference_epochs"]
    trained = run(
        name,
        f"train({epochs} epochs)",
        lambda: _train(ctx, model, epochs),
        needs=[model],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    if trained is FAILED:
        return
    latent = run(name, "get_latent_representation", lambda: model.get_latent_representation())
    ctrl = ref[ref.obs["condition"] == "ctrl"].copy()
    run(
        name,
        "predict_perturbation(latent_shift)",
        lambda: model.predict_perturbation(
            ctrl, "stim", method="latent_shift", condition_key="condition"
        ),
    )
    run(
        name,
        "predict_perturbation(latent_shift, balanced)",
        lambda: model.predict_perturbation(
            ctrl, "stim", method="latent_shift", condition_key="condition", balance_key="cell_type"
        ),
    )
    run(
        name,
        "predict_perturbation(nearest_response)",
        lambda: model.predict_perturbation(
            ctrl, "stim", "nearest_response", condition_key="condition", balance_key="cell_type"
        ),
    )
    run(
        name,
        "differential_abundance(sample_key='sample')",
        lambda: model.differential_abundance(sample_key="sample"),
        detail=lambda v: type(v).__name__,
    )
    models[name] = {"model": model, "adata": ref, "latent": latent, "kind": "latent"}

    qname = "ZINBVAE/query"
    truth = query.obs["cell_type"].astype(str).to_numpy()
    q = run(
        qname,
        "load_query_data(donor 107)",
        lambda: dv.model.ZINBVAE.load_query_data(query.copy(), model, accelerator=ctx.accelerator),
        finite=False,
        detail=lambda q: f"new {q.query_mapping_['new_categories']}",
    )
    epochs = ctx.cfg["query_epochs"]
    run(
        qname,
        f"train query ({epochs} epochs)",
        lambda: _train(ctx, q, epochs),
        needs=[q],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    run(qname, "query module on device", lambda: _on_device(ctx, q), needs=[q])
    q_latent = run(
        qname, "get_latent_representation (query)", q.get_latent_representation, needs=[q]
    )

    def knn_transfer():
        from sklearn.neighbors import KNeighborsClassifier

        knn = KNeighborsClassifier(n_neighbors=15).fit(latent, ref.obs["cell_type"].astype(str))
        return _accuracy(knn.predict(q_latent), truth)

    run(
        qname,
        "15-NN label transfer (query latent)",
        knn_transfer,
        needs=[q_latent, latent],
        detail=lambda acc: f"accuracy {acc:.3f}",
    )


def _cgmdvae_reference(ctx: Context, models: dict, kang) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "CGMDVAE/kang-ref"
    ref, query = _split_donors(kang)
    truth = query.obs.pop("cell_type").astype(str).to_numpy()

    def build():
        dv.model.CGMDVAE.setup_anndata(
            ref, condition_key=["condition", "donor"], labels_key="cell_type"
        )
        return dv.model.CGMDVAE(ref, likelihood="zinb")

    model = run(name, "setup_anndata + CGMDVAE() (donor 101)", build, finite=False)
    epochs = ctx.cfg["reference_epochs"]
    trained = run(
        name,
        f"train({epochs} epochs, supervised)",
        lambda: _train(ctx, model, epochs, mixture_init=ctx.cfg["mixture_init"]),
        needs=[model],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    if trained is FAILED:
        return
    qname = "CGMDVAE/query"
    q = run(
        qname,
        "load_query_data(donor 107, no labels)",
        lambda: dv.model.CGMDVAE.load_query_data(query, model, accelerator=ctx.accelerator),
        finite=False,
        detail=lambda q: f"new {q.query_mapping_['new_categories']}",
    )
    epochs = ctx.cfg["query_epochs"]
    run(
        qname,
        f"train query ({epochs} epochs)",
        lambda: _train(ctx, q, epochs),
        needs=[q],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    run(qname, "query module on device", lambda: _on_device(ctx, q), needs=[q])
    run(
        qname,
        "predict_labels (label transfer)",
        lambda: q.predict_labels(),
        needs=[q],
        detail=lambda p: f"accuracy {_accuracy(p['label'], truth):.3f}",
    )
    run(qname, "write_to_adata (query)", lambda: q.write_to_adata(), needs=[q], detail=str)


def phase_spatial(ctx: Context, models: dict) -> None:
    import deltavae as dv

    run = ctx.report.run
    cells = run("spots", "prepare PBMC 3k for spots", lambda: prepare_pbmc(None, 0))
    made = run(
        "spots",
        f"pseudo_spots({ctx.cfg['n_spots']} spots)",
        lambda: dv.datasets.pseudo_spots(
            cells, "cell_type", n_spots=ctx.cfg["n_spots"], seed=ctx.seed
        ),
        needs=[cells],
        detail=lambda sr: f"{sr[0].n_obs} spots, {sr[1].n_obs} reference cells",
        finite=False,
    )
    if made is FAILED:
        return
    spots, reference = made
    _nmfdeconv(ctx, models, spots, reference)
    _archetypes(ctx, models, spots)


def _nmfdeconv(ctx: Context, models: dict, spots, reference) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "NMFDeconv"
    target = spots.copy()
    model = run(
        name,
        "from_reference",
        lambda: dv.model.NMFDeconv.from_reference(target, reference, labels_key="cell_type"),
        finite=False,
        detail=lambda m: f"{m.adata.n_vars} marker genes, {len(m.cell_types_)} types",
    )
    epochs = ctx.cfg["nmf_epochs"]
    trained = run(
        name,
        f"train({epochs} epochs)",
        lambda: _train(ctx, model, epochs),
        needs=[model],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    if trained is FAILED:
        return
    run(name, "module on device after train", lambda: _on_device(ctx, model))
    truth = spots.obsm["proportions_true"]

    def rmse(p):
        import numpy as np

        diff = p.to_numpy() - truth[p.columns].to_numpy()
        return f"RMSE vs true proportions {float(np.sqrt((diff**2).mean())):.3f}"

    props = run(name, "get_proportions", model.get_proportions, detail=rmse)
    run(name, "get_abundance", model.get_abundance)
    run(name, "get_signatures", model.get_signatures)
    run(name, "get_technology_factor", model.get_technology_factor)
    run(name, "write_to_adata(spots)", lambda: model.write_to_adata(target), detail=str)
    models[name] = {"model": model, "adata": model.adata, "latent": props, "kind": "proportions"}


def _archetypes(ctx: Context, models: dict, spots) -> None:
    import deltavae as dv

    run, name = ctx.report.run, "Archetypes"
    adata = spots.copy()

    def build():
        dv.model.Archetypes.setup_anndata(adata)
        return dv.model.Archetypes(
            adata, n_archetypes="auto", max_archetypes=ctx.cfg["max_archetypes"]
        )

    model = run(
        name,
        "setup_anndata + Archetypes(auto)",
        build,
        finite=False,
        detail=lambda m: f"{m.n_archetypes_raw_} archetypes chosen",
    )
    epochs = ctx.cfg["archetype_epochs"]
    trained = run(
        name,
        f"train({epochs} epochs)",
        lambda: _train(ctx, model, epochs),
        needs=[model],
        detail=lambda m: _epochs_detail(m, epochs),
        finite=False,
    )
    if trained is FAILED:
        return
    run(name, "module on device after train", lambda: _on_device(ctx, model))
    weights = run(name, "get_archetype_weights", lambda: model.get_archetype_weights())
    run(
        name,
        "get_archetype_weights(new spots)",
        lambda: model.get_archetype_weights(spots[:50].copy()),
    )
    run(name, "get_archetype_profiles", model.get_archetype_profiles)
    run(
        name,
        "get_anchors",
        lambda: model.get_anchors(10),
        detail=lambda s: f"{int(s.notna().sum())} anchors",
        finite=False,
    )
    run(name, "get_markers", lambda: model.get_markers(20), finite=False, detail=lambda d: "")
    run(
        name,
        "match_signatures",
        lambda: model.match_signatures(PBMC_SIGNATURES),
        finite=False,
        detail=lambda t: f"matched {t['signature'].notna().sum()} of {len(t)}",
    )
    run(name, "archetype_names", model.archetype_names, detail=str)
    run(name, "write_to_adata", lambda: model.write_to_adata(adata), detail=str)
    models[name] = {"model": model, "adata": adata, "latent": weights, "kind": "weights"}


def _result(entry: dict, model=None):
    """The result compared across devices and across save/load, for each kind of model."""
    model = model if model is not None else entry["model"]
    if entry["kind"] == "proportions":
        return model.get_proportions()
    if entry["kind"] == "weights":
        return model.get_archetype_weights()
    return model.get_latent_representation()


def phase_devices(ctx: Context, models: dict) -> None:
    """Recompute each model's main result on the CPU; compare with the device's."""
    run = ctx.report.run
    for name, entry in models.items():
        model, on_device = entry["model"], entry["latent"]
        what = {"latent": "latent", "proportions": "proportions", "weights": "weights"}[
            entry["kind"]
        ]
        moved = run(name, "to_device('cpu')", lambda m=model: m.to_device("cpu"), finite=False)
        if moved is FAILED:
            continue
        run(
            name,
            f"{what} on cpu == on {ctx.device}",
            lambda e=entry, d=on_device, w=what: _same(d, _result(e), DEVICE_TOLERANCE, w),
            needs=[on_device],
            detail=str,
            finite=False,
        )
        if entry.get("soft") is not None:
            run(
                name,
                f"cluster probabilities on cpu == on {ctx.device}",
                lambda m=model, s=entry["soft"]: _cluster_agreement(m, s),
                needs=[entry["soft"]],
                detail=str,
                finite=False,
            )
        run(
            name,
            f"to_device('{ctx.torch_device}') (back)",
            lambda m=model: (m.to_device(ctx.torch_device), _on_device(ctx, m))[1],
            finite=False,
        )


def _cluster_agreement(model, soft_on_device) -> str:
    soft = model.predict_clusters(soft=True)
    agree = float((soft.argmax(1) == soft_on_device.argmax(1)).mean())
    return f"{_same(soft_on_device, soft, DEVICE_TOLERANCE, 'probabilities')}; hard {agree:.4f}"


def phase_save_load(ctx: Context, models: dict) -> None:
    run = ctx.report.run
    keep = ("ZINBVAE/pbmc", "CGMDVAE/kang", "NMFDeconv", "Archetypes")
    for name in [n for n in keep if n in models]:
        entry = models[name]
        model, adata = entry["model"], entry["adata"]
        path = ctx.tmp / name.replace("/", "_")
        saved = run(
            name, "save", lambda m=model, p=path: m.save(str(p), overwrite=True), finite=False
        )
        cls = type(model)
        loaded = run(
            name,
            f"load(path, adata, accelerator='{ctx.accelerator}')",
            lambda c=cls, p=path, a=adata: c.load(str(p), adata=a, accelerator=ctx.accelerator),
            needs=[saved],
            finite=False,
            detail=lambda m: f"module on {_module_device(m)}",
        )
        if loaded is FAILED:
            continue
        run(name, "loaded module on device", lambda m=loaded: _on_device(ctx, m))
        run(
            name,
            "result after load == before save",
            lambda e=entry, m=loaded: _same(_result(e), _result(e, m), LOAD_TOLERANCE, "result"),
            detail=str,
            finite=False,
        )
        before = _float_state(loaded)
        done = len(loaded.history["elbo_train"]) if "elbo_train" in loaded.history else 0
        epochs = ctx.cfg["resume_epochs"]
        resumed = run(
            name,
            f"train after load ({epochs} epochs): loss finite",
            lambda m=loaded, e=epochs: _train(ctx, m, e),
            detail=lambda m, e=epochs, d=done: _epochs_detail(m, e, d),
            finite=False,
        )
        run(
            name,
            "train after load: parameters changed",
            lambda m=loaded, b=before: _parameters_changed(b, _float_state(m)),
            needs=[resumed],
            detail=str,
            finite=False,
        )


def _parameters_changed(before: dict, after: dict) -> str:
    import torch

    changed = [k for k in before if not torch.equal(before[k], after[k])]
    if not changed:
        raise CheckFailed(f"none of {len(before)} parameter tensors changed")
    return f"{len(changed)} of {len(before)} tensors changed"


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
    import anndata as ad
    import scvi
    import torch

    adata = ad.AnnData(X=X)  # its own AnnData per run: setups do not share obs columns
    scvi.settings.seed = ctx.seed
    model = _speed_model(kind, adata)
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
    results["speed"] = {"n_cells": adata.n_obs, "n_genes": adata.n_vars, "runs": runs}


def speed_table(speed: dict) -> str:
    rows = []
    by = {(r["model"], r["batch_size"]): r for r in speed["runs"]}
    for batch_size in SPEED_BATCH_SIZES:
        for kind in ("ZINBVAE", "SCVI"):
            r = by.get((kind, batch_size))
            if r is None:
                rows.append([kind, batch_size, "failed", "", "", "", ""])
                continue
            ours, theirs = by.get(("ZINBVAE", batch_size)), by.get(("SCVI", batch_size))
            ratio = (
                f"{ours['cells_per_s'] / theirs['cells_per_s']:.2f}x"
                if kind == "ZINBVAE" and ours and theirs
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


# --------------------------------------------------------------------------- main
def environment(device: str) -> dict:
    from importlib.metadata import version

    import torch

    env = {"python": platform.python_version(), "cpus": os.cpu_count()}
    for pkg in ("deltavae", "scvi-tools", "torch", "pyro-ppl", "lightning", "anndata", "scanpy"):
        try:
            env[pkg] = version(pkg)
        except Exception:  # noqa: BLE001
            env[pkg] = "?"
    env["torch_threads"] = torch.get_num_threads()
    env["cuda_available"] = torch.cuda.is_available()
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["device_name"] = torch.cuda.get_device_name(0)
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default cuda")
    p.add_argument(
        "--small",
        action="store_true",
        help="tiny epoch counts and subsampled data: a smoke run of a few minutes on a CPU",
    )
    p.add_argument("--skip-speed", action="store_true", help="leave out the ZINBVAE/SCVI speed run")
    p.add_argument("--out", type=Path, default=None, help="also write all results as JSON")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 with --device cpu, torch's default with cuda)",
    )
    p.add_argument("--seed", type=int, default=0, help="scvi.settings.seed and data seeds")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=7.5,
        help="time budget: training calls are cut to what is left of it, and phases that\n"
        "would start after it are not run (reported as failed); default 7.5",
    )
    return p.parse_args(argv)


PHASES = (
    ("ZINBVAE on PBMC", phase_zinbvae_pbmc),
    ("Kang: CGMDVAE, ZINBVAE reference, queries", phase_kang),
    ("spatial: NMFDeconv, Archetypes", phase_spatial),
    ("CPU copies against the device", phase_devices),
    ("save, load, train on", phase_save_load),
    ("scvi-tools mixin methods", phase_scvi_methods),
)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    quiet()
    import scvi

    scvi.settings.seed = args.seed
    started = time.perf_counter()
    env = environment(args.device)
    header = (
        f"gpu_check on {env['device_name']} ({args.device}"
        + (f", {env['device_memory_gib']} GiB, CUDA {env['cuda']}" if args.device == "cuda" else "")
        + f"); deltavae {env['deltavae']}, scvi-tools {env['scvi-tools']}, torch {env['torch']}, "
        f"pyro {env['pyro-ppl']}, lightning {env['lightning']}; {env['cpus']} CPUs, "
        f"{env['torch_threads']} torch threads; {'small' if args.small else 'full'} settings"
    )
    print(header, flush=True)
    report = Report(args.device)
    ctx = Context(args, report)
    models: dict = {}
    results: dict = {"settings": ctx.cfg | {"small": args.small, "device": args.device}}
    phases = [(label, lambda fn=fn: fn(ctx, models)) for label, fn in PHASES]
    if not args.skip_speed:
        phases.append(("speed: ZINBVAE vs SCVI", lambda: phase_speed(ctx, results)))
    phase_seconds = {}
    try:
        for label, fn in phases:
            print(f"== {label}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            if ctx.remaining() <= 0:
                report._add(
                    Row("phase", label, "FAIL", 0.0, f"not run: {args.budget_minutes} min spent")
                )
                continue
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a crash of the harness: one row, go on
                report._add(
                    Row(
                        "phase",
                        label,
                        "FAIL",
                        time.perf_counter() - t0,
                        _first_line(exc),
                        traceback.format_exc(limit=-6),
                    )
                )
            phase_seconds[label] = time.perf_counter() - t0
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    passed, failed, skipped = report.counts()
    lines = ["", report.table(), ""]
    if "speed" in results:
        speed = results["speed"]
        lines += [
            f"Speed, {speed['n_cells']:,} synthetic cells x {speed['n_genes']} genes "
            "(all cells train, no validation; first epoch dropped when there are more):",
            "",
            speed_table(speed),
            "",
        ]
    lines.append("phases: " + "; ".join(f"{label} {s:.0f} s" for label, s in phase_seconds.items()))
    lines.append(f"total {wall:.0f} s")
    lines.append(
        f"gpu_check: {passed} passed, {failed} failed"
        + (f" ({skipped} skipped after a failure)" if skipped else "")
    )
    print("\n".join(lines), flush=True)
    if args.out is not None:
        results.update(
            {
                "environment": env,
                "rows": [asdict(r) for r in report.rows],
                "phase_seconds": phase_seconds,
                "wall_seconds": wall,
                "passed": passed,
                "failed": failed,
                "skipped": skipped,
            }
        )
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
