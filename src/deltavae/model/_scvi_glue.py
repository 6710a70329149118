"""Small adapters around scvi-tools internals that every deltavae model uses."""

from __future__ import annotations

import contextlib
import logging

from scvi.data._constants import _FIELD_REGISTRIES_KEY as _FIELD_REGISTRIES
from scvi.module.base._decorators import _move_data_to_device


def _sealed(adata_manager):
    """The manager with its field registries in a plain dict.

    scvi-tools keeps them in a ``defaultdict``: looking up a field the model never registered
    (e.g. the batch of a model without one) inserts an empty entry, and every later call on the
    model then fails with ``KeyError: 'data_registry'``. Sealed, such a lookup fails alone.
    """
    registry = adata_manager._registry
    registry[_FIELD_REGISTRIES] = dict(registry[_FIELD_REGISTRIES])
    return adata_manager


_SCVI_MODEL_LOGGER = "scvi.model.base._base_model"


class _MessageFilter(logging.Filter):
    def __init__(self, starts: tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.starts)


@contextlib.contextmanager
def _without_message(logger_name: str, *starts: str):
    """Drop the records of one logger that start with one of ``starts``, inside the block."""
    target, drop = logging.getLogger(logger_name), _MessageFilter(starts)
    target.addFilter(drop)
    try:
        yield
    finally:
        target.removeFilter(drop)


class _OnDevice:
    """A data loader whose minibatches arrive on a module's device.

    Every torch-side pass of a deltavae model (latents, expression, translation, perturbation,
    scvi-tools' mixins) iterates a loader from :meth:`DeltaModelMixin._make_data_loader`; moving
    the tensors here, once, keeps a model trained on a GPU readable without each method
    remembering to do it. Attributes of the wrapped loader stay reachable.
    """

    def __init__(self, loader, module):
        self._loader = loader
        self._module = module

    def __iter__(self):
        device = self._module.device
        for tensors in self._loader:
            yield _move_data_to_device(tensors, device)

    def __len__(self) -> int:
        return len(self._loader)

    def __getattr__(self, name):
        return getattr(self._loader, name)
