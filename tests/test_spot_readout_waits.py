"""The spot models' read-outs must not make the host wait for a GPU once per minibatch (or
chunk of spots): counted on a CPU with :class:`_device_tracker.HostWaits` over 10 of them,
their waits must not grow with their number (see test_readout_waits.py for the count
models). Before, a ``.cpu()`` of each minibatch's values made NMFDeconv's ``get_proportions``
wait 30 times, Archetypes' ``get_archetype_weights`` 22, SpatialImputer's neighbour
``impute`` 20 (with a read of the observed genes' mask a chunk) and its
``get_latent_representation`` 20.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from _device_tracker import counted_waits

import deltavae as dv
import deltavae.model._gathered as gathered

N_SPOTS, BATCH = 40, 4  # 10 minibatches
TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 16, "max_epochs": 1}


def _quiet(call):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return call()


@pytest.fixture(scope="module")
def spots_and_reference():
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=120, n_clusters=3, seed=1)
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=N_SPOTS, seed=0)


def _nmfdeconv(spots, ref):
    model = dv.model.NMFDeconv.from_reference(spots.copy(), reference=ref, labels_key="cluster")
    _quiet(lambda: model.train(**TRAIN))
    return model


def _imputer(spots, ref, design="deconvolution", profiles="neighbours"):
    measured = spots[:, spots.var_names[:100]].copy()
    kwargs = {"profiles": profiles} if design == "deconvolution" else {}
    model = _quiet(
        lambda: dv.model.SpatialImputer.from_reference(
            measured, ref, labels_key="cluster", design=design, **kwargs
        )
    )
    _quiet(lambda: model.train(**TRAIN))
    return model


def _archetypes(spots, ref):
    mix = dv.datasets.convex_mixtures(n_spots=N_SPOTS, n_genes=60, n_archetypes=3, seed=0)
    dv.model.Archetypes.setup_anndata(mix)
    model = dv.model.Archetypes(mix, n_archetypes=3)
    _quiet(lambda: model.train(**TRAIN))
    return model


def _fresh(read):
    """``read`` of Archetypes' training spots, not served from the model's cached pass."""

    def call(m):
        m._cache.clear()
        return read(m)

    return call


MODELS = {
    "NMFDeconv": _nmfdeconv,
    "SpatialImputer": _imputer,
    "SpatialImputer(profiles='type')": lambda s, r: _imputer(s, r, profiles="type"),
    "SpatialImputer(design='latent')": lambda s, r: _imputer(s, r, design="latent"),
    "Archetypes": _archetypes,
}
READS = [
    ("NMFDeconv", "get_proportions", lambda m: m.get_proportions(batch_size=BATCH)),
    ("NMFDeconv", "get_abundance", lambda m: m.get_abundance(batch_size=BATCH)),
    (
        "NMFDeconv",
        "get_proportions of new spots",
        lambda m: m.get_proportions(m.adata[:20].copy(), batch_size=BATCH // 2),
    ),
    ("SpatialImputer", "impute", lambda m: m.impute(batch_size=BATCH)),
    ("SpatialImputer(profiles='type')", "impute", lambda m: m.impute(batch_size=BATCH)),
    ("SpatialImputer(design='latent')", "impute", lambda m: m.impute(batch_size=BATCH)),
    (
        "SpatialImputer(design='latent')",
        "get_latent_representation",
        lambda m: m.get_latent_representation(batch_size=BATCH),
    ),
    (
        "SpatialImputer(design='latent')",
        "get_latent_representation(return_dist=True)",
        lambda m: m.get_latent_representation(batch_size=BATCH, return_dist=True),
    ),
    (
        "Archetypes",
        "get_archetype_weights",
        _fresh(lambda m: m.get_archetype_weights(batch_size=BATCH)),
    ),
    (
        "Archetypes",
        "get_archetype_weights of new spots",
        lambda m: m.get_archetype_weights(m.adata[:20].copy(), batch_size=BATCH // 2),
    ),
]


@pytest.fixture(scope="module")
def models(spots_and_reference):
    built = {}

    def get(name):
        if name not in built:
            built[name] = MODELS[name](*spots_and_reference)
        return built[name]

    return get


def _same(a, b) -> None:
    for x, y in zip(*(v if isinstance(v, tuple) else (v,) for v in (a, b)), strict=True):
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x, y, check_exact=True)
        else:
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize(("kind", "name", "read"), READS, ids=[f"{k}.{n}" for k, n, _ in READS])
def test_spot_readouts_wait_a_bounded_number_of_times(monkeypatch, models, kind, name, read):
    """At most 6 waits in 10 minibatches, the numbers those of the read on the host, and of
    the read brought to the host a minibatch at a time."""
    model = models(kind)
    torch.manual_seed(1)
    expected = _quiet(lambda: read(model))  # not on the (stand-in) device
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, tracker = counted_waits(monkeypatch, model.module, lambda: read(model))
    n = sum(k for (what, _), k in tracker.waits.items() if what != "copy to the device")
    assert n <= 6, f"{n} host waits in 10 minibatches:\n{tracker.waits_report()}"
    _same(expected, out)
    monkeypatch.setattr(gathered, "FLUSH_BYTES", 1)
    torch.manual_seed(1)
    _same(expected, _quiet(lambda: read(model)))
