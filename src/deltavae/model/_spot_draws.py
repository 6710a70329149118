"""The spot models' ``posterior_predictive_sample``: scvi-tools' posterior predictive check on
NMFDeconv, Archetypes and SpatialImputer, whose modules draw spots' counts (``sample``) but
which had no model-level method (an ``AttributeError``, where ZINBVAE and CGMDVAE answer
scvi-tools' call and ``scvi.criticism.PosteriorPredictiveCheck`` calls it on every model).

The draws are the ZINBVAE's (:func:`~deltavae.model._posterior_draws.posterior_predictive_draws`:
its minibatch loop and sparse layout), each number drawn on the CPU from generators seeded by
torch's CPU generator (``scvi.settings.seed``), spot after spot
(:class:`~deltavae.distributions._draws.CellDraws`): the same draws on a GPU as on the CPU,
and for any ``batch_size``.
"""

from __future__ import annotations

import pandas as pd
from scvi import REGISTRY_KEYS

from .._anndata_or_folder import check_anndata
from .._checks import short_repr
from ..distributions._draws import CellDraws
from ._de_checks import check_dataloader_alone, check_draws
from ._de_names import check_genes
from ._latent_shift import draws_at_data_floor
from ._posterior_draws import posterior_predictive_draws
from ._query_source import spots_now
from ._same_spots import check_same_spots, given_order
from ._training_checks import check_batch_size


class SpotDrawsMixin:
    """:meth:`posterior_predictive_sample` of a spot model (see the module's docstring)."""

    def _get_transform_batch_gen_kwargs(self, batch) -> dict:
        """No keyword: a spot model decodes no batch (``transform_batch`` is refused)."""
        return {}

    def posterior_predictive_sample(
        self,
        adata=None,
        indices=None,
        transform_batch=None,
        n_samples: int = 1,
        gene_list=None,
        batch_size: int | None = None,
        dataloader=None,
        silent: bool = True,
        **data_loader_kwargs,
    ):
        """Counts drawn from the posterior predictive distribution of each spot, as
        scvi-tools' ``posterior_predictive_sample`` (a posterior predictive check:
        ``scvi.criticism.PosteriorPredictiveCheck``).

        Each draw takes the spot's latents from the model's posterior (NMFDeconv's are point
        estimates: its draws differ by the counts' noise; Archetypes' weights and
        SpatialImputer's proportions or latent are drawn from the guide), then counts from the
        negative binomial they give, on the genes the model fits: an NMFDeconv's
        ``used_genes()`` (its markers), an Archetypes' genes, a SpatialImputer's measured
        genes (``model.adata.var_names``; imputed genes have expected values only,
        ``impute()``). Their mean over many draws is the model's expected counts of the
        spot.

        Parameters
        ----------
        adata
            Spots to draw for (default the model's). A model fitted per spot (NMFDeconv's
            ``inference="per_spot"``, SpatialImputer) draws for its own spots only, matched by
            name; an amortised one maps any spots with its genes.
        indices
            Spots of ``adata`` to draw for (positions or a boolean mask, as every read-out's
            ``indices``; default all), in this order.
        transform_batch
            Not used by a spot model, which has no batch to decode under: only ``None``.
        n_samples
            Draws per spot (an integer from 1).
        gene_list
            Genes to return, in this order (a string is one gene); default every gene the
            model fits. A gene it does not fit is refused, naming it.
        batch_size
            Spots per minibatch (default ``scvi.settings.batch_size``); the draws do not
            depend on it.
        dataloader
            Minibatches of the model's registered tensors to draw for instead of ``adata``
            and ``indices`` (scvi-tools' argument).
        silent
            If True, disables the progress bar.
        **data_loader_kwargs
            Keywords of the data loader.

        Returns
        -------
        sparse.GCXS
            Draws of counts, spots x genes (``n_samples == 1``) or spots x genes x
            ``n_samples``, as scvi-tools returns them (``.todense()`` for a numpy array).

        Examples
        --------
        >>> draws = model.posterior_predictive_sample(n_samples=20)  # doctest: +SKIP
        >>> draws.todense().mean(-1)  # about each spot's expected counts  # doctest: +SKIP
        """
        self._check_if_trained(warn=False)
        given = {
            "indices": indices,
            "transform_batch": transform_batch,
            "batch_size": batch_size,
            "dataloader": dataloader,
            "n_samples": n_samples,
        }
        check_dataloader_alone(given, "posterior_predictive_sample")
        check_draws(given, ("n_samples",))
        check_batch_size(batch_size)
        if transform_batch is not None:
            raise ValueError(
                f"transform_batch={short_repr(transform_batch)}: {type(self).__name__}, a "
                "model of spots, has no batch to decode a spot under; each spot is drawn as "
                "the model fits it. Leave transform_batch out."
            )
        genes = _drawn_genes(self)
        if isinstance(gene_list, str):  # one gene
            gene_list = [gene_list]
        _check_drawn_genes(self, gene_list, genes)
        data, rows = (None, None) if dataloader is not None else _drawn_spots(self, adata, indices)
        # Seeded from torch's CPU generator (scvi.settings.seed): a GPU draws the same.
        cell_draws = CellDraws()
        result = posterior_predictive_draws(
            self,
            data,
            rows,
            None,
            n_samples,
            gene_list,
            batch_size,
            dataloader,
            silent,
            genes=genes,
            cell_draws=cell_draws,
            **data_loader_kwargs,
        )
        return draws_at_data_floor(self, adata, result)  # counts: as drawn


def _drawn_genes(model) -> pd.Index:
    """The genes a spot model's likelihood reads, in the order its draws come: an
    NMFDeconv's ``used_genes()``, every gene of the others' AnnData."""
    used = getattr(model, "used_genes", None)
    return pd.Index(model.adata.var_names if used is None else used())


def _check_drawn_genes(model, gene_list, genes: pd.Index) -> None:
    """Every gene of ``gene_list`` is one the model draws (``genes``): a SpatialImputer's
    imputed genes and an NMFDeconv's genes other than its markers are refused, saying why."""
    if gene_list is None:
        return
    names = [str(gene) for gene in gene_list]
    reference = getattr(model, "reference_genes_", None)
    if reference is not None:
        imputed = [g for g in names if g not in model.adata.var_names and g in reference]
        if imputed:
            raise ValueError(
                f"gene_list names {len(imputed)} gene(s) the spots did not measure, e.g. "
                f"{imputed[:5]}: the model fits the counts of its {model.adata.n_vars} "
                "measured genes (model.adata.var_names) and gives the others expected "
                f"values only, with no counts to draw: model.impute(genes={imputed[:3]})."
            )
    check_genes(model, names)
    unfitted = [g for g in names if g not in genes]
    if unfitted:
        raise ValueError(
            f"gene_list names {len(unfitted)} gene(s) the model does not fit, e.g. "
            f"{unfitted[:5]}: {type(model).__name__} models the counts of the "
            f"{len(genes)} genes of model.used_genes() only (the markers it reads). Pass "
            "genes among them."
        )


def _drawn_spots(model, adata, indices) -> tuple:
    """The AnnData the draws read and its rows (``None``: all), in the order of the spots
    asked for. An amortised model reads ``adata`` itself; a model fitted per spot (its spots'
    parameters looked up by their row) reads its own AnnData at the rows of ``adata``'s
    spots, by name, as its read-outs do: other spots, or its spots holding other counts, are
    refused."""
    from ._spots import _PER_SPOT_ADVICE, SPOT_INDEX, selected_rows, with_spot_index

    registered = REGISTRY_KEYS.INDICES_KEY in model.registry_["field_registries"]
    if not registered or getattr(model.module, "amortized", False):
        data = model._resolve_adata(adata)
        if registered and SPOT_INDEX not in data.obs:
            data = with_spot_index(data)  # set up with spot_index=True: not read
        return data, selected_rows(data, indices)
    spots = spots_now(model) if adata is None else check_anndata(adata)
    name, held = type(model).__name__, pd.Index(model.adata.obs_names.astype(str))
    if spots is None:  # the model's spots, in the order they were given (load)
        names = given_order(model)
        names = model.adata.obs_names if names is None else names
    else:
        names = spots.obs_names
    positions = held.get_indexer(pd.Index(names.astype(str)))
    if spots is not None and ((positions < 0).any() or names.has_duplicates):
        foreign = names[positions < 0]
        found = f"{len(foreign)} others (e.g. {foreign[:3].tolist()})"
        raise ValueError(
            f"This {name} fitted parameters for each of its {model.adata.n_obs} spots, so it "
            "draws for those spots only, matched by name; adata holds "
            f"{found if len(foreign) else 'repeated spot names'}. For other spots "
            f"{_PER_SPOT_ADVICE[name]}."
        )
    check_same_spots(model, spots, positions, _PER_SPOT_ADVICE[name])
    rows = selected_rows(model.adata if spots is None else spots, indices)
    return model.adata, positions if rows is None else positions[rows]
