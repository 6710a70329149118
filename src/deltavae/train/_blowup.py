"""A run whose ELBO diverged in scale: its training ELBO rose orders of magnitude above its
first epoch's and the ELBO judged ended far above it, never NaN (the divergence check's). Such a
run's last epochs can still fall (CGMDVAE at lr=1 on 100 synthetic cells: 2.0e18 to 1.5e14,
told "still improving" and to train longer), but more epochs at that rate do not help."""

from __future__ import annotations

import numpy as np

from ._advice import DEFAULT_LR

#: How many times its first epoch's training ELBO a count model's training ELBO must have
#: reached at some epoch for the run to have diverged in scale. A healthy run's training ELBO
#: hardly rises above its first epoch's, warm-up included: on Kang (1,556 cells, 12 epochs) the
#: highest ELBO, training or validation, was 1, 3.1 and 2.9 times the first epoch's for ZINBVAE
#: at lr=1e-3, 1e-2, 0.1 and 1, 2.8 and 5.9 for CGMDVAE. CGMDVAE at lr=1 (100 synthetic cells)
#: rose from 595 to 1.1e31 within 4 epochs. A run whose first epoch was already far off
#: (ZINBVAE at lr=1: 2.2e7, then falling to 1,056) never rises above it and is judged by the
#: rule as before; an eval-mode validation ELBO lagging BatchNorm's statistics (1,900 times
#: the start while training fell) is not looked at.
PEAK_FACTOR = 1e3
#: Or, where its training ELBO rose :data:`RISE_FACTOR` times above its first epoch's, how many
#: times that start the ELBO judged must end at: ZINBVAE at lr=1 (100 synthetic cells, seeds 0
#: and 2, 5 epochs): training 596 to 44,420 (75 times), its validation ELBO ending at 2.4e6 and
#: 2.6e6, told "still improving" (a good run ends near 180).
RISE_FACTOR = 10.0
#: How many times its first epoch's ELBO the run must end at (the epoch restore_best kept, or
#: its last): a run that came back near its start is judged by the rule as before.
END_FACTOR = 10.0


def blew_up(
    history: dict,
    name: str,
    kept_epoch: int | None = None,
    lr: float | None = None,
    default_lr: float = DEFAULT_LR,
) -> str | None:
    """The verdict on a count model's run whose ELBO diverged in scale (:data:`PEAK_FACTOR`,
    :data:`END_FACTOR`, :data:`RISE_FACTOR`), or ``None``. ``name`` is the ELBO judged
    (``elbo_validation`` or ``elbo_train``); the start and the peak are the training ELBO's (a
    validation ELBO's first epoch is measured after an epoch's steps, already off at a huge
    rate, and in eval mode); ``default_lr``, the model's default rate, is advised.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = lambda name, v: pd.DataFrame({name: v}, index=pd.RangeIndex(len(v), name="epoch"))
    >>> run = {"elbo_train": frame("elbo_train", [595.0, 2e5, 2e18, 3e16, 1.5e14])}
    >>> blew_up(run, "elbo_train", lr=1.0)[:62]
    'The training ELBO diverged in scale: the training ELBO rose fr'
    >>> blew_up({"elbo_train": frame("elbo_train", [2.2e7, 4e3, 1e3])}, "elbo_train") is None
    True
    """
    start = _finite(history.get("elbo_train"), "elbo_train")
    judged = _finite(history.get(name), name)
    if start is None or judged is None or start.empty or judged.empty or start.iloc[0] <= 0:
        return None
    # The training ELBO's peak: an eval-mode validation ELBO can rise 1,900 times above the
    # start while training falls (BatchNorm's statistics trailing: ``eval_mode_lag``).
    first, peak_epoch, peak = float(start.iloc[0]), start.idxmax(), float(start.max())
    if kept_epoch is not None and kept_epoch in judged.index:
        end, which_end = float(judged.loc[kept_epoch]), f"epoch {kept_epoch}, kept by restore_best"
    else:
        end, which_end = float(judged.iloc[-1]), f"epoch {judged.index[-1]}, its last"
    far = peak >= PEAK_FACTOR * first and end >= END_FACTOR * first
    if not (far or (peak >= RISE_FACTOR * first and end >= PEAK_FACTOR * first)):
        return None
    what = "validation" if name == "elbo_validation" else "training"
    used = f" than this run's lr={lr:g}" if lr else ""
    return (
        f"The {what} ELBO diverged in scale: the training ELBO rose from {first:.4g} in the "
        f"first epoch to {peak:.4g} at epoch {peak_epoch}, and the {what} ELBO ends at "
        f"{end:.4g} ({which_end}), {end / first:.3g} times that start. Training went unstable "
        "(a learning rate too high for this model and data); more epochs at this rate will not "
        f"help. Train again with a lower learning rate{used}, e.g. the model's default "
        f"lr={default_lr:g}, on a model built anew."
    )


def _finite(frame, name: str):
    """The finite values of ``frame[name]`` as floats, by epoch (``None`` without a frame)."""
    if frame is None or frame.empty:
        return None
    values = frame[name].astype(float)
    return values[np.isfinite(values.to_numpy())]
