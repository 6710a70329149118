"""Transfer learning: scArches-style query mapping and latent-arithmetic perturbation prediction.

scvi-tools' :class:`~scvi.model.base.ArchesMixin` registers the query against the reference's
setup (adding new condition categories), builds the query model and loads the reference's
weights. Three things it does not do right for deltavae's Pyro modules are fixed here:

* its freezing hooks let every condition column of a first layer learn, reference categories
  included, and leave the parameters of blocks it does not know by name (CGMDVAE's cluster
  head and mixture prior) with ``requires_grad`` set by a key pattern; here every reference
  weight is frozen and only the columns of the new categories learn;
* with several covariates, its padding appends the new columns at the end of a weight, so the
  columns of a later covariate shift; here each covariate's block is rebuilt in place;
* BatchNorm in training mode normalises with minibatch statistics, which cancels exactly the
  constant offset a query made of one new category gets from its new columns (their gradient
  is zero). The query model's BatchNorm layers therefore always use the reference's running
  statistics.
"""

from __future__ import annotations

import logging
import os
import warnings

import numpy as np
import pandas as pd
import pyro
import torch
import torch.nn.functional as F
from anndata import AnnData
from scipy import sparse
from scipy.special import softmax
from scvi import REGISTRY_KEYS
from scvi.model.base import ArchesMixin
from scvi.nn import FCLayers
from torch import nn

from ._base import read_saved

logger = logging.getLogger(__name__)

# obs columns a query must carry when the reference registered them.
_QUERY_KEY_ARGS = ("condition_key", "batch_key", "categorical_covariate_keys", "size_factor_key")
# Pyro warns once per frozen parameter that it leaves out of the param store; for a query model
# that is the point of freezing.
warnings.filterwarnings(
    "ignore",
    message=r".*was not registered in the param store because requires_grad=False",
    category=UserWarning,
)


class _ReferenceBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm that normalises with the reference's running statistics in training too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
        )


def _reference_state(cls, reference) -> tuple[dict, np.ndarray, dict]:
    """attr_dict, gene names and state dict of a reference model or saved directory."""
    if isinstance(reference, str | os.PathLike):
        attr_dict, var_names, state_dict = read_saved(
            cls, reference, what="reference model", use="load_query_data"
        )
        where = repr(os.fspath(reference))
    elif isinstance(reference, cls):
        attr_dict = {
            "registry_": reference.registry_,
            "deltavae_version_": getattr(reference, "deltavae_version_", None),
            "is_trained_": reference.is_trained_,
        }
        var_names = reference.get_var_names()
        state_dict = {k: v.detach().cpu().clone() for k, v in reference.module.state_dict().items()}
        where = "the reference model"
    else:
        raise TypeError(
            f"reference_model must be a trained {cls.__name__} or the directory it was saved to; "
            f"got {type(reference).__name__}."
        )
    if not attr_dict.get("is_trained_", False):
        raise ValueError(
            f"{where} is untrained; train the reference (reference.train()) before mapping a "
            "query onto it."
        )
    return attr_dict, np.asarray(var_names), state_dict


def align_query_genes(
    adata: AnnData, reference_genes, min_gene_overlap: float = 0.5, layer: str | None = None
) -> AnnData:
    """The query's genes in the reference's order, missing genes as zeros.

    Parameters
    ----------
    adata
        Query cells.
    reference_genes
        The reference model's gene names, in its order.
    min_gene_overlap
        Smallest fraction of the reference's genes the query must have.
    layer
        The layer holding the data (it is aligned too); ``None`` for ``X``.

    Returns
    -------
    ``adata`` itself when its genes already match, else a new AnnData (X, the layer, obs and
    obsm kept; extra genes dropped).

    Examples
    --------
    >>> import anndata as ad, numpy as np
    >>> q = ad.AnnData(np.ones((2, 2)))
    >>> q.var_names = ["b", "a"]
    >>> list(align_query_genes(q, ["a", "b"]).var_names)
    ['a', 'b']
    """
    genes = pd.Index(np.asarray(reference_genes).astype(str))
    query = pd.Index(adata.var_names.astype(str))
    if query.equals(genes):
        return adata
    if query.has_duplicates:
        dup = query[query.duplicated()].unique()[:5].tolist()
        raise ValueError(f"The query has duplicated gene names (e.g. {dup}); make them unique.")
    shared = genes.isin(query)
    fraction = float(shared.mean())
    if fraction < min_gene_overlap:
        raise ValueError(
            f"The query shares {int(shared.sum())} of the reference's {len(genes)} genes "
            f"({fraction:.0%}); at least {min_gene_overlap:.0%} are needed (min_gene_overlap). "
            "Check that both use the same gene identifiers (symbols vs Ensembl IDs)."
        )
    n_missing = int((~shared).sum())
    if n_missing:
        warnings.warn(
            f"{n_missing} of the reference's {len(genes)} genes are missing from the query; "
            "they are filled with zeros.",
            UserWarning,
            stacklevel=3,
        )
    else:
        logger.info("Reordering the query's genes to the reference's order.")
    source = query.get_indexer(genes)

    def take(matrix):
        matrix = sparse.csr_matrix(matrix)
        out = matrix[:, np.maximum(source, 0)].tolil()
        out[:, np.flatnonzero(source < 0)] = 0
        return out.tocsr().astype(matrix.dtype)

    aligned = AnnData(
        X=take(adata.X) if adata.X is not None else None,
        obs=adata.obs.copy(),
        obsm={k: v.copy() for k, v in adata.obsm.items()},
        var=pd.DataFrame(index=genes),
    )
    if layer is not None:
        aligned.layers[layer] = take(adata.layers[layer])
    return aligned


def _check_query_obs(adata: AnnData, setup_args: dict, where: str) -> None:
    for arg in _QUERY_KEY_ARGS:
        value = setup_args.get(arg)
        for key in [value] if isinstance(value, str) else list(value or []):
            if key not in adata.obs:
                raise KeyError(
                    f"The query's obs lacks {key!r}, the reference's {arg}. It is not filled in "
                    f"(refused): add the column, e.g. query.obs[{key!r}] = 'query_batch', to map "
                    f"the query as a new {arg.replace('_key', '')} of {where}."
                )
    labels_key = setup_args.get("labels_key")
    if labels_key is not None and labels_key in adata.obs:
        unlabeled = setup_args.get("unlabeled_category") or "Unknown"
        known = set(np.asarray(setup_args.get("_reference_labels", []), dtype=str)) | {unlabeled}
        new = sorted(set(adata.obs[labels_key].astype(str)) - known)
        if new:
            raise ValueError(
                f"The query's obs[{labels_key!r}] holds labels the reference does not know: "
                f"{new[:5]}. Set them to {unlabeled!r} (unlabelled) to have them predicted."
            )


def _covariate_sizes(registry: dict, without: dict | None = None) -> list[int]:
    """Categories per covariate, in the order deltavae's networks receive them; ``without``
    ({obs key: categories}) are not counted."""
    without = without or {}
    fields = registry["field_registries"]
    sizes = []
    cat = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
    if REGISTRY_KEYS.BATCH_KEY in fields:
        batch = fields[REGISTRY_KEYS.BATCH_KEY]
        key = batch["state_registry"].get("original_key")
        # CGMDVAE's batch field mirrors its first condition for scvi-tools' expression API;
        # only the condition field reaches its networks.
        if key not in cat.get("field_keys", []):
            sizes.append(int(batch["summary_stats"]["n_batch"]) - len(without.get(key, [])))
    for key, n in zip(cat.get("field_keys", []), cat.get("n_cats_per_key", []), strict=True):
        sizes.append(int(n) - len(without.get(key, [])))
    return sizes


def _column_masks(ref_sizes: list[int], new_sizes: list[int]):
    """For the one-hot block of an FCLayers: (source column in the reference or -1, trainable)."""
    source, trainable, ref_start = [], [], 0
    for n_ref, n_new in zip(ref_sizes, new_sizes, strict=True):
        ref_cols = n_ref if n_ref > 1 else 0
        if n_new <= 1:
            ref_start += ref_cols
            continue
        for j in range(n_new):
            # A covariate with one reference category had no columns: its column stays 0.
            source.append(ref_start + j if ref_cols and j < n_ref else -1)
            trainable.append(j >= n_ref)
        ref_start += ref_cols
    return np.array(source, dtype=int), np.array(trainable, dtype=bool)


def _mask_hook(mask: torch.Tensor):
    def hook(grad):
        return grad * mask

    return hook


def _covariate_layers(module: nn.Module, n_covariates: int):
    """(parameter name, Linear, FCLayers, number of non-covariate inputs) of every layer that
    receives the one-hot covariates."""
    for name, fc in module.named_modules():
        if not isinstance(fc, FCLayers):
            continue
        n_cov = sum(fc.n_cat_list)
        if n_cov == 0 or len(fc.n_cat_list) != n_covariates:
            continue
        for i, layers in enumerate(fc.fc_layers):
            if fc.inject_into_layer(i):
                linear = layers[0]
                key = f"{name}.fc_layers.Layer {i}.0.weight"
                yield key, linear, fc, linear.weight.shape[1] - n_cov


def _freeze_for_query(module: nn.Module, ref_state: dict, ref_sizes, new_sizes) -> list[str]:
    """Load the reference's condition columns, freeze all else; names of learning parameters."""
    source, trainable = _column_masks(ref_sizes, new_sizes)
    for key, linear, _, n_in in _covariate_layers(module, len(new_sizes)):
        w_ref = ref_state[key].to(linear.weight.device)
        mean_ref = w_ref[:, n_in:].mean(1, keepdim=True) if w_ref.shape[1] > n_in else None
        with torch.no_grad():
            linear.weight[:, :n_in] = w_ref[:, :n_in]
            for c, src in enumerate(source):
                if src >= 0:
                    linear.weight[:, n_in + c] = w_ref[:, n_in + src]
                elif trainable[c] and mean_ref is not None:
                    # A new category starts as the average reference category.
                    linear.weight[:, n_in + c] = mean_ref[:, 0]
                else:
                    linear.weight[:, n_in + c] = 0.0
    return _restrict_learning(module, ref_sizes, new_sizes)


def _restrict_learning(module: nn.Module, ref_sizes, new_sizes) -> list[str]:
    """Freeze every parameter except the new categories' columns (gradient masks) and keep
    BatchNorm on the reference's statistics; the names of the parameters that still learn.
    Applied when a query model is built and again when a saved one is loaded."""
    for p in module.parameters():
        p.requires_grad_(False)
    for fc in module.modules():
        if isinstance(fc, FCLayers):
            for h in getattr(fc, "hooks", []):
                h.remove()
            fc.hooks = []
    _, trainable = _column_masks(ref_sizes, new_sizes)
    learning = []
    layers = _covariate_layers(module, len(new_sizes)) if trainable.any() else []
    for key, linear, fc, n_in in layers:
        mask = torch.zeros_like(linear.weight)
        mask[:, n_in:][:, torch.as_tensor(trainable)] = 1.0
        linear.weight.requires_grad_(True)
        fc.hooks.append(linear.weight.register_hook(_mask_hook(mask)))
        learning.append(f"{key}[new categories]")
    old_hook = module.__dict__.pop("_px_r_hook", None)
    if old_hook is not None:
        old_hook.remove()
    px_r = getattr(module, "px_r", None)
    if px_r is not None and px_r.dim() == 2 and new_sizes and px_r.shape[1] == new_sizes[0]:
        # Per-batch dispersion ("gene-batch"): the new batches' columns learn.
        new_cols = torch.arange(px_r.shape[1], device=px_r.device) >= ref_sizes[0]
        if new_cols.any():
            px_r.requires_grad_(True)
            handle = px_r.register_hook(_mask_hook(new_cols.to(px_r.dtype).expand_as(px_r)))
            module._px_r_hook = handle
            learning.append("px_r[new batches]")
    for m in module.modules():
        if type(m) is nn.BatchNorm1d:
            m.__class__ = _ReferenceBatchNorm1d
    return learning


class QueryMappingMixin(ArchesMixin):
    """scArches query mapping, label transfer support and perturbation prediction.

    Mixed into :class:`~deltavae.model.ZINBVAE` and :class:`~deltavae.model.CGMDVAE` in place of
    scvi-tools' :class:`~scvi.model.base.ArchesMixin`, which it wraps.
    """

    @property
    def is_query_model(self) -> bool:
        """Whether the model was built by :meth:`load_query_data`."""
        return getattr(self, "query_mapping_", None) is not None

    @classmethod
    def load_query_data(
        cls,
        adata: AnnData,
        reference_model,
        min_gene_overlap: float = 0.5,
        accelerator: str = "auto",
        device: int | str = "auto",
    ):
        """Map query cells onto a trained reference, scArches-style.

        The query is registered with the reference's setup; new condition (batch, covariate)
        categories are added. The query model starts from the reference's weights, all frozen
        except the weights of the new categories' one-hot columns (and, for a per-batch
        dispersion, the new batches' dispersions); BatchNorm keeps the reference's statistics.
        Training the query model then trains on the query alone and leaves the reference's
        mapping of its own conditions unchanged. A query model saved and loaded again keeps
        the same frozen weights.

        Parameters
        ----------
        adata
            Query cells with the data where the reference had them (``X`` or the same layer)
            and every condition column the reference registered. A query without the
            reference's labels column, or with unlabelled cells, is fine.
        reference_model
            A trained model of this class, or the directory it was saved to.
        min_gene_overlap
            Smallest fraction of the reference's genes the query must have. Genes are matched
            by name: a reordered query is aligned, missing genes are filled with zeros (with a
            warning that gives their number), extra genes are dropped.
        accelerator, device
            Where the query model lives.

        Returns
        -------
        The query model; ``model.adata`` is the query (a gene-aligned copy when alignment was
        needed). ``model.query_mapping_`` records the new categories and the missing genes.

        Examples
        --------
        >>> q = dv.model.CGMDVAE.load_query_data(query, "reference_model/")  # doctest: +SKIP
        >>> q.train(max_epochs=50)  # doctest: +SKIP
        >>> q.predict_labels().head()  # doctest: +SKIP
        """
        attr_dict, genes, ref_state = _reference_state(cls, reference_model)
        registry = attr_dict["registry_"]
        setup_args = dict(registry["setup_args"])
        if setup_args.get("labels_key") is not None:
            mapping = registry["field_registries"][REGISTRY_KEYS.LABELS_KEY]["state_registry"]
            setup_args["_reference_labels"] = list(mapping["categorical_mapping"])
        where = f"the {cls.__name__} reference"
        _check_query_obs(adata, setup_args, where)
        n_missing = int((~pd.Index(genes).isin(adata.var_names)).sum())
        aligned = align_query_genes(adata, genes, min_gene_overlap, setup_args.get("layer"))
        pyro.clear_param_store()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*Missing labels key.*")
            model = super().load_query_data(
                aligned, reference_model, accelerator=accelerator, device=device
            )
        ref_sizes, new_sizes = _covariate_sizes(registry), _covariate_sizes(model.registry_)
        learning = _freeze_for_query(model.module, ref_state, ref_sizes, new_sizes)
        # Eval mode (as scArches leaves it): dropout is off while the query trains, so the few
        # new weights see the reference's deterministic network.
        model.module.eval()
        new_categories = {}
        for key, mapping in _category_mappings(model.registry_).items():
            known = set(_category_mappings(registry).get(key, []))
            new_categories[key] = [str(v) for v in mapping if v not in known]
        model.query_mapping_ = {
            "n_genes_missing": n_missing,
            "new_categories": new_categories,
            "learning_parameters": learning,
            "reference_sizes": ref_sizes,
        }
        if not learning:
            logger.warning(
                "The query adds no new condition category, so nothing is left to learn: the "
                "query model maps cells exactly as the reference does."
            )
        logger.info("Query mapped; new categories %s; learning %s", new_categories, learning)
        return model

    def _restore_after_load(self) -> None:
        """A saved query model learns, after loading, only what it learned before saving."""
        if not self.is_query_model:
            return
        new_sizes = _covariate_sizes(self.registry_)
        ref_sizes = self.query_mapping_.get("reference_sizes")
        if ref_sizes is None:  # saved before the sizes were recorded
            ref_sizes = _covariate_sizes(self.registry_, self.query_mapping_["new_categories"])
        learning = _restrict_learning(self.module, ref_sizes, new_sizes)
        self.query_mapping_["learning_parameters"] = learning

    # ----------------------------------------------------------------- perturbation
    def predict_perturbation(
        self,
        adata: AnnData,
        target_condition: str,
        method: str = "translate",
        condition_key: str | None = None,
        balance_key: str | None = None,
        batch_size: int | None = None,
        residual: bool = False,
        similarity: str = "expression",
    ) -> AnnData:
        """Expression of the given cells under another condition.

        Parameters
        ----------
        adata
            Cells of one source condition, set up like the training data.
        target_condition
            The condition to predict.
        method
            ``"translate"``: encode each cell and decode it under the target condition (a
            conditional model, see :meth:`deltavae.model.CGMDVAE.translate`).
            ``"latent_shift"``: scGen's latent arithmetic, z + mean(z | target) - mean(z |
            source) over the training cells, decoded at each cell's own covariates and library.
            ``"nearest_response"``: each cell's data plus the change observed between the
            conditions in the training groups (``balance_key``) most similar to it, weighted
            by each group's posterior under isotropic Gaussians on 50 principal components of
            the data (``similarity="expression"``) or on z (``"latent"``); on log-normalized
            data for count models. For a cell type never seen under the target condition the
            most accurate of the three on Kang IFN-beta (benchmarks/README.md, Numbers
            behind the defaults, D7).
        condition_key
            obs column of the condition (``latent_shift``); default the model's only condition
            covariate.
        balance_key
            obs column of groups, e.g. cell type. ``latent_shift``: average the condition
            means over the groups, each weighted equally, as scGen balances cell types; only
            groups seen under both conditions count. ``nearest_response``: the groups whose
            responses are transferred (default the model's labels or clusters).
        batch_size
            Cells per minibatch.
        residual
            ``translate`` with ``likelihood="normal"``: add the decoded change to each cell's
            observed data (see :meth:`deltavae.model.CGMDVAE.translate`).
        similarity
            ``nearest_response``: ``"expression"`` (principal components of the data) or
            ``"latent"`` (z), the space in which the most similar groups are found.

        Returns
        -------
        AnnData of expected expression (``X``), for count likelihoods one posterior-predictive
        draw of counts in ``layers["counts"]`` (normalize it like the real cells before
        scoring, e.g. with :func:`deltavae.metrics.log_normalize`), the cells' obs with the
        condition set to the target, and the genes.

        Examples
        --------
        >>> ctrl = adata[adata.obs.condition == "ctrl"]  # doctest: +SKIP
        >>> pred = g.predict_perturbation(ctrl, "stim", method="latent_shift")  # doctest: +SKIP
        >>> dv.metrics.mean_expression_r2(  # doctest: +SKIP
        ...     dv.metrics.log_normalize(pred.layers["counts"]), dv.metrics.log_normalize(stim.X)
        ... )
        """
        if similarity != "expression" and method != "nearest_response":
            raise ValueError("similarity applies to method='nearest_response' only.")
        if method == "translate":
            if not hasattr(self, "translate"):
                raise ValueError(
                    f"method='translate' needs a conditional model such as CGMDVAE; "
                    f"{type(self).__name__} has none. Use method='latent_shift'."
                )
            return self.translate(adata, target_condition, batch_size=batch_size, residual=residual)
        if method not in ("latent_shift", "nearest_response"):
            raise ValueError(
                f"method must be 'translate', 'latent_shift' or 'nearest_response', got {method!r}."
            )
        if residual:
            raise ValueError("residual=True applies to method='translate' only.")
        if method == "nearest_response":
            return nearest_response(
                self, adata, target_condition, condition_key, balance_key, batch_size, similarity
            )
        return latent_shift(self, adata, target_condition, condition_key, balance_key, batch_size)


def _category_mappings(registry: dict) -> dict[str, list]:
    fields = registry["field_registries"]
    out = {}
    batch = fields.get(REGISTRY_KEYS.BATCH_KEY, {}).get("state_registry", {})
    if batch.get("original_key") not in (None, "_scvi_batch"):
        out[batch["original_key"]] = list(batch["categorical_mapping"])
    cat = fields.get(REGISTRY_KEYS.CAT_COVS_KEY, {}).get("state_registry", {})
    for key, mapping in cat.get("mappings", {}).items():
        out[key] = list(mapping)
    return out


def _default_condition_key(model) -> str:
    keys = list(_category_mappings(model.registry_))
    if len(keys) != 1:
        raise ValueError(
            f"Pass condition_key: the model has {len(keys)} condition covariates ({keys})."
        )
    return keys[0]


def _source_and_target(model, adata, target_condition, condition_key, groups_key):
    """Check keys and conditions; the condition key, source, target, training conditions."""
    condition_key = condition_key or _default_condition_key(model)
    train = model.adata
    for name, frame in (("the training AnnData", train), ("adata", adata)):
        if condition_key not in frame.obs:
            raise KeyError(f"condition_key={condition_key!r} is not a column of {name}.obs.")
        if groups_key is not None and groups_key not in frame.obs:
            raise KeyError(f"balance_key={groups_key!r} is not a column of {name}.obs.")
    sources = adata.obs[condition_key].astype(str).unique()
    if len(sources) != 1:
        raise ValueError(
            f"adata must hold cells of one source condition; obs[{condition_key!r}] has "
            f"{sorted(sources)}."
        )
    source, target = sources[0], str(target_condition)
    train_conditions = train.obs[condition_key].astype(str).to_numpy()
    for value in (source, target):
        if value not in set(train_conditions):
            raise ValueError(
                f"Condition {condition_key}={value!r} was never seen in training; known: "
                f"{sorted(set(train_conditions))}."
            )
    return condition_key, source, target, train_conditions


def _group_means(z: np.ndarray, groups: np.ndarray | None) -> dict:
    if groups is None:
        return {None: z.mean(0)}
    return {g: z[groups == g].mean(0) for g in np.unique(groups)}


@torch.inference_mode()
def latent_shift(
    model,
    adata: AnnData,
    target_condition: str,
    condition_key: str | None = None,
    balance_key: str | None = None,
    batch_size: int | None = None,
) -> AnnData:
    """scGen-style latent arithmetic: shift cells by the mean latent difference of conditions.

    delta = mean z of the training cells under ``target_condition`` minus under the cells'
    own (source) condition; each cell's posterior mean z + delta is decoded with the cell's
    own covariates and library size.

    Parameters
    ----------
    model
        A trained deltavae model (ZINBVAE or CGMDVAE); ``model.adata`` supplies the means.
    adata
        Cells of one source condition, set up like the training data.
    target_condition, condition_key, balance_key, batch_size
        As in :meth:`QueryMappingMixin.predict_perturbation`.

    Returns
    -------
    AnnData of expected expression with the cells' obs, the condition set to the target; for
    count likelihoods ``layers["counts"]`` holds one draw from the posterior predictive.

    Examples
    --------
    >>> pred = latent_shift(vae, ctrl_cd4, "stim", "condition", "cell_type")  # doctest: +SKIP
    """
    condition_key, source, target, train_conditions = _source_and_target(
        model, adata, target_condition, condition_key, balance_key
    )
    train = model.adata
    z_train = model.get_latent_representation(train, batch_size=batch_size)
    groups = None if balance_key is None else train.obs[balance_key].astype(str).to_numpy()
    is_src, is_tgt = train_conditions == source, train_conditions == target
    means_src = _group_means(z_train[is_src], None if groups is None else groups[is_src])
    means_tgt = _group_means(z_train[is_tgt], None if groups is None else groups[is_tgt])
    both = [g for g in means_src if g in means_tgt]
    delta = np.mean([means_tgt[g] - means_src[g] for g in both], axis=0)
    adata = model._validate_anndata(adata)
    module = model.module.eval()
    shift = torch.as_tensor(delta, dtype=torch.float32, device=module.device)
    outs, counts = [], []
    for tensors in model._make_data_loader(adata, batch_size=batch_size):
        inference = module.inference(**module._get_inference_input(tensors))
        inference["z"] = inference["qz"].loc + shift
        px = module.generative(**module._get_generative_input(tensors, inference))["px"]
        outs.append(px.mean.cpu())
        if module.likelihood in ("zinb", "nb"):
            counts.append(px.sample().cpu())
    obs = adata.obs.loc[:, [k for k in adata.obs if not k.startswith("_scvi")]].copy()
    obs[condition_key] = target
    out = AnnData(X=torch.cat(outs).numpy().astype(np.float32), obs=obs, var=adata.var.copy())
    if counts:
        out.layers["counts"] = torch.cat(counts).numpy().astype(np.float32)
    return out


def _additive_data(model, adata: AnnData) -> np.ndarray:
    """The data the model was set up on (its layer), dense float32; counts log-normalized."""
    from ..metrics import log_normalize

    x = model.get_anndata_manager(adata, required=True).get_from_registry(REGISTRY_KEYS.X_KEY)
    if model.module.likelihood in ("zinb", "nb"):
        return log_normalize(x).astype(np.float32)
    return np.asarray(x.toarray() if sparse.issparse(x) else x, dtype=np.float32)


_N_PCS = 50
SIMILARITIES = ("expression", "latent")


def _similarity_coordinates(model, train, adata, x_train, x_query, similarity, batch_size):
    """Coordinates in which the nearest groups are sought, for the training and given cells."""
    if similarity == "latent":
        return (
            model.get_latent_representation(train, batch_size=batch_size),
            model.get_latent_representation(adata, batch_size=batch_size),
        )
    from sklearn.decomposition import PCA

    n_pcs = min(_N_PCS, x_train.shape[0] - 1, x_train.shape[1] - 1)
    pca = PCA(n_pcs, random_state=0).fit(x_train)
    return pca.transform(x_train), pca.transform(x_query)


@torch.inference_mode()
def nearest_response(
    model,
    adata: AnnData,
    target_condition: str,
    condition_key: str | None = None,
    groups_key: str | None = None,
    batch_size: int | None = None,
    similarity: str = "expression",
) -> AnnData:
    """Add to each cell the observed response of the training groups most similar to it.

    For every group of the training cells (cell type, label or cluster) seen under both the
    source and the target condition, the response is the difference of its mean data under the
    two conditions. Each cell gets a weighted mean of these responses, weighted by the
    posterior probability of each group given the cell's coordinates under isotropic Gaussians
    around the groups' source-condition centres (the groups' mean variance per dimension,
    equal priors). A cell of a group observed under both conditions gets its own group's
    response; a cell of a group never seen under the target condition (a held-out cell type)
    gets the response of the groups it resembles most. The prediction is the cell's data plus
    that response, floored at the training data's minimum. The data must be additive: with
    ``likelihood="normal"`` the model's own data (e.g. log-normalized expression); with a
    count likelihood, the counts log-normalized by :func:`deltavae.metrics.log_normalize`
    (``log1p`` of counts per 10,000 over the model's genes), the scale of the prediction.

    Parameters
    ----------
    model
        A trained deltavae model (ZINBVAE, or CGMDVAE with a count or normal likelihood).
    adata
        Cells of one source condition, set up like the training data.
    target_condition, condition_key, batch_size
        As in :meth:`QueryMappingMixin.predict_perturbation`.
    groups_key
        obs column of the training AnnData holding the groups; default the model's labels
        (``labels_key``) where known and its predicted clusters elsewhere.
    similarity
        ``"expression"``: coordinates are the first 50 principal components of the training
        data (the model's layer). ``"latent"``: the model's latent z (posterior mean). On Kang
        IFN-beta with held-out cell types, expression picks the biologically closest types
        (CD8 T for CD4 T, FCGR3A+ for CD14+ monocytes) and scores higher.

    Returns
    -------
    AnnData of predicted data (log-normalized for count models) with the cells' obs, the
    condition set to the target, and in ``obsm["response_weights"]`` each cell's weight on
    every group (``uns["response_groups"]`` names them).

    Examples
    --------
    >>> pred = nearest_response(g, ctrl_cd14, "stim", "condition", "cell_type")  # doctest: +SKIP
    """
    if model.module.likelihood not in ("normal", "zinb", "nb"):
        raise ValueError(
            "method='nearest_response' adds observed responses to the data and needs counts "
            "or log-normalized data (likelihood 'zinb', 'nb' or 'normal'); this model's "
            f"likelihood is {model.module.likelihood!r}."
        )
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}.")
    model._check_if_trained(warn=False)
    condition_key, source, target, train_conditions = _source_and_target(
        model, adata, target_condition, condition_key, groups_key
    )
    train = model.adata
    if groups_key is not None:
        groups = train.obs[groups_key].astype(str).to_numpy()
    elif not hasattr(model, "predict_clusters"):
        raise ValueError(
            f"{type(model).__name__} has no labels or clusters: pass balance_key, the obs "
            "column of the groups (e.g. cell type) whose responses are transferred."
        )
    else:  # labels where known, the predicted cluster's name elsewhere
        cluster_names = np.asarray(model.cluster_names, dtype=object)
        groups = cluster_names[model.predict_clusters(train, batch_size=batch_size)]
        if model.label_names:
            labels = train.obs[model.registry_["setup_args"]["labels_key"]].astype(str)
            known = labels.isin(model.label_names).to_numpy()
            groups[known] = labels.to_numpy()[known]
    is_src, is_tgt = train_conditions == source, train_conditions == target
    names = sorted(set(groups[is_src]) & set(groups[is_tgt]))
    if not names:
        raise ValueError(
            f"No group of the training cells is seen under both {source!r} and {target!r}; "
            "there is no observed response to transfer."
        )
    adata = model._validate_anndata(adata)
    x_train, x_query = _additive_data(model, train), _additive_data(model, adata)
    c_train, c_query = _similarity_coordinates(
        model, train, adata, x_train, x_query, similarity, batch_size
    )
    centres, responses, spreads = [], [], []
    for g in names:
        src, tgt = is_src & (groups == g), is_tgt & (groups == g)
        centres.append(c_train[src].mean(0))
        responses.append(x_train[tgt].mean(0) - x_train[src].mean(0))
        spreads.append(((c_train[src] - centres[-1]) ** 2).mean())
    centres, responses = np.stack(centres), np.stack(responses)
    bandwidth = max(float(np.mean(spreads)), 1e-8)
    distances = ((c_query[:, None, :] - centres[None]) ** 2).sum(-1)
    weights = softmax(-0.5 * distances / bandwidth, axis=1)
    predicted = np.maximum(x_query + weights @ responses, x_train.min())
    obs = adata.obs.loc[:, [k for k in adata.obs if not k.startswith("_scvi")]].copy()
    obs[condition_key] = target
    out = AnnData(X=predicted.astype(np.float32), obs=obs, var=adata.var.copy())
    out.obsm["response_weights"] = weights.astype(np.float32)
    out.uns["response_groups"] = list(names)
    return out
