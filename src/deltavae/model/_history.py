"""What a trained model's ``history`` holds, under which names."""

from __future__ import annotations

import pandas as pd


class HistoryMixin:
    """``history``, as scvi-tools keeps it, with what it holds said."""

    @property
    def history(self) -> dict[str, pd.DataFrame]:
        """The training history: one DataFrame per metric, indexed by ``epoch``; a further
        ``train`` call adds its epochs after the earlier ones (numbered on from them).

        Every model logs, once an epoch, per cell (per spot for the spot models):

        * ``elbo_train`` and ``elbo_validation``: the negative ELBO at full KL weight, also
          during the KL warm-up (``elbo_validation`` only with validation cells, on the epochs
          ``check_val_every_n_epoch`` validates).
        * ``train_loss``: the loss the optimiser minimised (the negative ELBO with its KL
          terms weighted by ``kl_weight``; a labelled or aligned CGMDVAE adds its classifier
          and alignment terms), and ``validation_loss``: that objective at full KL weight on
          the validation cells (what ``restore_best`` keeps the best epoch of).
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
        """
        return self.history_
