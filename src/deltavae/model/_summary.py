"""What ``print(model)`` says: scvi-tools' one-line summary and training status, with the
data the model was set up on, its registered keys, how long it trained and the last run's
convergence verdict (``convergence_``, saved with the model)."""

from __future__ import annotations

import inspect

import rich

# scvi-tools' view_anndata_setup and view_setup_args call rich.pretty without importing it.
import rich.pretty  # noqa: F401
from rich.markup import escape

#: ``convergence_`` of a run whose verdicts found nothing to say.
NO_WARNING = "No convergence warning."


def first_sentence(text: str) -> str:
    """The first sentence of a verdict (its finding; the advice follows it).

    Examples
    --------
    >>> first_sentence("Training ran 2 epochs: too few. Train longer.")
    'Training ran 2 epochs: too few.'
    """
    head, dot, _ = str(text).partition(". ")
    return head + "." if dot else str(text)


def record_verdict(model, text: str | None) -> None:
    """Keep a verdict's finding as ``model.convergence_`` unless the run said one already
    (``train`` clears it first); ``text=None``: :data:`NO_WARNING` where it said none."""
    if getattr(model, "convergence_", None) is None:
        model.convergence_ = NO_WARNING if text is None else first_sentence(text)


class SummaryMixin:
    """``summary_string`` (what ``print(model)`` and ``repr(model)`` show) as scvi-tools
    writes it, then the data, registered keys, epochs (and the epoch ``restore_best`` kept,
    where not the last) and convergence verdict."""

    #: The last ``train`` run's convergence verdict, as its warning's first sentence, or
    #: ``"No convergence warning."``, or where it was interrupted (Ctrl-C) ``"Training was
    #: interrupted after 2 of its 400 epochs."``; None before training (or for a model saved
    #: without it, or after a run that failed).
    convergence_: str | None = None

    @property
    def summary_string(self) -> str:
        """What ``print(model)`` shows, as text.

        Examples
        --------
        >>> print(vae.summary_string)  # doctest: +SKIP
        ZINBVAE: n_latent 10, n_hidden 128, n_layers 1, likelihood zinb, dispersion gene, ...
        Training status: Trained, 100 epochs. No convergence warning.
        Data: 300 cells x 60 genes; registered: layer='counts'
        """
        status = "Trained" if self.is_trained_ else "Not Trained"
        if self.is_trained_:
            epochs = _epochs(self)
            status += "" if epochs is None else f", {epochs} epoch{'s' * (epochs != 1)}"
            status += _kept(self)
            diverged = getattr(self, "diverged_", None)
            verdict = f"Training diverged: {diverged}." if diverged else self.convergence_
            status += f". {verdict}" if verdict else ""
        lines = [self._model_summary_string, f"Training status: {status}"]
        data = _data_line(self)
        return "\n".join(lines + ([data] if data else []))

    def __str__(self) -> str:
        # The text itself (scvi-tools' str(model) printed it and returned ""): print(model),
        # f"{model}" and logging show it, wherever they write, with no side effect.
        return self.summary_string

    def __repr__(self) -> str:
        # scvi-tools prints through rich: escaped, so a key or label in [brackets] shows.
        rich.print(escape(self.summary_string))
        return ""


def _kept(model) -> str:
    """The epoch whose parameters the model holds, where ``restore_best`` kept one before the
    last (CGMDVAE does by default): ``"Trained, 30 epochs"`` alone read as the last epoch's.
    """
    best = getattr(model, "best_epoch_", None)
    frame = (getattr(model, "history", None) or {}).get("elbo_train")
    if best is None or frame is None or not len(frame) or best == frame.index[-1]:
        return ""
    return f" (parameters of epoch {best}, kept by restore_best)"


def _epochs(model) -> int | None:
    history = getattr(model, "history", None) or {}
    frame = history.get("elbo_train")
    return None if frame is None else len(frame)


def _data_line(model) -> str | None:
    manager = getattr(model, "adata_manager", None)
    if manager is None:
        return None
    from ._spots import SpotModelMixin

    stats = manager.summary_stats
    unit = "spots" if isinstance(model, SpotModelMixin) else "cells"
    n_obs = stats.get("n_cells", getattr(model.adata, "n_obs", None))
    now = getattr(model.adata, "n_obs", n_obs)
    # Subset in place since setup (sc.pp.filter_cells): the model reads the rows left.
    if n_obs is not None and now != n_obs:
        n_obs = f"{now} {unit} ({n_obs} at setup, subset in place since)"
    else:
        n_obs = f"{n_obs} {unit}"
    line = f"Data: {n_obs} x {stats.get('n_vars')} genes"
    args = manager._registry.get("setup_args") or {}
    defaults = inspect.signature(type(model).setup_anndata).parameters
    given = [
        f"{name}={value!r}"
        for name, value in args.items()
        if not any(_same(value, empty) for empty in (None, [], ()))
        and not (name in defaults and _same(value, defaults[name].default))
    ]
    return line + ("; registered: " + ", ".join(given) if given else "")


def _same(value, default) -> bool:
    if value is None or default is None:
        return value is default
    try:
        return bool(value == default)
    except Exception:  # noqa: BLE001 - an array or other value without one truth: not a default
        return False
