"""What CGMDVAE computes around its training loop, counted rather than timed (the seconds are
benchmarks/outside_training.py's): each is computed once where it was computed again, and
gives what it gave before."""

import hashlib
import types
import warnings

import numpy as np
import pandas as pd
import pytest

import deltavae as dv
import deltavae.train._record as record
from deltavae.train._record import cells_digest

TRAIN = {"enable_progress_bar": False, "batch_size": 64}


@pytest.fixture
def digests(monkeypatch):
    """The number of cells' digests (SHA-1 of the joined names) computed."""
    count = {"n": 0}

    def sha1(data):
        count["n"] += 1
        return hashlib.sha1(data)

    monkeypatch.setattr(record, "hashlib", types.SimpleNamespace(sha1=sha1))
    return count


def _conditions(n_cells=300, seed=0):
    adata = dv.datasets.synthetic_counts(n_cells=n_cells, n_genes=40, n_clusters=3, seed=seed)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    return adata


def test_a_fit_hashes_its_cells_names_twice(digests):
    """The split's record and the records of the fit's cells (12 before: once per record)."""
    adata = _conditions()
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    digests["n"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, **TRAIN)
    assert digests["n"] == 2
    # Every record is keyed by the cells the fit read.
    assert set(model.fit_records_) == {cells_digest(adata.obs_names)}
    assert model.split_cells_ == cells_digest(adata.obs_names)


def test_cells_renamed_in_place_between_fits_are_new_cells(digests):
    """The digest is kept for one fit's records only: cells renamed in place (pandas lets an
    index's values be written) before the next fit are recorded under their new names."""
    adata = _conditions()
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, **TRAIN)
        before = cells_digest(adata.obs_names)
        adata.obs_names.values[0] = "renamed"  # in place: the same Index object
        assert cells_digest(adata.obs_names) != before
        model.train(max_epochs=1, **TRAIN)
    assert set(model.fit_records_) == {before, cells_digest(adata.obs_names)}
    assert "_digest_once" not in model.__dict__


def _semi(n_cells=400, seed=0):
    adata = dv.datasets.synthetic_counts(n_cells=n_cells, n_genes=40, n_clusters=3, seed=seed)
    labelled = np.arange(n_cells) % 4 == 0
    adata.obs["cell_type"] = np.where(labelled, adata.obs["cluster"].astype(str), "Unknown")
    dv.model.CGMDVAE.setup_anndata(
        adata, condition_key="condition", labels_key="cell_type", unlabeled_category="Unknown"
    )
    return adata


@pytest.fixture
def scored(monkeypatch):
    """The cells scored by a pass of typicality's record of their own (``fit_scores``)."""
    import deltavae.model._typicality as typicality

    count = {"cells": 0}
    fit_scores = typicality.fit_scores

    def counted(model, adata, indices=None, batch_size=None):
        out = fit_scores(model, adata, indices, batch_size)
        count["cells"] += len(out)
        return out

    monkeypatch.setattr(typicality, "fit_scores", counted)
    return count


def test_the_first_predict_labels_scores_the_record_in_its_own_pass(scored, tmp_path):
    """predict_labels() scores every cell of the model's AnnData in the pass that labels them:
    the record of the fit's cells is read there, not scored again (a second pass over up to
    100,000 cells); the record is the one save scores on a copy of the model (the same
    numbers: no minibatch of these cells is small enough to round otherwise)."""
    import copy

    adata = _semi()
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=2, **TRAIN)
        twin = copy.deepcopy(model)
        twin.save(tmp_path / "twin")  # scores the record in a pass of its own
        assert scored["cells"] > 0
        scored["cells"] = 0
        labels = model.predict_labels()
        assert scored["cells"] == 0
        assert model.typicality_record_ == twin.typicality_record_
        pd.testing.assert_frame_equal(labels, twin.predict_labels())
        # Another fit: its record is of its own cells again, read by the next predict_labels.
        first = model.typicality_record_
        model.train(max_epochs=1, **TRAIN)
        assert model.typicality_record_ is None
        twin = copy.deepcopy(model)
        twin.save(tmp_path / "twin2")
        scored["cells"] = 0
        model.predict_labels()
        assert scored["cells"] == 0 and model.typicality_record_ != first
        assert model.typicality_record_ == twin.typicality_record_
        # Not read from a call on some of the cells, or on another AnnData.
        model.train(max_epochs=1, **TRAIN)
        model.predict_labels(indices=np.arange(50))
        assert scored["cells"] > 0
    assert model.typicality_record_ is not None
