"""Semi-supervised CGMDVAE: a cell type none of whose cells is labelled is warned of after
training (it took a label's cluster without a word), and a run where every type has labelled
cells stays quiet."""

import warnings

import numpy as np
import pytest

import deltavae as dv
from deltavae.model._unlabelled_types import unlabelled_groups

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "max_epochs": 40}


def _labelled(hidden=None, seed=0):
    """Four well-separated types of 100 cells each, a fifth of each labelled ``"T<type>"``,
    the type ``hidden`` none (all ``"Unknown"``)."""
    adata = dv.datasets.synthetic_counts(
        n_cells=400, n_genes=60, n_clusters=4, n_conditions=1, seed=seed,
        cluster_weights=np.full(4, 0.25), marker_fold=8.0,
    )  # fmt: skip
    kind = adata.obs["cluster"].astype(str).to_numpy()
    chosen = np.random.default_rng(seed).random(adata.n_obs) < 0.2
    if hidden is not None:
        chosen &= kind != hidden
    adata.obs["label"] = np.where(chosen, "T" + kind, "Unknown")
    return adata, kind


def _train(adata):
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    model = dv.model.CGMDVAE(adata, n_latent=4, n_hidden=32)
    model.train(**TRAIN)
    return model


def test_a_type_without_labelled_cells_is_warned_of_with_its_label_and_the_remedies():
    # Type "3" has no labelled cell: 3 clusters for 4 types, so its 100 cells took a label's
    # cluster, and training said nothing (every confidence near 1).
    adata, kind = _labelled(hidden="3")
    with pytest.warns(UserWarning, match="look like a type without labelled cells") as record:
        model = _train(adata)
    message = next(str(w.message) for w in record if "without labelled" in str(w.message))
    predicted = np.asarray(model.predict()).astype(str)
    taken = predicted[kind == "3"]
    label = max(set(taken), key=list(taken).count)  # where the hidden type went
    count = int(message.split("labelled cells: ")[1].split(" cells given")[0])
    assert f"cells given {str(label)!r}" in message and 40 <= count <= 100
    assert "n_clusters=4" in message and "label a few of those cells" in message
    # The cells named are of the hidden type.
    named = [part.split("'")[1] for part in message.split("(e.g. ")[1].split(")")[0].split(", ")]
    assert (kind[adata.obs_names.get_indexer(named)] == "3").all()
    # The remedy: one novel cluster more, and the type gets it; no warning then.
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label")
    model = dv.model.CGMDVAE(adata, n_latent=4, n_hidden=32, n_clusters=4)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*without labelled cells")
        model.train(**TRAIN)
    predicted = np.asarray(model.predict()).astype(str)
    assert np.mean(predicted[kind == "3"] == "novel_0") > 0.75


def test_every_type_labelled_stays_quiet():
    for seed in (0, 1):
        adata, _ = _labelled(seed=seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message=".*without labelled cells")
            _train(adata)


def test_a_sparsely_labelled_label_is_no_surprise():
    # Two far groups given one label: the far one has no labelled cell. With one labelled
    # cell in 100 of the label's others, 40 unlabelled cells are no surprise (0.99^40 = 0.67);
    # with 20 in 100 they are (0.8^40 < 1e-3).
    rng = np.random.default_rng(0)
    z = np.concatenate([rng.normal(0, 1, (100, 3)), rng.normal(40, 1, (40, 3))])
    predicted = np.zeros(140, dtype=int)
    sparse, dense = np.zeros(140, bool), np.zeros(140, bool)
    sparse[0], dense[:100:5] = True, True
    assert unlabelled_groups(z, predicted, sparse, 1) == []
    ((label, members),) = unlabelled_groups(z, predicted, dense, 1)
    assert label == 0 and set(members) == set(range(100, 140))
    # A novel cluster's cells have no labelled cell by design: never a group to warn of.
    assert unlabelled_groups(z, np.where(np.arange(140) < 100, 0, 1), dense, 1) == []
