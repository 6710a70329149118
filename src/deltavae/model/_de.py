"""Checks of a differential-expression call before scvi-tools runs it: the groups exist, the
comparison is not averaged away by batch correction, and the counts are in memory."""

from __future__ import annotations

import inspect

import scvi


def check_de_groups(
    model, differential_expression, args: tuple, kwargs: dict
) -> tuple[tuple, dict]:
    """The ``groupby`` column and the ``group1``/``group2`` names a call of scvi-tools'
    ``differential_expression`` gives exist in the AnnData it reads: a misspelled group made
    scvi-tools divide by zero cells. Returns the call's ``args`` and ``kwargs``, with an AnnData
    read from disk replaced by an in-memory one.

    ``differential_expression`` is the unbound scvi-tools method whose signature the call
    follows.
    """
    bound = inspect.signature(differential_expression).bind_partial(model, *args, **kwargs)
    given = bound.arguments
    args, kwargs = _de_in_memory(model, given.get("adata"), args, kwargs)
    groupby = given.get("groupby")
    if groupby is None:
        return args, kwargs
    batch = model.adata_manager.get_state_registry(scvi.REGISTRY_KEYS.BATCH_KEY)
    if given.get("batch_correction") and groupby == batch.get("original_key"):
        role = "first condition" if model_has_conditions(model) else "batch"
        raise ValueError(
            f"batch_correction=True averages the expression over the categories of "
            f"adata.obs[{groupby!r}] (the model's {role}), "
            "which is the column the groups are compared by, so it removes the difference "
            "being tested. Pass batch_correction=False."
        )
    adata = given.get("adata")
    adata = model.adata if adata is None else adata
    if groupby not in adata.obs:
        raise KeyError(
            f"groupby={groupby!r} is not a column of adata.obs; available columns: "
            f"{list(adata.obs.columns)}."
        )
    present = set(adata.obs[groupby].astype(str))
    for arg in ("group1", "group2"):
        value = given.get(arg)
        if value is None:
            continue
        names = [value] if isinstance(value, str) else list(value)
        missing = [name for name in names if str(name) not in present]
        if missing:
            raise ValueError(
                f"{arg}={value!r}: no cell of adata.obs[{groupby!r}] is {missing[0]!r}; its "
                f"groups: {sorted(present)[:20]}."
            )
    return args, kwargs


def _de_in_memory(model, adata, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """scvi-tools' differential expression reads the counts with numpy operations a matrix on
    disk (backed .h5ad, :func:`deltavae.read_lazy`) lacks: pass it an in-memory AnnData."""
    from ._matrices import adata_in_memory

    target = model.adata if adata is None else adata
    memory = adata_in_memory(target)
    if memory is target:
        return args, kwargs
    if args:
        return (memory, *args[1:]), kwargs
    return args, {**kwargs, "adata": memory}


def model_has_conditions(model) -> bool:
    """Whether ``model`` registers condition covariates (CGMDVAE's batch field mirrors the
    first of them)."""
    return bool(getattr(model, "condition_keys", []))
