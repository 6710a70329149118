"""Quiet a few messages of dependencies that tell a deltavae user nothing they can act on.

Each is dropped by a :class:`logging.Filter` on the one logger that emits it, matched by its
text, so every other message of those loggers (and every warning) still comes through:

* Lightning's advertisement for litlogger, printed on every training run
  (``lightning.pytorch.trainer.connectors.logger_connector``, through ``rank_zero_info``);
* scvi-tools' "File .../model.pt already downloaded", printed twice by every ``Model.load``
  (``scvi.data._download._download`` finds the saved file already there, as it always is);
* Lightning's "Seed set to 0", printed whenever ``scvi.settings.seed`` is set;
* Lightning's "TPU available: False, using: 0 TPU cores" (and HPU) banner, and its "GPU
  available: False, used: False", printed on every training run of a machine without one
  (its "GPU available: True, used: ..." lines stay: they say where the model trains, and
  whether a GPU there goes unused);
* Lightning's "`Trainer.fit` stopped: `max_epochs=N` reached.", which repeats the progress
  bar (stops for any other reason, early stopping among them, are still logged);
* Lightning's "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]", printed on every training run on
  a GPU (``lightning.pytorch.accelerators.cuda``).

:func:`install_filters` runs once when deltavae is imported. No global ``warnings`` filter is
installed.

Examples
--------
>>> import logging
>>> import deltavae  # installs the filters
>>> logging.getLogger("lightning.fabric.utilities.seed").filter(
...     logging.makeLogRecord({"msg": "Seed set to 0"})
... )
False
"""

from __future__ import annotations

import logging

_LIGHTNING_NOISE = (
    "litlogger",
    "TPU available: False",
    "HPU available: False",
    "GPU available: False, used: False",
    "`max_epochs=",
)

#: logger name -> fragments of the messages dropped from it. Lightning's ``rank_zero_info``
#: logs through ``lightning_utilities``' module logger, which fabric and pytorch each rename to
#: their own on import (the last import wins), so the tip is filtered on both names.
QUIET_MESSAGES: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": _LIGHTNING_NOISE,
    "lightning.fabric.utilities.rank_zero": _LIGHTNING_NOISE,
    "scvi.data._download": ("already downloaded",),
    "lightning.fabric.utilities.seed": ("Seed set to",),
    "lightning.pytorch.accelerators.cuda": ("LOCAL_RANK:",),
}


class DropMessages(logging.Filter):
    """Drop log records whose message contains any of ``fragments``.

    Parameters
    ----------
    fragments
        Substrings of the messages to drop.

    Examples
    --------
    >>> f = DropMessages(("litlogger",))
    >>> f.filter(logging.makeLogRecord({"msg": "try litlogger"}))
    False
    >>> f.filter(logging.makeLogRecord({"msg": "GPU available: False"}))
    True
    """

    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a malformed record is the handler's to report
            return True  # (as "--- Logging error ---"), not to raise into the caller's code
        return not any(fragment in message for fragment in self.fragments)


def install_filters() -> None:
    """Attach a :class:`DropMessages` filter to each logger in :data:`QUIET_MESSAGES`, once.

    A filter on a logger sees only the records created on that logger, so every message of a
    parent or sibling logger is untouched. Calling it again adds nothing.

    Examples
    --------
    >>> install_filters()
    """
    for name, fragments in QUIET_MESSAGES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, DropMessages) for existing in logger.filters):
            logger.addFilter(DropMessages(fragments))
