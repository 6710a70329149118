"""deltavae: Pyro variational autoencoders for single-cell data, built on scvi-tools.

Examples
--------
>>> import deltavae as dv
>>> import scanpy as sc
>>> adata = dv.datasets.pbmc3k()
>>> dv.model.ZINBVAE.setup_anndata(adata)
>>> vae = dv.model.ZINBVAE(adata, n_latent=10)
>>> vae.train(max_epochs=50)  # doctest: +SKIP
>>> vae.write_to_adata(adata)  # doctest: +SKIP
['obsm/X_zinbvae']
>>> sc.pp.neighbors(adata, use_rep="X_zinbvae")  # doctest: +SKIP

Importing deltavae sets ``OMP_WAIT_POLICY=PASSIVE`` (unless set) before torch is loaded, so
that torch's idle threads sleep instead of spinning on a busy machine, and sets a thread count
suited to the CPUs this process may use unless one was chosen already (see :func:`set_threads`
and ``DELTAVAE_THREADS``). It also quiets a few dependency messages that tell a user nothing
(see :mod:`deltavae._logging`). The subpackages load on first use: ``dv.model`` imports
scvi-tools, Lightning and scanpy, ``import deltavae`` alone only torch.
"""

import importlib as _importlib
import os as _os
import sys as _sys
from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version
from typing import TYPE_CHECKING as _TYPE_CHECKING

if _TYPE_CHECKING:  # what the lazy names below are, for type checkers and editors
    from . import datasets, metrics, model, pl
    from ._io import read_lazy, write_results_to_store

# OpenMP reads its wait policy once, when torch loads it: this must come before any import
# of torch (ours below, or one of a dependency's). See deltavae._threads.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
_torch_was_imported = "torch" in _sys.modules

from ._logging import install_filters as _install_filters  # noqa: E402
from ._threads import apply_import_default as _apply_import_default  # noqa: E402
from ._threads import default_threads, set_threads  # noqa: E402

_install_filters()
_apply_import_default(_torch_was_imported)
del _torch_was_imported

try:
    __version__ = _version("deltavae")
except _PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

# The subpackages load on first use (PEP 562): ``dv.model`` imports scvi-tools, Lightning and
# scanpy (about 6 s), which ``deltavae --help`` or a script that only plots need not wait for.
_LAZY = {
    "datasets": "datasets",
    "metrics": "metrics",
    "model": "model",
    "pl": "pl",
    "read_lazy": "_io",
    "write_results_to_store": "_io",
    # not in __all__, but reached as dv.train.NotConvergedWarning and the like
    "train": "train",
    "module": "module",
    "nn": "nn",
    "distributions": "distributions",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'deltavae' has no attribute {name!r}")
    module = _importlib.import_module(f".{_LAZY[name]}", __name__)
    value = module if _LAZY[name] == name else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "datasets",
    "metrics",
    "model",
    "pl",
    "default_threads",
    "read_lazy",
    "set_threads",
    "write_results_to_store",
    "__version__",
]
