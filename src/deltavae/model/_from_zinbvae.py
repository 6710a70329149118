"""A CGMDVAE started from a trained ZINBVAE (scvi-tools' ``SCANVI.from_scvi_model``).

What carries over: the encoder of z (its trunk and z's mean and variance heads), the count
decoder and the per-gene inverse dispersion, which the two modules build from the same
scvi-tools networks (``Encoder`` and ``GaussianHeads`` share one ``FCLayers`` trunk and
heads of one form; both decode with ``DecoderSCVI``). The ZINBVAE's batch and categorical
covariates become the CGMDVAE's condition keys, in that order, so that each network reads
the same one-hot columns (matched by category name). What is new: w's heads, the cluster
head and the mixture prior, which the mixture start places on clusters of the pretrained z
before the first step (``CGMDVAE.train``'s ``mixture_init_epoch="auto"``).
"""

from __future__ import annotations

import re

import torch
from scvi.model._utils import get_max_epochs_heuristic

from .._unchanged_on_failure import unchanged_on_failure
from ._genes import _gene_difference
from ._init_keywords import check_passed_on
from ._labels import check_known_categories

#: Sizes and likelihood the weights are of: taken from the ZINBVAE, a different one refused.
INHERITED = ("n_latent", "n_hidden", "n_layers", "likelihood")
#: ZINBVAE's parameter name prefix -> CGMDVAE's (None: not carried over).
_RENAMES = (
    ("z_encoder.encoder.", "encoder.trunk."),
    ("z_encoder.mean_encoder.", "encoder.mean.z."),
    ("z_encoder.var_encoder.", "encoder.log_var.z."),
    ("decoder.", "decoder."),
    ("px_r", "px_r"),
)
#: The linear map of an FCLayers layer: its last columns read the covariates' one-hot codes.
_INJECTED = re.compile(r"fc_layers\.Layer \d+\.0\.weight$")


def check_zinbvae(zinbvae, kwargs: dict) -> dict:
    """The CGMDVAE constructor's sizes read from a trained ``zinbvae``, after refusing one
    the CGMDVAE cannot start from and keyword arguments that contradict it."""
    from ._zinbvae import ZINBVAE

    if not isinstance(zinbvae, ZINBVAE):
        raise TypeError(
            f"from_zinbvae starts from a trained deltavae.model.ZINBVAE; got "
            f"{type(zinbvae).__name__}. Train one (dv.model.ZINBVAE(adata).train()), or build "
            "CGMDVAE(adata) to train from scratch."
        )
    if not zinbvae.is_trained_:
        raise ValueError(
            "The ZINBVAE has not been trained: its weights are random and give the CGMDVAE "
            "nothing to start from. Train it first (vae.train()), or build CGMDVAE(adata) to "
            "train from scratch."
        )
    if zinbvae.is_query_model:
        raise ValueError(
            "The ZINBVAE is a query model (load_query_data): start the CGMDVAE from its "
            "reference model, which the query's batches extend."
        )
    params = zinbvae.init_params_
    own = {**params.get("non_kwargs", {}), **params.get("kwargs", {})}
    setup = zinbvae.registry_["setup_args"]
    if setup.get("size_factor_key") is not None:
        raise ValueError(
            f"The ZINBVAE reads size factors (size_factor_key={setup['size_factor_key']!r}): "
            "its decoder's expression is not a share of each cell's counts, where the "
            "CGMDVAE's is (it reads each cell's observed library). Train a ZINBVAE set up "
            "without size_factor_key to start from."
        )
    if own.get("dispersion", "gene") != "gene":
        raise ValueError(
            f"The ZINBVAE learned dispersion={own['dispersion']!r} (one per gene and batch); "
            "the CGMDVAE learns one per gene. Train a ZINBVAE with dispersion='gene' (the "
            "default) to start from."
        )
    for name in INHERITED:
        if name in kwargs and kwargs[name] != own[name]:
            raise ValueError(
                f"{name}={kwargs[name]!r} differs from the ZINBVAE's {name}={own[name]!r}: "
                f"the weights carried over are of the ZINBVAE's {name}. Leave {name} out (it "
                f"is taken from the ZINBVAE), or train a ZINBVAE with {name}={kwargs[name]!r} "
                "to start from."
            )
    sizes = {name: own[name] for name in INHERITED}
    sizes["dropout_rate"] = kwargs.get("dropout_rate", own["dropout_rate"])
    return sizes


def condition_keys(zinbvae) -> list[str] | None:
    """The ZINBVAE's batch key and categorical covariates, in the order its networks read
    them: the CGMDVAE's condition keys."""
    setup = zinbvae.registry_["setup_args"]
    keys = [setup["batch_key"]] if setup.get("batch_key") is not None else []
    keys += list(setup.get("categorical_covariate_keys") or [])
    return keys or None


def check_same_genes(adata, zinbvae) -> None:
    """``adata`` holds the ZINBVAE's training genes, in its order: the carried weights read
    and write genes by position."""
    genes = zinbvae._training_genes()
    given = adata.var_names.astype(str)
    if genes is not None and given.equals(genes):
        return
    raise ValueError(
        f"adata's genes differ from the ZINBVAE's {len(genes)} genes: "
        f"{_gene_difference(genes, given)}. The CGMDVAE reads the ZINBVAE's "
        "genes in its order; pass adata[:, vae.adata.var_names].copy() (vae: the ZINBVAE), "
        "if adata holds them all."
    )


def _blocks(registry: dict, keys: list[str]) -> list[tuple[str, list[str]]]:
    """``(obs key, category names)`` of the registered covariates ``keys`` (the registry's
    field names), in the order a network reads their one-hot codes."""
    fields, out = registry["field_registries"], []
    for key in keys:
        state = fields.get(key, {}).get("state_registry", {})
        if "categorical_mapping" in state:
            out.append((state["original_key"], [str(c) for c in state["categorical_mapping"]]))
        for name in state.get("field_keys", []):
            out.append((name, [str(c) for c in state["mappings"][name]]))
    return out


def _covariate_columns(new_blocks, old_blocks) -> tuple[list[int | None], int]:
    """For each one-hot column of the new network, the old network's column of the same
    covariate and category (None where it had none), and the old network's column count.
    A covariate of one category has no column (scvi-tools' FCLayers leaves it out)."""
    old, width = {}, 0
    for key, names in old_blocks:
        if len(names) > 1:
            old.update({(key, name): width + i for i, name in enumerate(names)})
            width += len(names)
    columns = [old.get((key, n)) for key, names in new_blocks if len(names) > 1 for n in names]
    return columns, width


def _remap(weight: torch.Tensor, columns: list[int | None], old_width: int) -> torch.Tensor:
    """A linear map's weight with its covariate columns (the last ``old_width``) put in the
    new network's order; a column the old network lacked starts at 0 (no effect)."""
    n_features = weight.shape[1] - old_width
    parts = [weight[:, :n_features]]
    zeros = torch.zeros_like(weight[:, :1])
    parts += [zeros if j is None else weight[:, n_features + j : n_features + j + 1]
              for j in columns]  # fmt: skip
    return torch.cat(parts, dim=1)


def carry_weights(zinbvae, model) -> list[str]:
    """Copy the ZINBVAE's encoder of z, decoder and dispersion into ``model``'s module (no
    tensor shared); returns the CGMDVAE's parameter names set."""
    old_state = zinbvae.module.state_dict()
    state = model.module.state_dict()
    covariates = _blocks(model.registry_, ["extra_categorical_covs"])
    old_covariates = _blocks(zinbvae.registry_, ["batch", "extra_categorical_covs"])
    encodes = zinbvae.init_params_.get("non_kwargs", {}).get("encode_covariates", True)
    decoder_map = _covariate_columns(covariates, old_covariates)
    encoder_map = decoder_map if encodes else _covariate_columns(covariates, [])
    carried = []
    for name, tensor in old_state.items():
        target = next((new + name[len(old):] for old, new in _RENAMES if name.startswith(old)),
                      None)  # fmt: skip
        if target is None:  # the latent library's encoder and prior: the CGMDVAE has none
            continue
        if _INJECTED.search(name):
            columns, width = encoder_map if name.startswith("z_encoder.") else decoder_map
            tensor = _remap(tensor, columns, width)
        if tensor.shape != state[target].shape:  # a size check missed: never silently
            raise RuntimeError(
                f"{name} {tuple(tensor.shape)} does not fit {target} "
                f"{tuple(state[target].shape)}; please report this."
            )
        state[target] = tensor.detach().clone()
        carried.append(target)
    model.module.load_state_dict(state)
    return carried


#: Default epochs of a model started from a ZINBVAE, on its first ``train``: restore_best
#: kept epochs 1, 9 and 8 of 400 on PBMC 3k, and 20 epochs gave the lymph node's 400-epoch
#: clusters on seeds 0-2 (benchmarks/README.md, CGMDVAE quality; SCANVI after
#: from_scvi_model likewise trains a few epochs).
PRETRAINED_EPOCHS = 20


def just_started(model) -> bool:
    """Started from a ZINBVAE and not trained since: not a query model, which carries its
    reference's ``pretrained_from_`` but trains as any query."""
    return model.pretrained_from_ is not None and not model.is_trained_ and not model.is_query_model


def default_max_epochs(model) -> int:
    """``max_epochs=None``: scvi-tools' heuristic from the number of cells (at most 400), and
    at most ``PRETRAINED_EPOCHS`` for a model started from a ZINBVAE and not trained since."""
    epochs = get_max_epochs_heuristic(model.adata.n_obs, epochs_cap=400)
    return min(epochs, PRETRAINED_EPOCHS) if just_started(model) else epochs


def start_due(model) -> bool:
    """Whether ``train``'s "auto" defaults are a first run's: the model has not trained, or
    trained without reaching the mixture start a run planned (``mixture_pending_``: a first
    run of ``max_epochs=1``, an interrupted one), and is no query model."""
    return (not model.is_trained_ or model.mixture_pending_) and not model.is_query_model


def first_mixture_epoch(model, max_epochs: int) -> int | None:
    """``mixture_init_epoch="auto"``: none for a model trained before (or a query model),
    unless its runs ended before the mixture start they planned (``mixture_pending_``); 0
    for one started from a ZINBVAE (its z is the pretrained latent already); else a quarter
    of the epochs."""
    if not start_due(model):
        return None
    if model.pretrained_from_ is not None:
        return 0
    return max(1, max_epochs // 4)


class FromZINBVAEMixin:
    """:meth:`from_zinbvae`, and the training defaults of a CGMDVAE it built."""

    #: ``"ZINBVAE"`` for a model :meth:`from_zinbvae` built (saved with it), else None.
    pretrained_from_: str | None = None
    #: True after a ``train`` call that planned the mixture start ended before it (saved
    #: with the model): the next call with ``mixture_init_epoch="auto"`` starts it and warms
    #: the KL up as a first run does (``_mixture_start.start_kept_pending``).
    mixture_pending_: bool = False

    @classmethod
    def from_zinbvae(
        cls,
        zinbvae,
        unlabeled_category=None,
        labels_key: str | None = None,
        adata=None,
        **cgmdvae_kwargs,
    ):
        """A CGMDVAE started from a trained :class:`~deltavae.model.ZINBVAE`, as scvi-tools'
        ``SCANVI.from_scvi_model`` starts scANVI from scVI.

        The ZINBVAE's encoder of z, count decoder and per-gene dispersion are copied (the
        ZINBVAE is not changed); w's heads, the cluster head and the mixture prior are new.
        The CGMDVAE is set up on the ZINBVAE's AnnData (or ``adata``) with its layer, and
        its batch key and categorical covariates as condition keys, in that order. Its
        ``train`` then places the mixture on clusters of the pretrained z before the first
        step (``mixture_init_epoch="auto"`` is 0) and trains the full ELBO from the start
        (``n_epochs_kl_warmup="auto"`` is none): the ZINBVAE trained its warm-up.

        Parameters
        ----------
        zinbvae
            A trained ZINBVAE (an untrained one, a query model, one set up with a
            ``size_factor_key`` or trained with ``dispersion="gene-batch"`` is refused). A
            latent library size (``use_observed_lib_size=False``) is not carried over: the
            CGMDVAE reads each cell's observed library.
        unlabeled_category
            The label of unlabelled cells in ``labels_key`` (see :meth:`setup_anndata`).
        labels_key
            obs column of cell labels, for a supervised or semi-supervised CGMDVAE (the
            ZINBVAE registers none); ``None`` clusters without labels.
        adata
            Another AnnData with the ZINBVAE's genes in its order and only categories it
            knows in its batch and covariate columns; default the ZINBVAE's own.
        **cgmdvae_kwargs
            The CGMDVAE's constructor arguments (``n_clusters``, ``n_latent_w``,
            ``dirichlet_alpha``, ``dropout_rate`` ...). ``n_latent``, ``n_hidden``,
            ``n_layers`` and ``likelihood`` are the ZINBVAE's; another value is refused.

        Returns
        -------
        The CGMDVAE, untrained; ``pretrained_from_`` is ``"ZINBVAE"``. Its first ``train``
        places the mixture on the pretrained z at once, without KL warm-up, and by default
        trains 20 epochs (``PRETRAINED_EPOCHS`` of ``deltavae.model._from_zinbvae``; the
        clusters of 400 on the sets measured), as SCANVI trains a few after
        ``from_scvi_model``.

        Examples
        --------
        >>> vae = dv.model.ZINBVAE(adata, n_latent=16)  # doctest: +SKIP
        >>> vae.train()  # doctest: +SKIP
        >>> g = dv.model.CGMDVAE.from_zinbvae(vae, n_clusters=9)  # doctest: +SKIP
        >>> g.train()  # doctest: +SKIP
        >>> g2 = dv.model.CGMDVAE.from_zinbvae(  # doctest: +SKIP
        ...     vae, unlabeled_category="Unknown", labels_key="cell_type"
        ... )
        """
        check_passed_on(cls, cls.from_zinbvae, cgmdvae_kwargs)  # labels_kay: before the setup
        sizes = check_zinbvae(zinbvae, cgmdvae_kwargs)
        if labels_key is None and unlabeled_category is not None:
            raise ValueError(
                f"unlabeled_category={unlabeled_category!r} marks unlabelled cells of a "
                "labels column; the ZINBVAE registers none: name it with labels_key=..."
            )
        if adata is None:
            adata = zinbvae.adata
        else:
            check_same_genes(adata, zinbvae)
            check_known_categories(adata, zinbvae.registry_, zinbvae)
        # A refused argument (n_clusters="9") leaves the ZINBVAE's AnnData as it was: not
        # set up for the CGMDVAE never built (obs["_scvi_labels"], uns ids, scvi-tools' store).
        with unchanged_on_failure(adata, stores=(cls._setup_adata_manager_store,)):
            cls.setup_anndata(
                adata,
                layer=zinbvae.registry_["setup_args"]["layer"],
                condition_key=condition_keys(zinbvae),
                labels_key=labels_key,
                unlabeled_category=unlabeled_category,
            )
            model = cls(adata, **{**cgmdvae_kwargs, **sizes})
        carry_weights(zinbvae, model)
        model.pretrained_from_ = "ZINBVAE"
        return model

    def _auto_warmup(self, max_epochs: int, plan_kwargs: dict) -> int | None:
        """``n_epochs_kl_warmup="auto"``: none for a model started from a ZINBVAE (its
        encoder and decoder trained through the ZINBVAE's warm-up), else as every model."""
        warm_up_named = {"n_epochs_kl_warmup", "n_steps_kl_warmup"} & set(plan_kwargs)
        if just_started(self) and not warm_up_named:
            return None
        pending = self.is_trained_ and start_due(self) and self.pretrained_from_ is None
        if pending and not warm_up_named:
            # The mixture start a run planned is still to come: warmed up as a first run.
            return max(1, max_epochs // self._warmup_share)
        return super()._auto_warmup(max_epochs, plan_kwargs)
