"""The training history plot: negative ELBO per epoch (the KL weight on an axis of its own),
with the KL warm-up."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import (
    FixedLocator,
    Formatter,
    LogLocator,
    MaxNLocator,
    NullFormatter,
)

from .._checks import check_bools
from .._close_names import did_you_mean
from .._docs import doc_ax, doc_params, doc_show_save_apart, doc_title_figsize
from ..model._validation import warn_user
from ._legends import legend_clear_of_lines
from ._utils import as_names, closes_on_error, figure_size, one_axes, own_axes, savefig_or_show

logger = logging.getLogger(__name__)

_HISTORY_LABELS = {
    "elbo_train": "training",
    "elbo_validation": "validation",
    "kl_weight": "KL weight",
}
_LOSS_KEYS = ("train_loss", "validation_loss")


def _history_frames(model) -> Mapping[str, pd.DataFrame]:
    if isinstance(model, AnnData):  # "has no training history; train it first" misled
        raise TypeError(
            "dv.pl.history takes the trained model (or model.history), not an AnnData: the "
            "training history is kept by the model, not written into the AnnData."
        )
    if not isinstance(model, Mapping) and not hasattr(model, "history"):
        # A table or a path was told "The model has no training history; train it first".
        raise TypeError(
            f"dv.pl.history takes a deltavae model (or model.history, a dict of DataFrames), "
            f"not {type(model).__name__}."
        )
    history = model if isinstance(model, Mapping) else getattr(model, "history", None)
    if history is None and getattr(model, "is_query_model", False):
        why = "it has not trained since load_query_data (train it: model.train(...))"
        if not model.query_mapping_.get("learning_parameters"):
            why = "it adds no new condition category, so it has nothing to learn"
        raise ValueError(
            f"This query model has no training history of its own: {why}. The reference's "
            "training is plotted by dv.pl.history(reference_model)."
        )
    if history is None:
        raise ValueError(
            "The model has no training history; train it first (model.train(...)) or pass "
            "model.history."
        )
    return history


def _hints(missing: Sequence[str], frames: Mapping[str, pd.DataFrame]) -> str:
    """`` 'elbo_trian': did you mean 'elbo_train'?`` for each key of ``missing`` near one
    recorded; ``""`` where none is."""
    return "".join(f" {k!r}: {h}" for k in missing if (h := did_you_mean(k, frames)))


def _history_unit(model, keys: Sequence[str]) -> str:
    """The y label of a history plot: what the curves are, per cell or per spot."""
    from ..model._spots import SpotModelMixin

    unit = "spot" if isinstance(model, SpotModelMixin) else "cell"
    if all(key == "kl_weight" for key in keys):
        return "KL weight"
    if all(key.startswith("elbo_") for key in keys):
        return f"negative ELBO per {unit}"
    # the objective trained: the KL term weighted by the warm-up (and, for CGMDVAE, the
    # classifier's and alignment terms), so no negative ELBO until the warm-up ends
    if all(key in _LOSS_KEYS for key in keys):
        return f"training objective per {unit}"
    unitless = " (nats; the KL weight has none)" if "kl_weight" in keys else " (nats)"
    return f"per {unit}{unitless}"


def _plain_number(value: float, decimals: int | None = None) -> str:
    """``20,000`` and ``0.05``, not ``2e+04`` and ``5e-02``; ``decimals`` above 1."""
    if value >= 1:
        if decimals is None:
            decimals = 0 if value == round(value) else 1
        return f"{value:,.{decimals}f}"
    return f"{value:.3g}"


class _PlainFormatter(Formatter):
    """Tick labels as :func:`_plain_number` writes them, those above 1 with as many decimals
    as the finest of them needs: ``201.5, 202.0, 202.5``, not ``201.5, 202, 202.5``, and
    ``201.25``, not ``201.2``."""

    def __call__(self, value, pos=None) -> str:  # one value alone (the cursor's)
        return _plain_number(value)

    def format_ticks(self, values) -> list[str]:
        above = np.asarray([v for v in values if v >= 1], dtype=float)
        # the fewest decimals that write every tick exactly (201.25 was written 201.2)
        decimals = next(
            (d for d in range(3) if np.allclose(above, np.round(above, d), rtol=0, atol=1e-9)),
            3,
        )
        return [_plain_number(v, decimals) for v in values]


#: Round mantissas of the ticks of a log axis spanning less than a decade.
_NICE = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0)


def _log_ticks(low: float, high: float, n: int = 5) -> list[float]:
    """Up to ``n`` round values between ``low`` and ``high``, evenly spaced in log, the first
    as near ``low`` as a round value allows.

    Examples
    --------
    >>> _log_ticks(1066, 10066)
    [1200.0, 2000.0, 3000.0, 6000.0, 10000.0]
    """
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    nice = np.array([m * 10.0**d for d in decades for m in _NICE])
    nice = nice[(nice >= low) & (nice <= high)]
    if nice.size < 2:
        return list(nice)
    targets = np.log10(np.geomspace(low, high, n))
    picked = {float(nice[np.argmin(np.abs(np.log10(nice) - t))]) for t in targets}
    return sorted(picked)


def _log_values(frames: Sequence[pd.DataFrame]) -> np.ndarray:
    """The finite values of the curves, refused unless all positive (a log axis), naming the
    curve that is not (a KL weight warming up from 0 was blamed on the ELBO)."""
    values = np.concatenate([frame.to_numpy(dtype=float).ravel() for frame in frames])
    values = values[np.isfinite(values)]
    if values.size and values.min() <= 0:
        low = min(frames, key=lambda f: np.nanmin(f.to_numpy(dtype=float), initial=np.inf))
        name = str(low.columns[0]) if len(low.columns) else "a curve"
        why = (
            "a KL warm-up starts from 0: leave kl_weight out of keys"
            if name == "kl_weight"
            else "a normal likelihood's negative ELBO can be negative"
        )
        raise ValueError(
            f"log=True needs positive values, but {name} goes down to {values.min():.4g} "
            f"({why}); draw it with log=False."
        )
    return values


def _log_y_axis(ax: Axes, frames: Sequence[pd.DataFrame]) -> None:
    """Log-scale y axis labelled with plain numbers over whatever range the curves span.

    Over more than three decades the ticks sit at powers of ten; from one to three at 1, 2
    and 5 times powers of ten; over less (an
    ELBO's usual last stretch) at round values spaced as on a linear axis, so that every
    curve has labelled ticks beside it, at its lowest values too.
    """
    values = _log_values(frames)
    ax.set_yscale("log")
    decades = np.log10(values.max() / values.min()) if values.size else 0.0
    if decades > 3:
        # 1, 2 and 5 in each of many decades (an ELBO with the KL weight) overlapped.
        ax.yaxis.set_major_locator(LogLocator())
    elif decades >= 1:
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    elif decades >= 0.3:
        # Evenly spaced on the log axis: linear steps (2,500, 5,000, 7,500) leave the lowest
        # stretch, where an ELBO ends, without a label.
        ax.yaxis.set_major_locator(FixedLocator(_log_ticks(values.min(), values.max())))
    else:
        ax.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_formatter(_PlainFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())


def _full_kl_weight(model, kl: np.ndarray) -> float:
    """The KL weight the warm-up rises to: the model's ``max_kl_weight`` as trained; for a
    history alone, the weight it ended on where it stayed there two epochs or more (a
    warm-up rises every epoch), else 1."""
    args = getattr(model, "train_args_", None)
    if isinstance(args, Mapping):
        return float((args.get("plan_kwargs") or {}).get("max_kl_weight", 1.0))
    kl = kl[np.isfinite(kl)]
    if kl.size >= 2 and kl[-1] == kl[-2] == kl.max():
        return float(kl[-1])
    return 1.0


def _warmup_spans(model, kl: pd.Series, last: float) -> list[tuple[float, float]]:
    """The KL warm-ups, each from its first epoch to the end of its last (not past the last
    epoch drawn, where the run ended inside it): one per ``train`` call that warmed up, as
    a model trained again starts its warm-up again.

    A ``max_kl_weight`` below 1 shaded the whole run (its weight never reached 1), and a
    second run's warm-up shaded the full-weight epochs between the two. Each run (a new one
    starts where the weight falls) rises to its own full weight: the model's record is the
    last call's, so a first run trained to ``max_kl_weight=0.5`` and a second to 1 had the
    first's full-weight epochs shaded as warm-up.
    """
    values = kl.to_numpy(dtype=float)
    # - 1e-6: the history logs the weight in float32 (0.7 comes back as 0.69999999)
    starts = np.flatnonzero(np.diff(values) < -1e-6) + 1
    runs = np.split(values, starts)
    full = [_full_kl_weight(None, run) for run in runs[:-1]] + [_full_kl_weight(model, runs[-1])]
    below = np.concatenate([run < f - 1e-6 for run, f in zip(runs, full, strict=True)])
    low = np.concatenate([[False], below, [False]])
    starts = np.flatnonzero(low[1:] & ~low[:-1])
    ends = np.flatnonzero(low[:-1] & ~low[1:]) - 1  # the last row of each run
    spans = []
    for first, final in zip(kl.index[starts], kl.index[ends], strict=True):
        first = float(first)
        spans.append((first, min(float(final) + 1, max(last, first + 1))))
    return spans


@doc_params(
    ax=doc_ax,
    **doc_show_save_apart("history"),
    title_figsize=doc_title_figsize('``"Training history"``', (5, 3.5)),
)
@closes_on_error
def history(
    model,
    keys: Sequence[str] = ("elbo_train", "elbo_validation"),
    ax: Axes | None = None,
    log: bool = False,
    shade_warmup: bool = True,
    show: bool | None = None,
    save: bool | str | os.PathLike | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
    return_fig: bool = False,
) -> Axes | Figure | None:
    """Training and validation negative ELBO per epoch.

    A model whose parameters are an earlier epoch's than its last (``restore_best``, the
    default of CGMDVAE with validation cells: ``model.best_epoch_``) has that epoch marked
    by a dotted vertical line, ``"kept: epoch N"`` in the legend.

    Parameters
    ----------
    model
        A trained deltavae model (anything with a ``history`` dict of DataFrames indexed by
        epoch, as scvi-tools keeps it), or that dict itself.
    keys
        History entries to draw, one line each (one name or a list). Entries the history
        lacks are skipped, with a warning for any but ``"elbo_validation"`` (absent when the
        model trained without validation cells); if it has none of them, a ValueError lists
        those it has. ``"kl_weight"`` beside other entries is drawn on an axis of its own, on
        the right (0 to its full weight; linear with ``log`` too). ``"train_loss"`` and
        ``"validation_loss"`` are the objective trained (KL terms down-weighted during the
        warm-up), labelled so, not the negative ELBO of ``"elbo_train"``.
    {ax}
    log
        Logarithmic y axis.
    shade_warmup
        Shade the epochs in which the KL weight was still below its full value (1, or
        ``plan_kwargs["max_kl_weight"]``): the model then trained on a loss with its KL terms
        down-weighted; ``elbo_train`` is the full ELBO throughout.
    {show_save}
    {title_figsize}
    {return_fig}

    Returns
    -------
    The Axes, unless the figure is shown; the Figure with ``return_fig``.

    Examples
    --------
    >>> vae.train(max_epochs=50)  # doctest: +SKIP
    >>> ax = dv.pl.history(vae, show=False)  # doctest: +SKIP
    >>> dv.pl.history(vae, log=True, save="_log.png")  # doctest: +SKIP
    """
    check_bools(log=log, shade_warmup=shade_warmup, return_fig=return_fig, show=show)
    frames = _history_frames(model)
    keys = as_names(keys, "keys")
    present = [key for key in keys if key in frames]
    if not present:
        raise ValueError(
            f"None of the history keys {list(keys)} were recorded; available keys: "
            f"{sorted(frames)}.{_hints(keys, frames)}"
        )
    skipped = [key for key in keys if key not in frames]
    if [key for key in skipped if key != "elbo_validation"]:
        warn_user(
            f"The history has no {skipped}; not drawn. Its keys: {sorted(frames)}."
            f"{_hints(skipped, frames)}"
        )
    elif skipped:
        logger.info("history has no %s; not drawn", skipped)
    # The KL weight (0 to 1) beside ELBOs of thousands sat flat on their axis: its own axis,
    # on the right, labelled, in the one legend.
    twin = "kl_weight" in present and len(present) > 1
    on_left = [key for key in present if not (twin and key == "kl_weight")]
    if log:  # refused before a figure is made, not after the curves were drawn
        _log_values([frames[key] for key in on_left])
    ax = one_axes(ax, "history")
    if ax is None:
        ax = own_axes(figure_size(figsize, (5, 3.5)))
    right = ax.twinx() if twin else None
    drawn = []
    # "training" beside "train_loss" would not say which curve is the ELBO
    names = {"kl_weight": "KL weight"} if set(present) & set(_LOSS_KEYS) else _HISTORY_LABELS
    for key in present:
        frame = frames[key]
        series = frame[key] if key in frame.columns else frame.iloc[:, 0]
        epochs = np.asarray(series.index, dtype=float)
        values = series.to_numpy(dtype=float)
        # One epoch is one point, and a line through one point draws nothing.
        point = {"marker": "o"} if np.isfinite(values).sum() == 1 else {}
        target, style = (right, {"color": "0.35", "ls": "--"}) if key not in on_left else (ax, {})
        target.plot(epochs, values, label=names.get(key, key), **point, **style)
        drawn.append(epochs)
    if right is not None:
        right.set_ylabel("KL weight")
        right.set_ylim(0, max(1.0, float(np.nanmax(frames["kl_weight"].to_numpy(float)))) * 1.05)
    last = max(float(np.nanmax(epochs)) if epochs.size else 0.0 for epochs in drawn)
    if shade_warmup and "kl_weight" in frames:
        spans = _warmup_spans(model, frames["kl_weight"].iloc[:, 0], last)
        for k, span in enumerate(spans):  # one legend entry
            (right or ax).axvspan(
                *span, color="0.9", zorder=0, label="_KL warm-up" if k else "KL warm-up"
            )
    kept = getattr(model, "best_epoch_", None)  # a model's, not a history dict's
    if kept is not None and kept < last:  # its parameters are this epoch's, not the last's
        ax.axvline(kept, color="0.3", ls=":", lw=1, label=f"kept: epoch {kept}")
    if log:
        _log_y_axis(ax, [frames[key] for key in on_left])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs_drawn = np.unique(np.concatenate(drawn))
    if epochs_drawn.size == 1:  # else ticks at -0.04, -0.02, ... 0.04
        ax.set_xticks(epochs_drawn)
    ax.set_xlabel("epoch")
    ax.set_ylabel(_history_unit(model, on_left))
    ax.set_title("Training history" if title is None else title)
    # A framed legend stays readable when it sits on the shaded warm-up; over the right
    # axis's line too, with the entries of both axes.
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:  # below ax (its shading too), so that ax's legend covers its line
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
        right.set_zorder(ax.get_zorder() - 1)
        ax.patch.set_visible(False)
    # Clear of the lines of both axes (loc="best" weighed only ax's: over the KL plateau).
    legend_clear_of_lines(ax, [ax] + ([right] if right is not None else []), handles, labels,
                          edgecolor="0.6")  # fmt: skip
    return savefig_or_show(ax, "history", show, save, return_fig)
