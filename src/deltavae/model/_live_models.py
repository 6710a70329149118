"""A model's registrations with scvi-tools let go when the model is.

scvi-tools keeps the AnnDatas a model registered (its own, and those it read) in its class's
``_per_instance_manager_store`` under the model's id, and nothing removes them when the model
is deleted: a model long gone still counted as one set up on the AnnData (CGMDVAE's
``write_to_adata`` warned that "the ZINBVAE set up on this AnnData" would refuse it, naming a
ZINBVAE deleted since), and its AnnData setups, each holding its AnnData, stayed in memory.
"""

from __future__ import annotations

import weakref

#: model -> the id its registrations are let go under when it is garbage collected.
_WATCHED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forget_when_gone(model) -> None:
    """Remove ``model``'s entry from scvi-tools' store of its class's registrations once the
    model is garbage collected (once per id: a pickled copy gets its own)."""
    model_id = getattr(model, "id", None)
    if model_id is None or _WATCHED.get(model) == model_id:
        return
    _WATCHED[model] = model_id
    weakref.finalize(model, type(model)._per_instance_manager_store.pop, model_id, None)


def live_registrations(cls) -> dict:
    """``cls``' registrations of models alive (model id -> {AnnData id: setup}): those of a
    model gone are let go by :func:`forget_when_gone` as it goes."""
    return dict(cls._per_instance_manager_store)
