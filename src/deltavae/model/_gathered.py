"""A read-out's minibatch results kept on the module's device and brought to the host
together, not a minibatch at a time: each ``.cpu()`` of a minibatch's values made the host
wait for a GPU to finish it before queueing the next. Values already on the host (a CPU
model) are passed on as they come, a minibatch a part: there the join was only a copy."""

from __future__ import annotations

from collections.abc import Callable

import torch

#: Bytes of results held on the device before they are brought to the host: a bound on the
#: device memory a read-out of many cells takes beside its minibatch.
FLUSH_BYTES = 256 * 2**20


class Gathered:
    """Named tensors (cells first) added minibatch by minibatch, on the host in
    :meth:`result`, joined in the order added.

    ``on_host`` maps each part brought to the host (a dict of the names' tensors, the
    cells of the minibatches since the last) to the values kept: CPU draws made in cell
    order (:class:`~deltavae.distributions._draws.CellDraws` draws the same for parts of any
    size) from parameters then dropped; or none (``{}``), where ``on_host`` writes each
    part into the caller's own arrays (``CGMDVAEModule.generate``: no second copy of every
    cell joined at the end).

    Examples
    --------
    >>> g = Gathered()
    >>> for i in range(3):
    ...     g.add(x=torch.full((2, 1), float(i)))
    >>> g.result()["x"].ravel().tolist()
    [0.0, 0.0, 1.0, 1.0, 2.0, 2.0]
    """

    def __init__(self, on_host: Callable[[dict], dict] | None = None, limit: int | None = None):
        self.on_host = on_host
        self.limit = FLUSH_BYTES if limit is None else limit
        self._pending: dict[str, list[torch.Tensor]] = {}
        self._done: dict[str, list[torch.Tensor]] = {}
        self._bytes = 0

    def add(self, **values: torch.Tensor | None) -> None:
        """One minibatch's values (``None`` ones left out). Values already on the host are a
        part of their own at once (see :func:`already_on_host`)."""
        added = {key: value.detach() for key, value in values.items() if value is not None}
        for key, value in added.items():
            self._pending.setdefault(key, []).append(value)
            self._bytes += value.numel() * value.element_size()
        if self._bytes >= self.limit or already_on_host(list(added.values())):
            self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        part = {key: _joined(values).cpu() for key, values in self._pending.items()}
        self._pending, self._bytes = {}, 0
        for key, value in (part if self.on_host is None else self.on_host(part)).items():
            self._done.setdefault(key, []).append(value)

    def result(self) -> dict[str, torch.Tensor]:
        """Every value added, on the host, by name; once (the parts are let go as each name's
        are joined, so a read-out holds its results once, not the parts beside them)."""
        done = self.parts()
        return {key: _joined(done.pop(key)) for key in list(done)}

    def parts(self) -> dict[str, list[torch.Tensor]]:
        """Every value added, on the host, by name, as the parts brought there (each of whole
        :meth:`add` calls, in order), not joined; once, as :meth:`result`."""
        self._flush()
        done, self._done = self._done, {}
        return done


def already_on_host(values: list[torch.Tensor]) -> bool:
    """Whether ``values`` are on the host and no torch function mode (or tensor subclass)
    sees the calls made of them: then a minibatch's values are their own part, passed on as
    they are (no pending values beside them, no join: on a CPU the join was a copy of every
    result, 6-17% of ``get_normalized_expression``'s time, and, with the part it made, held
    up to twice :data:`FLUSH_BYTES` above the read-out). A mode, such as the tests' stand-in
    for a GPU (``tests/_device_tracker.py``) that counts the host's waits, gets the device's
    path, and with it the same parts as on a GPU; the numbers are the same either way."""
    return (
        bool(values)
        and all(value.device.type == "cpu" for value in values)
        and not torch.overrides.has_torch_function(values)
    )


def _joined(parts: list[torch.Tensor]) -> torch.Tensor:
    """``parts`` end to end; a single part as it is (``torch.cat`` would copy it)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)
