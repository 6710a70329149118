"""CGMDVAE's note after a fit on clusters no cell is predicted in: empty ones, and labels whose
labelled cells trained in their cluster while no cell, not even those, is predicted there.

The clusters were counted by the argmax of q(y | z, c) alone: after a short run (2 epochs,
every cell labelled) a label whose 3 labelled cells trained in its cluster was "empty", with
the advice that it had too few labelled cells. A label's cluster holds its labelled training
cells (the ELBO reads their label, not a prediction); what is wrong there is that the
classifier does not yet predict them, which is said as such. A label predicted for fewer cells
than a third of its labelled training cells (from 3 of them) is said alike: most of its own
labelled cells are put elsewhere (not after a run whose NotConvergedWarning said to train
longer: there it is the short run's state).
"""

from __future__ import annotations

import numpy as np
from scvi import REGISTRY_KEYS

from ..train._convergence import high_rate_note, train_longer
from ._validation import warn_user


def labelled_training_cells(model) -> np.ndarray:
    """Labelled cells of the last fit's training split per label (zeros where the split is not
    known: nothing trained, or a model loaded onto other cells)."""
    counts = np.zeros(len(model.label_names), dtype=int)
    cells = getattr(model, "train_indices", None)
    if not model.label_names or cells is None:
        return counts
    codes = np.asarray(model.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY)).ravel()
    codes = codes[np.asarray(cells, dtype=int)]
    codes = codes[(codes >= 0) & (codes < len(counts))]  # not the unlabelled cells' code
    return np.bincount(codes, minlength=len(counts))


def warn_if_clusters_empty(model, max_epochs: int, clusters=None, told: bool = False) -> None:
    """Say so when training ends with clusters no cell is predicted in (see the module);
    ``clusters``: every cell's predicted cluster, where the fit's record read them. Nothing
    after a run that went unstable: its warning says the model ends worse than it was and to
    train again at a lower rate. (CGMDVAE at lr=1, 200 cells, 20 epochs: "9 of 10 clusters
    are empty ... if 10, training was too short. Train longer", right after that warning.)
    ``told``: this run's NotConvergedWarning said what to change, which the note then points to
    rather than repeating its advice (CGMDVAE semi-supervised at lr=0.5, 20 epochs: "too few
    to converge ... Train longer ... train again with the default rate first", then "1 of 3
    labels are never predicted ... Most likely training was too short. Train longer ... train
    again with the default rate first")."""
    if model.__dict__.get("_went_unstable"):
        return
    clusters = model.predict_clusters() if clusters is None else clusters
    sizes = np.bincount(clusters, minlength=model.module.n_clusters)
    names = model.cluster_names
    labelled = np.zeros(len(names), dtype=int)
    labelled[: len(model.label_names)] = labelled_training_cells(model)
    k = model.module.n_clusters
    rate = high_rate_note((model.train_args_ or {}).get("lr"))  # far above the default
    longer = f"training was too short. {train_longer(max_epochs, validation=False)}{rate}"
    if told:
        longer = "training did not converge: this run's NotConvergedWarning says what to change."
    unpredicted = [
        (n, int(m)) for n, s, m in zip(names, sizes, labelled, strict=True) if not s and m
    ]
    if unpredicted:
        one = len(unpredicted) == 1
        shown = ", ".join(f"{n!r} ({m} labelled cell{'s' * (m != 1)})" for n, m in unpredicted)
        warn_user(
            f"{len(unpredicted)} of {len(model.label_names)} labels are never predicted after "
            f"training ({shown[:300]}): {'its' if one else 'their'} labelled cells trained in "
            f"{'its cluster' if one else 'their clusters'}, but q(y | z, c) puts every cell, "
            f"those too, in other clusters. Most likely {longer} If it stays so, those cells "
            "are too like another label's for the classifier to tell apart: a larger "
            "classifier_weight weighs the labels more."
        )
    # Predicted for fewer cells than a third of its own labelled ones (which the classifier
    # trained on), from 3 of them: most of those, and the cells like them, go elsewhere. Not
    # after a run its NotConvergedWarning already told to train longer (tests' 1-epoch runs:
    # a label of 43 labelled cells predicted for 1), where it is that run's state.
    barely = [
        (n, int(m), int(s))
        for n, s, m in zip(names, sizes, labelled, strict=True)
        if s and m >= 3 and 3 * s < m and not told
    ]
    if barely:
        shown = ", ".join(f"{n!r} ({m} labelled cells, {s} predicted)" for n, m, s in barely)
        warn_user(
            f"{len(barely)} of {len(model.label_names)} labels are barely predicted after "
            f"training ({shown[:300]}): q(y | z, c) puts most of their labelled cells, and the "
            f"cells like them, in other clusters. Most likely {longer} If it stays so, those "
            "cells are too like another label's for the classifier to tell apart: a larger "
            "classifier_weight weighs the labels more."
        )
    empty = [n for n, s, m in zip(names, sizes, labelled, strict=True) if not s and not m]
    if not empty:
        return
    # With empty clusters, near-empty ones are most likely more of the same: too many.
    tiny = {n: int(m) for n, m in zip(names, sizes, strict=True) if 0 < m < 0.005 * sizes.sum()}
    fewer = max(k - len(empty) - len(tiny), 2, len(model.label_names))
    advice = f"If the data hold {k} groups, {longer}"
    if fewer < k:
        advice = f"If the data hold fewer groups, n_clusters={fewer} fits them; if {k}, "
        advice += longer
    if set(empty) & set(model.label_names):
        advice = (
            f"If the data hold {k} groups, {longer} Each label keeps its cluster: a label "
            "whose cluster stays empty has too few labelled cells, or cells too like "
            "another label's, to hold one."
        )
    shown = dict(list(tiny.items())[:10])
    few = f", and {len(tiny)} more with under 0.5% of the cells each ({shown})" if tiny else ""
    warn_user(
        f"{len(empty)} of {k} clusters are empty after training ({', '.join(empty[:10])}"
        f"{', ...' if len(empty) > 10 else ''}){few}. {advice}"
    )
