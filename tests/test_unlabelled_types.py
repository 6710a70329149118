"""A semi-supervised CGMDVAE says so when a cell type has no labelled cell (benchmarks/README.md,
"Cell types without labelled cells")."""

import numpy as np
import pytest
import scvi

import deltavae as dv
from deltavae.model._unlabelled_types import labelled_neighbours, unlabelled_groups

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False}


def _two_blobs(rng, far: float):
    """200 cells of one label (a fifth labelled) and 40 unlabelled ones, ``far`` away."""
    points = np.concatenate([rng.normal(0, 1, (200, 2)), rng.normal(far, 1, (40, 2))])
    labelled = np.zeros(240, bool)
    labelled[:200:5] = True
    return points, labelled


def test_a_group_apart_in_z_is_named_only_where_the_data_agree():
    rng = np.random.default_rng(0)
    z, labelled = _two_blobs(rng, 30.0)
    # Apart in the data too: a type none of whose cells is labelled.
    found = unlabelled_groups(z, z, np.zeros(240), labelled, 1)
    assert [(label, cells.tolist()) for label, cells in found] == [(0, list(range(200, 240)))]
    # Apart in z only: in the data the 40 cells sit among the labelled ones (the first
    # attempt's false alarms: a model that set a type's labelled cells apart in z).
    data = rng.normal(0, 1, (240, 2))
    assert labelled_neighbours(data, labelled, np.arange(200, 240)) > 0.5
    assert unlabelled_groups(z, data, np.zeros(240), labelled, 1) == []
    # A novel cluster (at or above the labels' count) is a cluster of its own already.
    assert unlabelled_groups(z, z, np.r_[np.zeros(200), np.ones(40)], labelled, 1) == []


def test_a_condition_without_labelled_cells_is_no_sign_of_a_type_without_labels():
    """Labels from the control cells only (kangsemi22: the stimulated cells' data sign was
    0.10-0.46 on Kang, under the threshold for every type): a group of the unlabelled
    condition sits among unlabelled cells whatever its type, so the data cannot say it."""
    rng = np.random.default_rng(0)
    z, labelled = _two_blobs(rng, 30.0)
    stimulated = np.r_[np.zeros(200, int), np.ones(40, int)]  # the 40: a condition unlabelled
    assert labelled_neighbours(z, labelled, np.arange(200, 240), stimulated) == np.inf
    assert unlabelled_groups(z, z, np.zeros(240), labelled, 1, conditions=stimulated) == []
    # Both conditions labelled alike: the group's own conditions' share, as without them.
    mixed = np.arange(240) % 2
    alone = labelled_neighbours(z, labelled, np.arange(200, 240))
    assert labelled_neighbours(z, labelled, np.arange(200, 240), mixed) == pytest.approx(alone)
    assert len(unlabelled_groups(z, z, np.zeros(240), labelled, 1, conditions=mixed)) == 1


def _counts(label_type_3: bool):
    adata = dv.datasets.synthetic_counts(
        n_cells=400, n_genes=80, n_clusters=4, n_conditions=1, seed=2, marker_fold=8.0
    )
    truth = adata.obs["cluster"].astype(str).to_numpy()
    labelled = np.random.default_rng(2).random(400) < 0.2
    if not label_type_3:
        labelled &= truth != "3"
    adata.obs["label"] = np.where(labelled, truth, "unknown")
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="label", unlabeled_category="unknown")
    return adata, truth


def test_train_warns_of_a_type_without_labelled_cells(monkeypatch):
    """Type 3 of four has no labelled cell: its cells take a label's cluster, and train says
    so, with the number of cells, the label and both remedies; quiet once they are labelled."""
    monkeypatch.setattr(scvi.settings, "seed", 0)
    adata, truth = _counts(label_type_3=False)
    model = dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=64)
    with pytest.warns(UserWarning, match="none of whose cells is labelled") as caught:
        model.train(max_epochs=40, **TRAIN)
    said = str(next(w.message for w in caught if "none of whose" in str(w.message)))
    assert "n_clusters=4" in said and "label a few" in said
    named = [int(part.split(" given ")[0].split()[-1]) for part in said.split("; ")]
    assert sum(named) >= 30  # most of type 3's cells (about 100), given a label
    adata, _ = _counts(label_type_3=True)
    dv.model.CGMDVAE(adata, likelihood="nb", n_hidden=64).train(max_epochs=40, **TRAIN)
