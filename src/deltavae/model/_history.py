"""What a trained model's ``history`` holds, under which names."""

from __future__ import annotations

import pandas as pd

from .._checks import short_repr
from .._close_names import did_you_mean

#: Names other scvi-tools releases (or their per-step logging) use, and what to read here.
_RENAMED = {
    "train_loss_epoch": "history['train_loss'] (the epoch's mean training loss, the name "
    "scvi-tools 1.4 logs it under)",
    "train_loss_step": "history['train_loss'], per epoch (deltavae logs no per-step values)",
    "validation_loss_epoch": "history['validation_loss']",
    "validation_loss_step": "history['validation_loss'], per epoch",
    "elbo_train_epoch": "history['elbo_train']",
    "elbo_validation_epoch": "history['elbo_validation']",
    # scvi-tools' SCANVI: CGMDVAE's term is the cross-entropy of q(y | z, c) on the labelled
    # cells, averaged over every cell (the unlabelled ones adding 0).
    "train_classification_loss": "history['classifier_train'] (the labelled cells' "
    "cross-entropy, averaged over every cell)",
    "validation_classification_loss": "history['classifier_validation'] (the labelled cells' "
    "cross-entropy, averaged over every cell)",
}

#: SCANVI's classification metrics, which CGMDVAE does not log.
_SCANVI_SCORES = tuple(
    f"{mode}_{score}"
    for mode in ("train", "validation")
    for score in ("accuracy", "f1_score", "calibration_error")
)


class HistoryKeyError(KeyError):
    """A metric the history does not hold, with what it holds (a ``KeyError``, whose message
    Python would print quoted on one line)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TrainingHistory(dict):
    """``model.history``: scvi-tools' dict of DataFrames, whose missing key names the keys it
    holds (and, for another scvi-tools release's name, the one to read). Pickled (saved with
    the model) as a plain dict.

    Examples
    --------
    >>> history = TrainingHistory(elbo_train=None, lr=None)
    >>> try:
    ...     history["elbo_trian"]
    ... except KeyError as err:
    ...     print(err)
    model.history has no 'elbo_trian': did you mean 'elbo_train'? It holds ['elbo_train', 'lr'].
    """

    def __missing__(self, key):
        renamed = _RENAMED.get(key) if isinstance(key, str) else None
        validation = isinstance(key, str) and key.endswith(("_validation", "validation_loss"))
        if renamed is not None and renamed.split("'")[1] in self:
            hint = f"read {renamed}. "
        elif key in _SCANVI_SCORES and "classifier_train" in self:
            hint = (  # not did_you_mean's 'validation_loss'
                "scvi-tools' SCANVI logs its classifier's scores; CGMDVAE does not: compare "
                "model.predict() with the labels of the labelled cells, e.g. those of "
                "model.validation_indices. "
            )
        elif validation and not any(str(k).endswith("_validation") for k in self):
            hint = "no run validated (train_size=1.0 holds no cells out; pass train_size < 1). "
        else:
            hint = did_you_mean(key, self, end=" ")
        raise HistoryKeyError(
            f"model.history has no {short_repr(key)}: {hint}It holds {sorted(map(str, self))}."
        )

    def __reduce__(self):
        return dict, (dict(self),)


class HistoryMixin:
    """``history``, as scvi-tools keeps it, with what it holds said."""

    @property
    def history(self) -> dict[str, pd.DataFrame]:
        """The training history, one DataFrame per metric, indexed by ``epoch``; a further
        ``train`` call adds its epochs after the earlier ones (numbered on from them). None
        before training; a query model's (``load_query_data``) is its own training's, from
        epoch 0, not its reference's.

        Every model logs, once an epoch, per cell (per spot for the spot models):

        * ``elbo_train`` and ``elbo_validation``: the negative ELBO at full KL weight, also
          during the KL warm-up (``elbo_validation`` only with validation cells, on the epochs
          ``check_val_every_n_epoch`` validates).
        * ``train_loss``: the loss the optimiser minimised (the negative ELBO with its KL
          terms weighted by ``kl_weight``; a labelled or aligned CGMDVAE adds its classifier
          and alignment terms), and ``validation_loss``: that objective at full KL weight on
          the validation cells (what ``early_stopping`` watches and ``restore_best`` keeps the
          best epoch of, by default).
        * ``kl_weight``, and the ELBO's terms: ``reconstruction_loss_train``,
          ``kl_local_train``, ``kl_global_train`` and each model's own (ZINBVAE's
          ``kl_divergence_z_train``, CGMDVAE's ``classifier_train`` ...), with their
          ``_validation`` twins.

        The names are those scvi-tools 1.4 logs by default: its SCVI's history holds
        ``train_loss`` too, not ``train_loss_epoch`` and ``train_loss_step`` (earlier
        releases' names, which scvi-tools 1.4 logs only under
        ``plan_kwargs={"on_step": True}``, a per-step log deltavae does not offer). Code
        written for those names reads ``history["train_loss"]`` here.

        Examples
        --------
        >>> vae.history["elbo_validation"].tail()  # doctest: +SKIP
        >>> vae.history["train_loss"]["train_loss"].iloc[-1]  # doctest: +SKIP

        A name it does not hold (``history["train_loss_epoch"]``) raises a ``KeyError`` that
        lists the names it holds and, for another scvi-tools release's name, the one to read.
        """
        history = self.history_
        if type(history) is dict:  # as scvi-tools' runner and load set it
            history = self.history_ = TrainingHistory(history)
        return history
