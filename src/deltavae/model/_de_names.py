"""The genes and batches an expression call names, checked against the model's before
scvi-tools runs the call (:mod:`deltavae.model._de`): ``gene_list`` by the model's gene names,
``transform_batch`` and ``batchid1``/``batchid2`` by its batch categories."""

from __future__ import annotations

import numpy as np
import scvi

from .._checks import short_repr
from .._close_names import suffixed_hint
from ._gene_advice import RENAMING, identifier_advice
from ._labels import seen_categories
from ._registered import SCVI_STAND_IN_BATCH, registered_category


def check_genes(model, gene_list) -> None:
    """Every gene of ``gene_list`` is one of the model's genes, and there is one at least."""
    if gene_list is None:
        return
    names = [gene_list] if isinstance(gene_list, str) else [str(g) for g in gene_list]
    if not names:
        raise ValueError("gene_list is empty; pass the genes to return, or None for all.")
    known = model.adata.var_names
    missing = [g for g in names if g not in known]
    if missing:
        renamed = suffixed_hint(missing, known)  # muscat's CD79A_ENSG00000105369
        advice = f"{renamed}: pass those names." if renamed else identifier_advice(missing, known)
        if not renamed and len(missing) < len(names) and not advice.startswith(RENAMING):
            advice = "Drop them, or check their spelling."
        raise ValueError(
            f"gene_list names {len(missing)} gene(s) the model does not have, e.g. "
            f"{missing[:5]}. {advice}"
        )


def check_batches(model, given: dict, arguments: tuple[str, ...]) -> dict:
    """The batch categories named by ``arguments`` (``transform_batch``, ``batchid1``, ...)
    are categories of the model's batch (CGMDVAE: its first condition), read by name as
    ``condition=`` is (:func:`~deltavae.model._registered.registered_category`: ``"107"`` for
    batch 107). Returns each argument given as the registered categories, for scvi-tools."""
    registry = model.adata_manager.get_state_registry(scvi.REGISTRY_KEYS.BATCH_KEY)
    known = list(registry.categorical_mapping)
    typed = {}
    for arg in arguments:
        value = given.get(arg)
        if value is None:
            continue
        one = isinstance(value, str) or np.ndim(value) == 0
        values = [value] if one else list(value)
        found = [registered_category(v, known) for v in values]
        unknown = [v for v, f in zip(values, found, strict=True) if v is not None and f is None]
        if unknown and registry.get("original_key") == SCVI_STAND_IN_BATCH:
            key = "condition_key" if type(model).__name__ == "CGMDVAE" else "batch_key"
            raise ValueError(
                f"{arg}={short_repr(value)}: the model was set up without a {key}, so it has no "
                f"batches to choose from; leave {arg} unset, or set up with "
                f"{key}=... and train again."
            )
        if unknown:
            plain = [v.item() if isinstance(v, np.generic) else v for v in known]
            raise ValueError(
                f"{arg}={short_repr(value)}: {short_repr(unknown[0])} is not a category of "
                f"adata.obs[{registry.get('original_key')!r}]; its categories: {plain[:20]}."
            )
        seen = (seen_categories(model) or {}).get(registry.get("original_key"))
        # By the model's name of each value: 1.0 (or True) for batch 1 is batch "1".
        empty = [
            v
            for v, f in zip(values, found, strict=True)
            if f is not None and seen is not None and str(f) not in seen
        ]
        if empty:
            raise ValueError(
                f"{arg}={short_repr(value)}: {short_repr(empty[0])} is a category of "
                f"adata.obs[{registry.get('original_key')!r}] without training cells, so the "
                f"model learned nothing of it; choose one of {sorted(seen)[:20]}."
            )
        typed[arg] = found[0] if one else found
    return typed
