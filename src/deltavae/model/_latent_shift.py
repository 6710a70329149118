"""scGen's latent arithmetic (``predict_perturbation(method="latent_shift")``), and the record
every prediction keeps of how it was made (``uns["prediction"]``)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS

from .._checks import layer_matrix
from ..distributions._draws import CellDraws
from ..module._cgmdvae_generation import count_parameters, translated_counts
from ._condition_counts import warn_untrained_combinations
from ._empty_cells import warn_empty_cells
from ._few_cell_means import warn_few_cell_shift
from ._gathered import Gathered
from ._labels import _label_state, groups_under_both
from ._matrices import has_negatives
from ._prediction_frame import predicted_cells
from ._registered import decoded_under

if TYPE_CHECKING:
    from ._perturbation import Contrast, PerturbationMixin


def _group_means(z: np.ndarray, groups: np.ndarray | None) -> dict:
    if groups is None:
        return {None: z.mean(0)}
    return {g: z[groups == g].mean(0) for g in np.unique(groups)}


def training_obs(model) -> pd.DataFrame:
    """obs of the model's AnnData; for a query model, which reads a copy of its query, the
    query's as it is now (columns added or changed after mapping, e.g. predicted labels to
    balance over), with the copy's other columns."""
    obs = model.adata.obs
    query = getattr(model, "_query_adata", None)
    if query is None or not query.obs_names.equals(obs.index):
        return obs
    own = obs.columns.difference(query.obs.columns)
    return pd.concat([query.obs, obs[own]], axis=1) if len(own) else query.obs


def balance_groups(model, key: str) -> tuple[np.ndarray, np.ndarray]:
    """The group of every training cell in obs column ``key`` (``balance_key``), as strings,
    and which cells have one: a cell whose value is missing, or that the model's labels
    column marks unlabelled, is in no group (not in a group ``"nan"`` or ``"Unknown"`` of
    unrelated cells)."""
    column = training_obs(model)[key]
    groups, has = column.astype(str).to_numpy(), column.notna().to_numpy()
    labels_key, unlabelled, _ = _label_state(model.registry_)
    if key == labels_key:
        has &= groups != str(unlabelled)
    return groups, has


def data_floor(model, adata: AnnData) -> float | None:
    """The floor of predicted real values: 0 where neither the model's training data nor
    ``adata``'s (both registered) go below 0 (counts, log-normalized data), else None, nothing
    clipped (arcsinh cytometry, CLR protein, scaled data). Read from the given cells alone, a
    cell's prediction was clipped or not by the other cells passed with it."""
    for data in (model.adata, adata):
        manager = model.get_anndata_manager(data, required=True)
        if has_negatives(manager.get_from_registry(REGISTRY_KEYS.X_KEY)):
            return None
    return 0.0


def draws_at_data_floor(model, adata: AnnData | None, draws):
    """``posterior_predictive_sample``'s ``draws`` of a normal likelihood clipped at 0 where
    neither the model's training data nor ``adata`` (as given; ``None``: none) go below 0
    (log-normalized data), as ``sample`` and ``translate`` clip theirs: scvi-tools' draws of
    log-normalized data went below 0 (-1.8), values the data never take. Others as drawn."""
    if getattr(model.module, "likelihood", None) != "normal":
        return draws
    layer = model.registry_["setup_args"].get("layer")
    for data in (model.adata, adata):
        if data is not None and has_negatives(layer_matrix(data, layer)):
            return draws
    # On the stored values of sparse's GCXS (its fill value is 0): no numba compilation.
    return type(draws)(
        (np.maximum(draws.data, 0.0), draws.indices, draws.indptr),
        shape=draws.shape,
        compressed_axes=draws.compressed_axes,
        fill_value=draws.fill_value,
    )


def _count_scale(model, method: str, residual: bool, blended: bool) -> str:
    """What ``X`` of a count model's prediction holds (see :func:`describe_prediction`)."""
    whole = (
        " (whole counts: layers['counts'], the matrix to test genes on against real cells, as"
        " sc.tl.rank_genes_groups does: expected counts are rarely 0, and genes mostly 0 in the"
        " real cells rank high against them for that alone)"
    )
    if method == "nearest_response":  # added on log-normalized counts, taken back to counts
        return (
            "expected counts at each cell's library size: its log-normalized counts plus the "
            "observed responses, expm1(.) * library size / 1e4, not rescaled to the library "
            "(the log-normalized prediction: layers['log_normalized'])" + whole
        )
    if residual:
        scale = "each cell's observed counts plus the model's change to the target"
        if blended:  # expm1 of an average of logs: below the average of the counts
            scale += (
                ", averaged with the observed responses on log-normalized counts and taken "
                "back to each cell's library size (the average of logs puts totals below it)"
            )
        return scale + whole
    module = model.module
    if getattr(module, "l_encoder", None) is not None:
        library = "each cell's latent library size (its posterior mean)"
    elif model.registry_["setup_args"].get("size_factor_key") is not None:
        library = "each cell's size factor"
    else:
        library = "each cell's library size"
    scale = f"expected counts at {library}"
    if module.likelihood == "zinb":  # (1 - dropout) x the negative binomial's mean
        scale += ", dropout included (the zero-inflated mean: totals below the library size)"
    return scale + whole


def describe_prediction(
    out: AnnData, model, method: str, target, residual: bool = False, blended: bool = False
) -> None:
    """Record in ``out.uns["prediction"]`` how the cells were predicted and on which scale
    ``X`` is, since the methods reach it differently (expected counts decoded, observed counts
    plus a change, log-normalized counts plus observed responses taken back to counts).
    ``residual``: translate added the decoded change to the observed data; ``blended``: it
    averaged that with observed responses.

    Examples
    --------
    >>> out = AnnData(np.zeros((1, 1)))
    >>> class Model: module = type("M", (), {"likelihood": "nb"})
    >>> describe_prediction(out, Model(), "nearest_response", "stim")
    >>> out.uns["prediction"]["X"].split(":")[0]
    "expected counts at each cell's library size"
    """
    likelihood = model.module.likelihood
    if likelihood in ("zinb", "nb"):
        scale = _count_scale(model, method, residual, blended)
    else:
        scale = "probabilities" if likelihood == "bernoulli" else "the model's data's own scale"
        if residual:
            scale += ": each cell's observed data plus the model's change to the target"
        elif method == "translate" and likelihood != "bernoulli":
            scale += ": the model's mean decoded under the target"
        # A decoded mean averaged with them too (response_weight > 0 without residual).
        scale += ", averaged with the observed responses" if blended else ""
    target = target if isinstance(target, dict) else str(target)  # a dict: target_record's
    out.uns["prediction"] = {"method": method, "target": target, "X": scale}


@torch.inference_mode()
def latent_shift(
    model: PerturbationMixin,
    adata: AnnData,
    contrast: Contrast,
    batch_size: int | None = None,
    draws: CellDraws | None = None,
) -> AnnData:
    """scGen-style latent arithmetic: shift cells by the mean latent difference of conditions.

    delta = mean z of the training cells under the target minus under the cells' own
    condition; each cell's z + delta is decoded with its own library size and covariates, but
    under the target where the model takes the condition itself (a batch or covariate).

    Parameters
    ----------
    model
        A trained deltavae model (ZINBVAE or CGMDVAE); ``model.adata`` supplies the means.
    adata
        Cells of one source condition, set up like the training data.
    contrast
        The conditions and, in ``groups_key``, the ``balance_key`` of
        :meth:`PerturbationMixin.predict_perturbation`.
    batch_size
        Cells per minibatch.
    draws
        The generators of the counts (:class:`~deltavae.distributions._draws.CellDraws`, on
        the CPU: the same counts whatever the device and ``batch_size``); ``None``: seeded
        from torch's generator.

    Returns
    -------
    AnnData of expected expression with the cells' obs and obsm, the condition set to the
    target and the source in ``obs["<key>_source"]`` (see
    :meth:`PerturbationMixin.predict_perturbation`); for
    count likelihoods ``layers["counts"]`` holds one draw from the posterior predictive.

    Examples
    --------
    >>> contrast = Contrast.resolve(vae, ctrl, "stim", "condition", "cell_type")  # doctest: +SKIP
    >>> pred = latent_shift(vae, ctrl, contrast)  # doctest: +SKIP
    """
    condition_key, source, target, train_conditions, balance_key = contrast
    train = model.adata
    z_train = model.get_latent_representation(train, batch_size=batch_size)
    groups = None
    is_src, is_tgt = train_conditions == source, train_conditions == target
    if balance_key is not None:  # before any latent is computed
        groups, has = balance_groups(model, balance_key)
        is_src, is_tgt = is_src & has, is_tgt & has
        groups_under_both(groups, is_src, is_tgt, source, target, balance_key)
    means_src = _group_means(z_train[is_src], None if groups is None else groups[is_src])
    means_tgt = _group_means(z_train[is_tgt], None if groups is None else groups[is_tgt])
    both = [g for g in means_src if g in means_tgt]
    src_groups = None if groups is None else groups[is_src]
    tgt_groups = None if groups is None else groups[is_tgt]
    sizes = {  # the training cells each mean reads, under the source and the target
        g: (
            int(is_src.sum() if g is None else (src_groups == g).sum()),
            int(is_tgt.sum() if g is None else (tgt_groups == g).sum()),
        )
        for g in both
    }
    warn_few_cell_shift(sizes, source, target, balance_key)
    delta = np.mean([means_tgt[g] - means_src[g] for g in both], axis=0)
    caller_obs, obsm, uns = adata.obs, adata.obsm, adata.uns  # the labels and columns as given
    given, adata = adata, model._validate_anndata(adata)
    module = model.module  # in eval mode while its loader is read (see _OnDevice)
    shift = torch.as_tensor(delta, dtype=torch.float32, device=module.device)
    floor = None if module.likelihood != "normal" else data_floor(model, adata)  # as translate
    draws = CellDraws() if draws is None else draws

    def drawn(part: dict) -> dict:  # on the host: each cell's counts, its parameters dropped
        counts = translated_counts(part, module.observation, draws)
        kept = {key: part[key] for key in ("x", "moved", "empty") if key in part}
        return kept if counts is None else {**kept, "counts": counts}

    # Brought to the host every FLUSH_BYTES and at the end, not a minibatch at a time.
    gathered = Gathered(drawn)
    under = decoded_under(model.adata_manager.registry, condition_key, target)
    # CGMDVAE's and ZINBVAE's inference can skip their draws, which this read-out replaces.
    skip = {"draw": False} if "draw" in inspect.signature(module.inference).parameters else {}
    for tensors in model._make_data_loader(adata, batch_size=batch_size):
        inference = module.inference(**module._get_inference_input(tensors), **skip)
        inference["z"] = inference["qz"].loc + shift
        if inference.get("ql") is not None:  # a latent library: its mean, not a random draw
            inference["library"] = inference["ql"].loc
        for field, column, code in under:  # the model takes the condition: the target's
            tensors = {**tensors, field: tensors[field].clone()}
            tensors[field][:, 0 if column is None else column] = code
        px = module.generative(**module._get_generative_input(tensors, inference))["px"]
        counted = module.likelihood in ("zinb", "nb")  # cell by cell: theta as mu's shape
        params = count_parameters(px, module.likelihood) if counted else {}
        gathered.add(
            x=px.mean if floor is None else px.mean.clamp(min=floor),
            # the other condition keys kept
            moved=tensors.get(REGISTRY_KEYS.CAT_COVS_KEY),
            empty=~tensors[REGISTRY_KEYS.X_KEY].ne(0).any(-1),  # cells of no data
            **params,
        )
    got = gathered.result()
    warn_empty_cells(model, got["empty"].numpy(), adata.obs_names, "latent_shift", given)
    if "moved" in got:
        call = "predict_perturbation(method='latent_shift')"
        warn_untrained_combinations(model, got["moved"].numpy(), call)
    x = got["x"].numpy()
    out = predicted_cells(model, caller_obs, obsm, x, adata.var, {condition_key: target}, uns)
    if "counts" in got:
        out.layers["counts"] = got["counts"].numpy().astype(np.float32)
    describe_prediction(out, model, "latent_shift", target)
    return out
