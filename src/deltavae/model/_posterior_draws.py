"""``posterior_predictive_sample``'s draws, assembled without pydata-sparse's compiled kernels.

scvi-tools 1.4 turns each minibatch into a ``sparse.GCXS`` compressed along genes and then
concatenates them along cells, which makes pydata-sparse compile (numba) its axis change: 10
to 20 s on the first call of every Python process, for a read-out of a tenth of a second (and
as long again to reorder the genes of ``gene_list``). The same draws are stacked here as
scipy CSR rows and handed to ``GCXS`` as its compressed arrays: the same type, shape, values
and compressed axis as scvi-tools' result; only the array check every ``GCXS`` runs is
compiled (about 2 s, once per process). The loop over minibatches and ``transform_batch`` is
scvi-tools'; no library offers it apart from the assembly. Every number is drawn on the CPU,
cell after cell (:class:`~deltavae.distributions._draws.CellDraws`), where scvi-tools draws on
the model's device minibatch by minibatch: one seed gives the same draws on a GPU as on the
CPU, and for any ``batch_size``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from scvi import REGISTRY_KEYS
from scvi.data._utils import _validate_adata_dataloader_input
from scvi.model._utils import _get_batch_code_from_category
from scvi.utils import track

from ..distributions._draws import CellDraws
from ..module._base import drawn_from
from ._de_tables import in_gene_list_order
from ._expression_reads import minibatch_means
from ._gathered import Gathered


def gene_positions(gene_list, genes: pd.Index) -> np.ndarray | slice:
    """Positions of ``gene_list``'s genes among ``genes``, in the list's order (a set: the
    model's), as :func:`in_gene_list_order` reads a list; every gene for ``None``.

    Examples
    --------
    >>> gene_positions(["c", "a"], pd.Index(["a", "b", "c"]))
    array([2, 0])
    """
    if gene_list is None:
        return slice(None)
    every = np.arange(len(genes))[None, :]
    return np.asarray(in_gene_list_order(every, gene_list, genes, 1, all_genes=True))[0]


def posterior_predictive_draws(
    model,
    adata=None,
    indices=None,
    transform_batch=None,
    n_samples: int = 1,
    gene_list=None,
    batch_size: int | None = None,
    dataloader=None,
    silent: bool = True,
    *,
    genes: pd.Index | None = None,
    cell_draws=None,
    **data_loader_kwargs,
):
    """scvi-tools' ``posterior_predictive_sample`` with the arguments it takes, the genes of
    ``gene_list`` in the list's order (also with ``dataloader=``, which scvi-tools reads with
    every gene); shape ``(cells, genes)``, or ``(cells, genes, n_samples)``. ``genes``: the
    features the module draws (default the model's genes; an NMFDeconv's ``used_genes()``);
    ``cell_draws``: the ``CellDraws`` every number is drawn from, on the CPU, cell after cell
    (``None``: seeded from torch's CPU generator), so that one seed gives the same draws on
    a GPU as on the CPU and for any ``batch_size``. A model without a batch field (the spot models)
    draws under none."""
    import sparse

    _validate_adata_dataloader_input(model, adata, dataloader)
    if dataloader is None:
        adata = model._validate_anndata(adata)
        dataloader = model._make_data_loader(
            adata=adata, indices=indices, batch_size=batch_size, **data_loader_kwargs
        )
        manager = model.get_anndata_manager(adata, required=True)
        if transform_batch is None and REGISTRY_KEYS.BATCH_KEY not in manager.data_registry:
            transform_batch = [None]  # scvi-tools' KeyError 'batch'
        else:
            transform_batch = _get_batch_code_from_category(manager, transform_batch)
    else:
        transform_batch = [None]
    genes = gene_positions(gene_list, model.adata.var_names if genes is None else genes)
    cell_draws = CellDraws() if cell_draws is None else cell_draws
    # Generators of its own for each transform_batch: one stream shared by them took its
    # draws minibatch by minibatch, in an order set by batch_size.
    draws_of = [cell_draws.part(i) for i in range(len(transform_batch))]
    if not isinstance(genes, slice):
        genes = torch.as_tensor(genes)
    # Each minibatch's parameters of p(x | z) kept on the device and brought to the host
    # together (a .cpu() each made a GPU wait), where each part's cells are drawn in cell
    # order (CellDraws: the same draws for parts of any size) and the mean over
    # transform_batch taken a minibatch at a time, as scvi-tools does, and made sparse as
    # it comes: the dense draws of every cell are never held at once (scvi-tools' loop held
    # one minibatch).
    rows, shapes, sizes = [], [], []
    minibatches = iter(sizes)  # read as the parts come, each of whole minibatches

    def sparse_rows(part: dict) -> dict:
        by_batch = [{} for _ in draws_of]
        for key, value in part.items():
            i, name = key.split("_", 1)
            by_batch[int(i)][name] = value
        # every gene drawn: gene_list's draws are the columns of the model's draws
        every = [
            drawn_from(params, n_samples, draws)[:, genes]
            for params, draws in zip(by_batch, draws_of, strict=True)
        ]
        for drawn in minibatch_means(every, minibatches):
            drawn = drawn.numpy()
            shapes.append(drawn.shape[1:])
            rows.append(sp.csr_matrix(drawn.reshape(len(drawn), -1)))
        return {}

    gathered = Gathered(sparse_rows)
    for tensors in dataloader:
        params = {}
        for i, batch in enumerate(track(transform_batch, disable=silent)):
            drawn = model.module.predictive_parameters(
                tensors,
                n_samples=n_samples,
                generative_kwargs=model._get_transform_batch_gen_kwargs(batch),
                cell_draws=draws_of[i],
            )
            params.update({f"{i}_{key}": value for key, value in drawn.items()})
        sizes.append(len(next(iter(params.values()))))
        gathered.add(**params)
    gathered.result()  # the last part
    shape = shapes[-1] if shapes else None
    if shape is None:
        raise ValueError("posterior_predictive_sample was given no cells to draw for.")
    stacked = sp.vstack(rows, format="csr")
    return sparse.GCXS(
        (stacked.data, stacked.indices.astype(np.intp), stacked.indptr.astype(np.intp)),
        shape=(stacked.shape[0], *shape),
        compressed_axes=(0,),
        fill_value=stacked.dtype.type(0),
    )
