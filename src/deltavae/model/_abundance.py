"""scvi-tools' ``differential_abundance``, reading and writing the AnnData as given."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._rng import start_seed
from .._slashes import renamed_column, warn_slashed
from ._de_tables import missing_obs_column
from ._few_cell_means import warn_few_cell_samples
from ._modes import unchecked_distributions


@torch.inference_mode()
def aggregated_posterior(
    model, adata, indices, batch_size, dof
) -> torch.distributions.Distribution:
    """scvi-tools' ``get_aggregated_posterior``: an equal mixture of the cells' q(z), Normal
    (``dof`` None) or Student's t components. scvi-tools 1.4 gave the components the
    variance of q(z) as their scale (too narrow where it is below 1), which scvi-tools
    later fixed; here the scale is its square root."""
    from torch import distributions as dist

    model._check_if_trained(warn=False)
    adata = model._validate_anndata(adata)
    # Checked by the loader as every read-out's (len() failed on one position or a generator
    # with a bare TypeError). scvi-tools read an empty selection as every cell: a mask that
    # selected none (np.flatnonzero(mask)) gave every cell's posterior without a word; it is
    # refused, as get_latent_representation(indices=[]) is.
    cells = model._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
    loc, var = model.get_latent_representation(return_dist=True, dataloader=cells, give_mean=True)
    loc = torch.as_tensor(np.asarray(loc), device=model.device)
    scale = torch.as_tensor(np.asarray(var), device=model.device).sqrt()
    components = dist.Normal(loc, scale) if dof is None else dist.StudentT(dof, loc, scale)
    return dist.MixtureSameFamily(
        dist.Categorical(logits=loc.new_zeros(loc.shape[0])),  # loc's dtype, not torch's default
        dist.Independent(components, 1),
    )


@torch.inference_mode()
def differential_abundance(
    model,
    adata: AnnData | None,
    sample_key: str | None,
    batch_size: int = 128,
    num_cells_posterior: int | None = None,
    dof: float | None = None,
) -> None:
    """Log density of every cell's latent under each sample's aggregated posterior, written
    to ``adata.obsm["da_log_probs"]`` (cells x samples, a column per sample named as a
    string, in order of appearance), as scvi-tools' ``VAEMixin`` does. Samples named with a
    "/" keep their names, said once before the posterior is read: anndata >= 0.13 cannot write
    such column names to .h5ad (zarr cannot now).

    scvi-tools read the samples from, and wrote the result into, the AnnData the model
    registered: a query model's copy of its query (without the columns added after mapping,
    a ``KeyError``; the result out of the user's reach), or a copy of a view or of cells with
    the genes in another order (the result lost). Here both are ``adata`` as given, by
    default the model's (a query model's: the query it was given). The cells of a sample's
    posterior, when it has more than ``num_cells_posterior``, are drawn with
    ``scvi.settings.seed`` (0 while it is unset: two calls give one table), by a generator of
    their own: scvi-tools' ``np.random.choice`` moved numpy's global stream on.
    """
    target = model._write_target(adata)
    if target.is_view:  # as write_to_adata: the AnnData viewed would get nothing
        raise ValueError(
            "adata is a view (adata[mask]): anndata would write da_log_probs into a copy of "
            "it, and the AnnData it views would get nothing. Pass a copy you keep: "
            "sub = adata[mask].copy(); model.differential_abundance(sub, sample_key=...)."
        )
    if sample_key is None:
        raise KeyError(
            "sample_key=None is not a column of adata.obs: name the obs column of the samples "
            "whose abundance is compared."
        )
    if sample_key not in target.obs:
        passed = adata is not None
        raise missing_obs_column("sample_key", sample_key, target, passed, "differential_abundance")
    if num_cells_posterior is not None and not (
        isinstance(num_cells_posterior, int | np.integer) and num_cells_posterior >= 1
    ):  # 0 drew no cell, and scvi-tools' empty selection took every cell for each sample
        raise ValueError(
            f"num_cells_posterior must be a positive integer (cells drawn per sample) or None "
            f"(all of them); got {num_cells_posterior!r}."
        )
    samples = target.obs[sample_key]
    n_missing = int(samples.isna().sum())
    if n_missing:  # scvi-tools' empty selection took every cell for such a sample
        raise ValueError(
            f"adata.obs[{sample_key!r}] has {n_missing} missing values (NaN); give those cells "
            "a sample or drop them."
        )
    warn_few_cell_samples(
        samples.to_numpy(), pd.unique(samples.to_numpy()), num_cells_posterior, sample_key
    )
    warn_slashed(  # before the posterior is read: the columns keep the samples' names
        samples.astype(str).unique(),
        "samples",
        "obsm['da_log_probs']",
        renamed_column("adata", sample_key),
        before="calling differential_abundance",
    )
    data = model._validate_anndata(target)
    us = model.get_latent_representation(data, batch_size=batch_size, give_mean=True)
    us = torch.as_tensor(np.asarray(us, dtype=np.float32), device=model.device)
    names = pd.unique(samples.to_numpy())
    values = samples.to_numpy()
    log_probs, rng = [], np.random.default_rng(start_seed())
    for name in names:
        indices = np.flatnonzero(values == name)
        if num_cells_posterior is not None and num_cells_posterior < len(indices):
            indices = rng.choice(indices, num_cells_posterior, replace=False)
        # Unchecked, as the read-outs' passes make them: the checks of each minibatch's
        # latents against the support read them on the host (two GPU waits a minibatch and
        # sample); they change no value.
        with unchecked_distributions():
            posterior = aggregated_posterior(model, data, indices, batch_size, dof)
            rows = [posterior.log_prob(u) for u in torch.split(us, batch_size or len(us))]
        log_probs.append(torch.cat(rows))  # every sample's on the host at once
    # Columns named as strings: anndata writes no frame with integer or boolean column names
    # (samples 0, 1, 2 made write_h5ad fail: "0 of type <class 'int'> is an invalid key").
    target.obsm["da_log_probs"] = pd.DataFrame(
        torch.stack(log_probs, dim=1).cpu().numpy(),
        index=target.obs_names.copy(),
        columns=pd.Index([str(name) for name in names], dtype=object),
    )
