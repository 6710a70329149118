"""deltavae: Pyro variational autoencoders for single-cell data, built on scvi-tools.

Examples
--------
>>> import deltavae as dv
>>> adata = dv.datasets.pbmc3k()
>>> dv.model.ZINBVAE.setup_anndata(adata)
>>> vae = dv.model.ZINBVAE(adata, n_latent=10)
>>> vae.train(max_epochs=50)  # doctest: +SKIP
>>> vae.write_to_adata(adata)  # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, metrics, model, pl
from ._io import read_lazy, write_results_to_store

try:
    __version__ = version("deltavae")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = [
    "datasets",
    "metrics",
    "model",
    "pl",
    "read_lazy",
    "write_results_to_store",
    "__version__",
]
