"""Features added since the last GPU run (2026-12-04_h200) that the other tracking files leave
out, followed with each tensor's would-be device (:mod:`_device_tracker`, as in
test_device_tracking.py): the vote over conditions of a label held out of one (by
``predict_labels`` and by ``get_latent_representation(condition=...)``), a query and spots
changed in place after mapping (read and trained as they are now), mixed-precision training,
and ``predict_perturbation``'s other arguments. The vote's host waits are counted as on a GPU
too, with no call mixing devices."""

import anndata as ad
import numpy as np
import pytest

import deltavae as dv

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 64}


def _held_out():
    """Type t0's c1 cells left out of the training cells: the cells of c1 are labelled, and
    moved, by the vote over conditions; c2 for a query."""
    adata = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=40, n_clusters=3, n_conditions=3, seed=2, condition_specific=True
    )
    adata.obs["cell_type"] = "t" + adata.obs["cluster"].astype(str)
    t0 = (adata.obs["cell_type"] == "t0").to_numpy()
    c1 = (adata.obs["condition"] == "c1").to_numpy()
    c2 = (adata.obs["condition"] == "c2").to_numpy()
    ref, held, query = adata[~(t0 & c1) & ~c2].copy(), adata[t0 & c1].copy(), adata[c2].copy()
    query.obs.pop("cell_type")
    dv.model.CGMDVAE.setup_anndata(ref, condition_key="condition", labels_key="cell_type")
    return ref, held, query


def test_the_label_vote_stays_on_the_device(tracked):
    from deltavae.model._label_votes import label_vote_table

    ref, held, _ = _held_out()
    model = dv.model.CGMDVAE(ref, n_latent=3, n_hidden=16)
    model.train(max_epochs=2, **TRAIN)
    assert label_vote_table(model) is not None  # c1 lacks t0: its cells are voted
    both = ad.concat([ref, held])
    tracked(
        model.module,
        {
            "labels": lambda: model.predict_labels(held),
            "labels, typicality": lambda: model.predict_labels(held, unknown_below=0.1),
            "soft labels": lambda: model.predict_labels(held, soft=True, batch_size=8),
            "predict": lambda: model.predict(held),
            "clusters": lambda: model.predict_clusters(held, soft=True),
            "z moved, voted": lambda: model.get_latent_representation(
                held, condition="c0", batch_size=8
            ),
            "z moved, all": lambda: model.get_latent_representation(both, condition="c1"),
            "write": lambda: model.write_to_adata(held.copy()),
        },
    )


def test_the_moved_latents_vote_waits_a_bounded_number_of_times(monkeypatch):
    """get_latent_representation(condition=...) moves each cell by q(y | z, c) as the labels
    read it, voted where its condition lacks a label: no wait a minibatch, no device mixed."""
    from _device_tracker import counted_waits

    ref, held, _ = _held_out()
    model = dv.model.CGMDVAE(ref, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    cells = ad.concat([held] * 3, index_unique="-", keys=["a", "b", "c"])

    def read():
        return model.get_latent_representation(cells, condition="c0", batch_size=8)

    expected = read()
    out, tracker = counted_waits(monkeypatch, model.module, read)
    n = sum(k for (what, _), k in tracker.waits.items() if what != "copy to the device")
    assert len(cells) // 8 >= 6
    assert n <= 8, f"{n} host waits over {len(cells) // 8 + 1} minibatches:\n" + (
        tracker.waits_report()
    )
    assert not tracker.mixes, tracker.report()
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_a_query_changed_in_place_is_read_and_trained_on_the_device(tracked):
    """The query subset in place after mapping (sc.pp.filter_cells): train and the calls
    without an AnnData read a copy made again of the cells it holds now."""
    ref, _, query = _held_out()
    model = dv.model.CGMDVAE(ref, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    mapped = dv.model.CGMDVAE.load_query_data(query, model, accelerator="cpu")
    mapped.train(max_epochs=1, **TRAIN)
    query._inplace_subset_obs(np.arange(query.n_obs) % 3 != 0)
    tracked(
        mapped.module,
        {
            "labels": lambda: mapped.predict_labels(unknown_below=0.2),
            "latent": mapped.get_latent_representation,
            "write": lambda: mapped.write_to_adata(unknown_below=0.2),
        },
        train=lambda: mapped.train(max_epochs=1, **TRAIN),
    )
    assert mapped.adata.n_obs == query.n_obs


def test_spots_changed_in_place_are_read_on_the_device(tracked, monkeypatch):
    """SpatialImputer's spots subset and reordered in place since from_reference: the
    read-outs without an AnnData follow them (spots_now), and train fits its own copy."""
    import deltavae.model._imputer as imputer_model

    monkeypatch.setattr(imputer_model, "_CHUNK", 8)
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=120, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=30, seed=0)
    for design in ("deconvolution", "latent"):
        measured = spots[:, spots.var_names[:100]].copy()
        imputer = dv.model.SpatialImputer.from_reference(
            measured, ref, labels_key="cluster", design=design
        )
        imputer.train(max_epochs=1, **TRAIN)
        measured._inplace_subset_obs(np.arange(measured.n_obs)[::-1][: measured.n_obs - 7])
        calls = {"impute": imputer.impute, "write": lambda m=imputer: m.write_to_adata()}
        if design == "latent":
            calls["latent"] = imputer.get_latent_representation
        else:
            calls["proportions"] = imputer.get_proportions
        tracked(imputer.module, calls, train=lambda m=imputer: m.train(max_epochs=1, **TRAIN))


# 1-4 s each: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ZINBVAE", "CGMDVAE"])
def test_mixed_precision_training_stays_on_the_device(tracked, kind):
    """precision="bf16-mixed" (autocast; the parameters stay float32), which check_precision
    lets through: the losses and the guard's reads of them in another dtype."""
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=0
    )
    if kind == "ZINBVAE":
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
        model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    else:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
        model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    start = {} if kind == "ZINBVAE" else {"mixture_init": "kmeans", "refit_mixture": False}
    tracked(
        model.module,
        {"latent": model.get_latent_representation},
        train=lambda: model.train(
            max_epochs=2,
            precision="bf16-mixed",
            train_size=0.8,
            early_stopping=True,
            **start,
            **TRAIN,
        ),  # fmt: skip
    )


@pytest.mark.slow  # 3.5 s
def test_predict_perturbation_arguments_stay_on_the_device(tracked):
    """predict_perturbation's default method, a balance key, translate without the
    residual, and targets of several condition keys."""
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=2, seed=0
    )
    adata.obs["donor"] = np.where(np.arange(adata.n_obs) % 2, "d1", "d2")
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=["condition", "donor"])
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=3, n_hidden=16)
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    stim = {"condition": "stim"}
    tracked(
        model.module,
        {
            "default": lambda: model.predict_perturbation(ctrl, stim, seed=0),
            "translate, not residual": lambda: model.predict_perturbation(
                ctrl, stim, method="translate", residual=False, seed=0
            ),
            "latent shift, balanced": lambda: model.predict_perturbation(
                ctrl,
                "stim",
                method="latent_shift",
                condition_key="condition",
                balance_key="cluster",
                seed=0,
            ),  # fmt: skip
            "nearest, a dict": lambda: model.predict_perturbation(
                ctrl, stim, method="nearest_response", similarity="latent", balance_key="cluster"
            ),
            "translate, both keys": lambda: model.predict_perturbation(
                ctrl, {"condition": "stim", "donor": "d1"}, method="translate", seed=0
            ),
        },
        train=lambda: model.train(
            max_epochs=2, mixture_init="kmeans", refit_mixture=False, **TRAIN
        ),
    )
