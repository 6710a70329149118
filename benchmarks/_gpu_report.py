"""gpu_check.py's bookkeeping: the settings, the report of ok / FAIL / skip steps, the context
every phase gets, and the checks the phases share (finite results, same results, device)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from _common import markdown_table

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
        "imputer_epochs": 400,
        "archetype_epochs": 200,
        "max_archetypes": 8,
        "resume_epochs": 5,
        "variant_epochs": 30,
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
        "imputer_epochs": 20,
        "archetype_epochs": 3,
        "max_archetypes": 4,
        "resume_epochs": 2,
        "variant_epochs": 2,
        "n_spots": 150,
        "mixture_init": "kmeans",
        "speed_cells": 3_000,
        "speed_epochs": {128: 2, 1024: 2},
        "time_box": 120,
        "speed_time_box": 60,
    },
}


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

    def run_each(self, model: str, checks, **shared) -> list:
        """:meth:`run` for each ``(check, fn)`` or ``(check, fn, kwargs)`` in ``checks``, in order;
        ``shared`` keyword arguments go to every call. Returns the values (or FAILED) in order."""
        values = []
        for check, fn, *kwargs in checks:
            values.append(self.run(model, check, fn, **shared, **(kwargs[0] if kwargs else {})))
        return values

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

    def summary(self, shown: int = 6) -> str:
        """The last line of a run: the counts and, where any step failed, which ones and why
        (``model check (detail)``, the first ``shown``), so that a run's one line says what
        differs without the table."""
        passed, failed, skipped = self.counts()
        line = f"gpu_check: {passed} passed, {failed} failed" + (
            f" ({skipped} skipped after a failure)" if skipped else ""
        )
        bad = [r for r in self.rows if r.status == "FAIL"]
        if bad:
            said = [f"{r.model} {r.check} ({r.detail[:120]})" for r in bad[:shown]]
            more = f"; and {len(bad) - shown} more" if len(bad) > shown else ""
            line += ": FAILED " + "; ".join(said) + more
        return line

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

    def train(self, name, model, epochs, check=None, *, on_device=False, **kwargs):
        """The training step of a phase, recorded: ``train`` for ``epochs`` (see :func:`_train`),
        skipped when ``model`` failed to build; with ``on_device`` then the module's device.

        Returns the trained model, or FAILED.
        """
        trained = self.report.run(
            name,
            check or f"train({epochs} epochs)",
            lambda: _train(self, model, epochs, **kwargs),
            needs=[model],
            detail=lambda m: _epochs_detail(m, epochs),
            finite=False,
        )
        if on_device and trained is not FAILED:
            self.report.run(name, "module on device after train", lambda: _on_device(self, model))
        return trained

    def build_and_train(self, name, check, build, epochs, train_check=None, *, detail=None, **kw):
        """Record building a model (``build()``, ``detail`` as in :meth:`Report.run`), then
        training it (:meth:`train`, with ``train_check`` and ``kw``).

        Returns the trained model, or FAILED when either step failed.
        """
        model = self.report.run(name, check, build, finite=False, detail=detail)
        return self.train(name, model, epochs, train_check, **kw)

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
