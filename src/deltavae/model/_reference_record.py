"""What a model's read-outs say of a training that diverged, its own or, for a query model,
its reference's; and what a new query model keeps of its reference's training record."""

from __future__ import annotations

import contextlib

from ..train._convergence import NotConvergedWarning
from ._validation import warn_user

#: What scvi-tools copies from the reference that records the reference's own training, not
#: the query model's: its split's positions and the cells they are of, its history (plotted by
#: ``dv.pl.history``, read by the verdicts), the epoch it restored, its train call's
#: arguments (``train_args_``) and its convergence verdict (``convergence_``, which
#: ``print(model)`` gave as the query's own: "Trained. Training ran 2 epochs ...: too few to
#: converge" for a query that never trained). The weights, the categories that trained
#: (``trained_categories_``) and CGMDVAE's condition counts and library sizes are kept: the
#: query model maps and draws with them. The reference's divergence (``diverged_``) becomes
#: the query model's ``reference_diverged_`` (:func:`forget_reference_training`).
_REFERENCE_TRAINING = (
    "train_indices_",
    "validation_indices_",
    "test_indices_",
    "split_cells_",
    "history_",
    "best_epoch_",
    "train_args_",
    "convergence_",
)


def forget_reference_training(model) -> None:
    """A new query model keeps no record of its reference's training run (see
    :data:`_REFERENCE_TRAINING`): until it trains, its ``history`` is None, as its
    training status says (Not Trained), and its first ``train`` starts the history at epoch 0.
    The deltavae version it records (saved, checked on load) is the one that built it.

    A reference whose last training diverged (``diverged_``, or a reference's reference)
    hands the query model its frozen weights, the last finite ones of that run: the query's
    ``reference_diverged_`` keeps what diverged, for good (saved with it, passed on to its own
    query models), since no training of the query changes those weights; ``diverged_`` is the
    query's own training's, None until a query training diverges."""
    for name in _REFERENCE_TRAINING:
        setattr(model, name, None)
    # scvi-tools copied both from the reference: its own divergence and its reference's.
    model.reference_diverged_ = getattr(model, "diverged_", None) or getattr(
        model, "reference_diverged_", None
    )
    model.diverged_ = None
    model._record_version()


def divergence_note(model) -> str | None:
    """What a read-out of ``model`` says of a divergence, or None: its own last training's
    (``diverged_``), and, for a query model, its reference's (``reference_diverged_``), whose
    frozen weights it keeps whatever the query's training does."""
    notes = []
    if getattr(model, "diverged_", None) and not model.__dict__.get("_divergence_in_error"):
        notes.append(
            f"This model's last training diverged ({model.diverged_}), so its results may "
            "be far from a fit: train a new one with a lower learning rate (train(lr=...))."
        )
    if getattr(model, "reference_diverged_", None):
        notes.append(
            "This query model keeps the frozen weights of a reference whose last training "
            f"diverged ({model.reference_diverged_}), so its results may be far from a fit, "
            "however the query trains: train a new reference with a lower learning rate "
            "(train(lr=...)) and map the query onto it (load_query_data)."
        )
    return " ".join(notes) or None


def warn_if_diverged(model) -> None:
    """Warn (:class:`NotConvergedWarning`) with :func:`divergence_note`, if it says anything."""
    note = divergence_note(model)
    if note:
        warn_user(note, NotConvergedWarning)


@contextlib.contextmanager
def divergence_in_error(model):
    """Read-outs inside say nothing of the model's own divergence (its reference's still):
    the :class:`~deltavae.train.TrainingDivergedError` being raised says it. CGMDVAE's records
    of a diverged fit (its clusters, read by ``predict_clusters``) warned "This model's last
    training diverged" right before the error said the same."""
    before = model.__dict__.get("_divergence_in_error")
    model.__dict__["_divergence_in_error"] = True
    try:
        yield
    finally:
        if before is None:
            model.__dict__.pop("_divergence_in_error", None)
        else:
            model.__dict__["_divergence_in_error"] = before
