"""What CGMDVAE computes around its training loop, counted rather than timed (the seconds are
benchmarks/outside_training.py's): each is computed once where it was computed again, and
gives what it gave before."""

import hashlib
import types
import warnings

import numpy as np
import pandas as pd
import pytest
from scvi import REGISTRY_KEYS

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


def _old_deviance(module, tensors):
    """Typicality's deviance per UMI as it was computed: the NB's log-density at the fit and
    at the counts themselves, each of the decoder's full output, subtracted."""
    import torch

    from deltavae.distributions import count_log_prob

    x, cats = tensors[REGISTRY_KEYS.X_KEY], tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)
    inf = module.inference(**module._get_inference_input(tensors), draw=False)
    params = module.decode(inf["qz"].loc, cats, inf["library"])
    fit = count_log_prob(x, params["mu"], params["theta"]).sum(-1)
    best = count_log_prob(x, x.clamp(min=1e-8), params["theta"]).sum(-1)
    return ((fit - best) / x.sum(-1).clamp(min=1.0)).to(torch.float32)


def test_typicality_reads_no_log_gamma_terms_and_no_non_zeros(monkeypatch):
    """The deviance is the difference of two NB log-densities of the same counts and theta,
    whose log-gamma terms (of the counts and theta alone) cancel: it is computed without them
    and without the search of the non-zero counts (a ``nonzero`` and three ``lgamma`` per
    minibatch before: half of predict_labels' cost on the CPU), giving the two densities'
    difference up to float rounding."""
    import torch

    from deltavae.model._typicality import fit_score

    adata = _semi()
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    module = model.module.eval()
    calls = {"nonzero": 0, "lgamma": 0}
    nonzero, lgamma = torch.Tensor.nonzero, torch.lgamma

    def counted_nonzero(self, *args, **kwargs):
        calls["nonzero"] += 1
        return nonzero(self, *args, **kwargs)

    def counted_lgamma(*args, **kwargs):
        calls["lgamma"] += 1
        return lgamma(*args, **kwargs)

    with torch.inference_mode():
        for tensors in model._make_data_loader(adata, batch_size=64):
            monkeypatch.setattr(torch.Tensor, "nonzero", counted_nonzero)
            monkeypatch.setattr(torch, "lgamma", counted_lgamma)
            scores = fit_score(module, tensors)
            monkeypatch.undo()
            assert calls == {"nonzero": 0, "lgamma": 0}
            old = _old_deviance(module, tensors)
            # Float rounding: the old sums of ~-100 per cell kept ~1e-5 of them.
            torch.testing.assert_close(scores[:, 0], old, rtol=1e-5, atol=1e-6)
            assert not torch.equal(scores[:, 0], torch.zeros_like(old))


def test_typicality_does_not_run_the_decoders_dropout_head():
    """predict_labels decodes every cell for typicality's deviance, which reads the NB's mean
    and theta alone: the decoder's dropout head (a layer to every gene, as large as the mean's)
    ran once per minibatch for nothing; what predict_labels gives is unchanged (its other
    outputs are the same layers' numbers)."""
    adata = _semi()
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, **TRAIN)
    runs = {"dropout": 0, "scale": 0}
    decoder = model.module.decoder

    def count(name):
        def hook(*_):
            runs[name] += 1

        return hook

    hooks = [
        decoder.px_dropout_decoder.register_forward_hook(count("dropout")),
        decoder.px_scale_decoder.register_forward_hook(count("scale")),
    ]
    try:
        labels = model.predict_labels(batch_size=100)
    finally:
        for hook in hooks:
            hook.remove()
    assert runs == {"dropout": 0, "scale": 4}  # 400 cells, 100 a minibatch
    # The decoder's mean as its full forward gives it.
    import torch

    module = model.module.eval()
    tensors = next(iter(model._make_data_loader(adata, batch_size=64)))
    with torch.inference_mode():
        inf = module.inference(**module._get_inference_input(tensors), draw=False)
        cats = tensors.get(REGISTRY_KEYS.CAT_COVS_KEY)
        full = module.decode(inf["qz"].loc, cats, inf["library"])
        mean = module.decode(inf["qz"].loc, cats, inf["library"], dropout=False)
    assert mean["zi_logits"] is None
    for key in ("scale", "mu", "theta"):
        assert torch.equal(mean[key], full[key])
    assert labels["typicality"].between(0, 1).all()


@pytest.fixture
def pcas(monkeypatch):
    """The number of the counts' PCAs computed (``data_components``)."""
    import deltavae.train._label_space as label_space
    import deltavae.train._mixture_init as mixture_init

    count = {"n": 0}
    components = label_space.data_components

    def counted(*args, **kwargs):
        count["n"] += 1
        return components(*args, **kwargs)

    monkeypatch.setattr(label_space, "data_components", counted)
    monkeypatch.setattr(mixture_init, "data_components", counted)  # its former callers' name
    return count


def test_a_fit_again_of_the_same_cells_computes_their_components_once(pcas):
    """The check of unlabelled types after each semi-supervised fit reads the counts'
    principal components of the drawn training cells: a fit again (the same seed, the same
    split, the same cells) reads the first fit's, computed once; counts changed in place
    are computed anew, and what is read is what a fresh PCA gives."""
    from deltavae.model._unlabelled_types import training_read

    adata = _semi()
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train(max_epochs=1, mixture_init_epoch=None, **TRAIN)
        n_first = pcas["n"]
        assert n_first == 1
        model.train(max_epochs=1, **TRAIN)
        assert pcas["n"] == n_first  # the same cells: their components kept
        read = training_read(model)
        assert pcas["n"] == n_first
        from deltavae.train._label_space import data_components

        fresh = data_components(adata.X[read["cells"]], read["conditions"], read["seed"])
        assert np.array_equal(read["pcs"], fresh)
        cell = read["cells"][0]  # one count changed in place: computed anew
        if hasattr(adata.X, "indptr"):
            adata.X.data[adata.X.indptr[cell]] += 1
        else:
            adata.X[cell, 0] += 1
        training_read(model)
        assert pcas["n"] == n_first + 2
    from deltavae.model._components_memo import memoised_components

    x = adata.X[:60]
    first = memoised_components(model, x, None, 0)
    first[:] = 0  # a copy: the kept entry is not the caller's
    assert np.array_equal(memoised_components(model, x, None, 0), data_components(x, None, 0))
    assert pcas["n"] == n_first + 4
