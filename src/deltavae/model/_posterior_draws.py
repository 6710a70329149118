"""``posterior_predictive_sample``'s draws, assembled without pydata-sparse's compiled kernels.

scvi-tools 1.4 turns each minibatch into a ``sparse.GCXS`` compressed along genes and then
concatenates them along cells, which makes pydata-sparse compile (numba) its axis change: 10
to 20 s on the first call of every Python process, for a read-out of a tenth of a second (and
as long again to reorder the genes of ``gene_list``). The same draws are stacked here as
scipy CSR rows and handed to ``GCXS`` as its compressed arrays: the same type, shape, values
and compressed axis as scvi-tools' result; only the array check every ``GCXS`` runs is
compiled (about 2 s, once per process). The loop over minibatches
and ``transform_batch`` is scvi-tools'; no library offers it apart from the assembly.
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
    ``cell_draws``: a ``CellDraws`` every number is drawn from, on the CPU (see
    ``DeltaPyroModule.predictive_draws``). A model without a batch field (the spot models)
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
    drawn_by = {} if cell_draws is None else {"cell_draws": cell_draws}
    if not isinstance(genes, slice):
        genes = torch.as_tensor(genes)
    # Each minibatch's draws kept on the device and brought to the host together (a .cpu()
    # each made a GPU wait); the mean over transform_batch taken there, a minibatch at a time
    # as scvi-tools does, in the same numbers, and each part made sparse as it comes: the
    # dense draws of every cell are never held at once (scvi-tools' loop held one minibatch).
    rows, shapes, sizes = [], [], []
    minibatches = iter(sizes)  # read as the parts come, each of whole minibatches

    def sparse_rows(part: dict) -> dict:
        for draws in minibatch_means(list(part.values()), minibatches):
            draws = draws.numpy()
            shapes.append(draws.shape[1:])
            rows.append(sp.csr_matrix(draws.reshape(len(draws), -1)))
        return {}

    gathered = Gathered(sparse_rows)
    for tensors in dataloader:
        drawn = {
            f"draws{i}": model.module.predictive_draws(
                tensors,
                n_samples=n_samples,
                generative_kwargs=model._get_transform_batch_gen_kwargs(batch),
                **drawn_by,
            )[:, genes]
            for i, batch in enumerate(track(transform_batch, disable=silent))
        }
        sizes.append(len(drawn["draws0"]))
        gathered.add(**drawn)
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
