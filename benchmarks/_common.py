"""Helpers shared by the benchmarks: wall time, peak memory, summary statistics, tables, quiet
logging and leiden clustering of a latent space.

Benchmarks are scripts, not tests; these helpers only measure, cluster and format.

Importing this module sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set): OpenMP threads that spin
while another process holds a core make torch many times slower on a shared machine (measured:
a 128x2000 matmul + backward took 1.2 ms on 1 thread, 24 ms on 2 threads with the default
active wait, 2 ms with passive wait). Benchmarks import it before anything that loads torch.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import logging  # noqa: E402
import re  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Sequence  # noqa: E402

from _env import git_commit, versions, versions_line, with_versions  # noqa: E402

_MiB = 1024**2
_HWM = re.compile(r"VmHWM:\s+(\d+)\s+kB")


class Timer:
    """Wall-clock seconds (``.seconds``) and this process's CPU seconds, all threads
    (``.cpu_seconds``), spent inside a ``with`` block.

    CPU time is the steadier number on a shared machine: other processes stretch wall time
    but not the work this process does (unless its threads spin while waiting).
    """

    def __enter__(self) -> Timer:
        self._start = time.perf_counter()
        self._cpu_start = time.process_time()
        self.seconds = self.cpu_seconds = float("nan")
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self._start
        self.cpu_seconds = time.process_time() - self._cpu_start


def _reset_kernel_peak() -> bool:
    # Writing 5 to clear_refs resets VmHWM (Linux >= 4.0), so the kernel's own peak covers
    # exactly the measured block, including spikes shorter than the sampling interval.
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _kernel_peak() -> int | None:
    try:
        with open("/proc/self/status") as fh:
            match = _HWM.search(fh.read())
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


class PeakRSS:
    """Peak resident set size of this process during a ``with`` block.

    A daemon thread samples RSS with psutil every ``interval`` seconds. Where Linux allows it,
    the kernel's high-water mark (VmHWM, reset on entry) is read as well and the larger of the
    two is kept. tracemalloc would miss torch's allocations, which do not go through Python.

    Attributes (bytes): ``baseline`` (RSS on entry), ``peak``, ``delta`` (``peak - baseline``).
    """

    def __init__(self, interval: float = 0.01):
        self.interval = interval
        import psutil  # only the memory sampler needs it (pip install .[bench])

        self._proc = psutil.Process(os.getpid())

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRSS:
        self._use_kernel = _reset_kernel_peak()
        self.baseline = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)
        if self._use_kernel:
            self.peak = max(self.peak, _kernel_peak() or 0)
        self.delta = self.peak - self.baseline


_THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def environment() -> dict:
    """What a run's numbers depend on besides the seed: the versions (``_env.versions``:
    Python, the packages, the benchmarks' commit), CPUs and torch threads, the thread
    variables, and which copy of deltavae ran (its file and, for a git checkout, the commit,
    with ``+dirty`` when uncommitted changes exist). Two runs of one seed that differ can be
    told apart by these (benchmarks/README.md: an installed copy and the checkout, or another
    thread count, give other numbers)."""
    from pathlib import Path

    import torch

    import deltavae

    env: dict = versions()
    env["cpus"] = os.cpu_count()
    env["torch_threads"] = torch.get_num_threads()
    env.update({name: os.environ.get(name) for name in _THREAD_VARIABLES})
    source = Path(deltavae.__file__).resolve().parent
    env["deltavae_path"] = str(source)
    env["deltavae_commit"] = git_commit(source)
    return env


def environment_line(env: dict) -> str:
    """One line of :func:`environment` for a report (every version: ``_env.versions_line``)."""
    threads = ", ".join(f"{k}={env[k]}" for k in _THREAD_VARIABLES if env.get(k) is not None)
    return (
        f"deltavae {env['deltavae']} from {env['deltavae_path']}"
        + (f" (commit {env['deltavae_commit']})" if env.get("deltavae_commit") else "")
        + f"; {env['torch_threads']} torch thread(s) on {env['cpus']} CPUs"
        + (f"; {threads}" if threads else "")
        + f"; {versions_line(env)}"
    )


def load_average() -> float:
    """One-minute load average (NaN where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def mib(n_bytes: float) -> float:
    """Bytes to MiB."""
    return n_bytes / _MiB


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    values = [float(v) for v in values]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return statistics.fmean(values), sd


def fmt_mean_sd(values: Sequence[float], digits: int = 3) -> str:
    """``"mean ± sd"`` with ``digits`` decimals."""
    m, s = mean_sd(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table with padded columns."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), sep, *(line(r) for r in cells[1:])])


def csr_nbytes(matrix) -> int:
    """Bytes held by a scipy sparse matrix's data, indices and indptr (or a dense array)."""
    if hasattr(matrix, "indptr"):
        return int(matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes)
    return int(matrix.nbytes)


def run_json_subprocess(args: Sequence[str], timeout: float | None = None) -> dict:
    """Run ``python *args`` in a fresh interpreter; parse the last stdout line as JSON.

    A fresh process per measurement keeps one run's allocator state and caches out of the
    next run's peak memory.
    """
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"worker {' '.join(args)} failed with exit code {proc.returncode}:\n"
            f"{proc.stderr[-4000:]}"
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if not lines:
        raise RuntimeError(f"worker {' '.join(args)} printed nothing on stdout")
    return json.loads(lines[-1])


def save_json(result, out: str | None) -> None:
    """Write ``result`` to ``out`` as JSON (numpy numbers as floats) with the versions it came
    from (``_env.with_versions``); nothing when None."""
    if out:
        from pathlib import Path

        Path(out).write_text(json.dumps(with_versions(result), indent=1, default=float))


def finish(result: dict, report, out: str | None, loads: Sequence[float]) -> int:
    """End a benchmark: the mean load into ``result``, ``report(result)`` to stdout, JSON out."""
    result["load_average"] = float(statistics.fmean(loads))
    print(report(result))
    save_json(result, out)
    return 0


def quiet() -> None:
    """Silence scvi-tools' INFO lines (printed to stdout), Lightning, Pyro and warnings."""
    import scvi

    scvi.settings.verbosity = logging.ERROR
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "pyro"):
        logging.getLogger(name).setLevel(logging.ERROR)


def leiden_labels(latent, resolution: float, seed: int = 0):
    """Leiden clusters (igraph flavour) of the kNN graph of ``latent``, one label per row."""
    import anndata as ad
    import numpy as np
    import scanpy as sc

    emb = ad.AnnData(np.zeros((latent.shape[0], 1), dtype=np.float32))
    emb.obsm["rep"] = np.asarray(latent)
    # Exact neighbours (scikit-learn), as scanpy uses below 4,096 cells anyway: above it, its
    # default approximate search failed on Kang's 12,261 cells (a csr_array without getnnz).
    sc.pp.neighbors(emb, use_rep="rep", random_state=seed, transformer="sklearn")
    sc.tl.leiden(
        emb,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        resolution=resolution,
        random_state=seed,
    )
    return emb.obs["leiden"].to_numpy()


def delta_r2(pred, truth, ctrl, genes) -> float:
    """The delta measure: R² between the predicted and the true change of the per-gene means
    from control on ``genes`` (``dv.metrics.mean_expression_r2(..., control=ctrl)``), and 0.0
    for a prediction that changes none of them (beyond rounding: the control itself, in
    another order or as float32), whose R² is undefined: the tables print no change as 0."""
    import deltavae as dv

    try:
        return dv.metrics.mean_expression_r2(pred, truth, genes=genes, control=ctrl)
    except ValueError as error:
        if "the predicted change from control is the same" not in str(error):
            raise
        return 0.0
