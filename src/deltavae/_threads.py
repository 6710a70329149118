"""Torch's CPU threads: a count that suits a shared machine, and passive waiting.

Two settings decide how training behaves on a busy CPU:

* **Wait policy.** torch's CPU kernels run on OpenMP threads, which by default spin while they
  wait for work. When another process holds one of the cores, the spinning threads compete
  with the one thread that has work, and training slows down many times over (benchmarks/README.md,
  Numbers behind the defaults, D6). ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep.
  OpenMP reads it once, when torch loads it, so ``import deltavae`` sets it (unless the
  variable is already set) before it imports torch; if torch was imported first, the setting
  has no effect in that process (set ``OMP_WAIT_POLICY=PASSIVE`` in the shell, or import
  deltavae first). Child processes inherit it.
* **Thread count.** :func:`default_threads`: the ``DELTAVAE_THREADS`` environment variable
  when set, otherwise the CPUs this process may use (its affinity mask and, in a container,
  its cgroup CPU quota), at most :data:`MAX_DEFAULT_THREADS`. torch's own default counts the
  machine's cores and ignores a container's quota, which oversubscribes the CPUs it may
  use; and a VAE's minibatch (128 cells x a few thousand genes x a few hundred hidden units)
  is too small a matrix product to keep more than a handful of threads busy, while each
  extra thread costs a synchronisation per kernel.

``import deltavae`` applies :func:`default_threads` only where no one else has chosen: not
when torch was imported before deltavae (its thread count may be the user's
``torch.set_num_threads``), nor when ``OMP_NUM_THREADS`` or ``MKL_NUM_THREADS`` is set;
``DELTAVAE_THREADS`` is applied always. A later ``torch.set_num_threads`` of the user's wins
as usual.

Examples
--------
>>> import deltavae as dv
>>> dv.set_threads(2)
2
>>> dv.set_threads()  # the default for this machine  # doctest: +SKIP
8
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
from pathlib import Path

from ._warn import warn_user

logger = logging.getLogger(__name__)

#: Environment variable with deltavae's thread count; it overrides the computed default.
ENV_VAR = "DELTAVAE_THREADS"
#: The most threads :func:`default_threads` chooses on its own.
MAX_DEFAULT_THREADS = 8
#: Environment variables by which a user has already chosen OpenMP's or MKL's thread count.
_USER_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
_CGROUP = Path("/sys/fs/cgroup")


def _cgroup_cpus(root: Path = _CGROUP) -> int | None:
    # cgroup v2 "cpu.max": "<quota> <period>" in microseconds, or "max <period>" (no quota);
    # cgroup v1 (older Docker, Kubernetes and HPC nodes): "cpu.cfs_quota_us" (-1: no quota)
    # and "cpu.cfs_period_us" in the cpu controller's folder.
    try:
        fields = (root / "cpu.max").read_text().split()
    except OSError:
        fields = _cgroup_v1_quota(root)
    if fields is None or len(fields) != 2 or fields[0] == "max":
        return None
    try:
        quota, period = int(fields[0]), int(fields[1])
    except ValueError:
        return None
    return max(1, math.ceil(quota / period)) if quota > 0 and period > 0 else None


def _cgroup_v1_quota(root: Path) -> list[str] | None:
    for folder in ("cpu", "cpu,cpuacct"):
        try:
            return [
                (root / folder / f"cpu.cfs_{name}_us").read_text().strip()
                for name in ("quota", "period")
            ]
        except OSError:
            continue
    return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota.

    Examples
    --------
    >>> available_cpus() >= 1
    True
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(cpus, quota) if quota is not None else cpus)


_warned: set[str] = set()


def _env_threads() -> int | None:
    text = os.environ.get(ENV_VAR, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        if text not in _warned:  # once per value, not at every call
            _warned.add(text)
            logger.warning("%s=%r is not a positive integer; ignored.", ENV_VAR, text)
        return None
    return value


def default_threads() -> int:
    """The torch thread count deltavae uses unless told otherwise.

    ``DELTAVAE_THREADS`` when it is set to a positive integer, otherwise
    ``min(available_cpus(), MAX_DEFAULT_THREADS)``.

    Examples
    --------
    >>> 1 <= default_threads()
    True
    """
    env = _env_threads()
    return env if env is not None else min(available_cpus(), MAX_DEFAULT_THREADS)


def command_threads() -> int:
    """The command line's default thread count: ``DELTAVAE_THREADS``, else the count a
    scheduler or the shell chose with ``OMP_NUM_THREADS`` (or ``MKL_NUM_THREADS``), else
    :func:`default_threads`.

    Examples
    --------
    >>> 1 <= command_threads()
    True
    """
    if _env_threads() is None:
        for name in _USER_THREAD_VARS:
            text = os.environ.get(name, "").strip()
            if text.isdigit() and int(text) >= 1:
                return int(text)
    return default_threads()


def set_threads(n: int | None = None) -> int:
    """Set torch's number of CPU threads (intra-op parallelism).

    Parameters
    ----------
    n
        Threads; ``None``: :func:`default_threads` (``DELTAVAE_THREADS``, or the CPUs this
        process may use, at most 8).

    Returns
    -------
    The thread count set.

    Examples
    --------
    >>> import deltavae as dv
    >>> dv.set_threads(1)
    1
    """
    import torch

    if n is None:
        n = default_threads()
    # numpy's integers too (np.int64(os.cpu_count() // 2), a value read from an array)
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer or None, got {n!r}.")
    n = int(n)
    cpus = available_cpus()
    if n > 16 * cpus:  # OpenMP tries to start them all; a million crashed the interpreter at exit
        raise ValueError(
            f"n={n} threads on the {cpus} CPUs this process may use; pass at most {cpus} "
            "(or None for the default)."
        )
    if n > cpus:
        warn_user(
            f"set_threads({n}) is more than the {cpus} CPUs this process may use: the threads "
            f"wait on each other and training slows; set_threads({cpus}) uses them all.",
        )
    torch.set_num_threads(n)
    return n


def apply_import_default(torch_was_imported: bool) -> None:
    """At ``import deltavae``: set the default thread count unless someone else chose one.

    Parameters
    ----------
    torch_was_imported
        Whether torch was imported before deltavae (then its thread count may be the user's).
    """
    chosen_elsewhere = torch_was_imported or any(os.environ.get(v) for v in _USER_THREAD_VARS)
    if _env_threads() is not None or not chosen_elsewhere:
        set_threads()


@contextlib.contextmanager
def keep_torch_threads():
    """torch's thread count as it was before the block, also as a decorator. numba launches
    its threading layer on first use (scanpy's ``normalize_total``, UMAP) and its OpenMP
    layer sets the OpenMP thread count it shares with torch to numba's: the user's
    ``torch.set_num_threads`` was lost mid-training, and the first model trained in a
    process differed from the next one built and trained the same way."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)


@contextlib.contextmanager
def command_threads_limited(n: int):
    """The thread pools of a ``deltavae`` command besides torch's held to ``n`` threads for the
    block, then put back: the BLAS and OpenMP pools of numpy, scipy and scikit-learn
    (threadpoolctl) and numba's (scanpy's neighbours and UMAP). ``--threads`` held only
    torch's, while training: numba's pool took every CPU, and its OpenMP layer set torch's
    threads to that count for whatever came after (call :func:`set_threads` first; torch's
    count is set again here, once numba's pool is up)."""
    import numba
    import torch
    from threadpoolctl import threadpool_limits

    numba_threads = numba.get_num_threads()
    with threadpool_limits(limits=n):
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))  # may launch the pool
        torch.set_num_threads(n)
        try:
            yield
        finally:
            numba.set_num_threads(numba_threads)
