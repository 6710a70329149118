"""A call that writes into the user's AnnData and fails midway leaves it as it was: no
results half written, no key of the user's or of another model replaced
(_unchanged_on_failure.py)."""

import warnings

import numpy as np
import pytest
import scvi
from _anndata_state import assert_unchanged, state

import deltavae as dv

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}


@pytest.fixture(scope="module")
def labelled():
    """A supervised CGMDVAE with the user's colours of its labels, its results written once
    under key_added="first"."""
    adata = dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=1, seed=0
    )
    adata.obs["cluster"] = adata.obs["cluster"].astype(str).astype("category")
    adata.uns["cluster_colors"] = ["#ff0000", "#00ff00"]
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="cluster")
    scvi.settings.seed = 0
    model = dv.model.CGMDVAE(adata, n_clusters=2, n_hidden=8, n_latent=2, n_latent_w=2)
    model.train(**TRAIN)
    model.write_to_adata(key_added="first")
    return model, adata


def test_a_write_failing_midway_leaves_the_anndata_as_it_was(labelled, monkeypatch):
    """CGMDVAE's write_to_adata wrote obsm["X_cgmdvae"] and obsm["X_cgmdvae_w"] before the
    labels' colours: a failure there left them beside the earlier results."""
    import deltavae.model._cgmdvae_write as cgmdvae_write

    model, adata = labelled
    before = state(adata)

    def failing(*args, **kwargs):
        raise RuntimeError("colours failed")

    monkeypatch.setattr(cgmdvae_write, "carry_label_colours", failing)
    with pytest.raises(RuntimeError, match="colours failed"):
        model.write_to_adata(adata)
    assert_unchanged(before, adata)
    monkeypatch.undo()  # the same call, nothing failing: it writes
    assert "obsm/X_cgmdvae" in model.write_to_adata(adata)
    assert adata.obsm["X_cgmdvae"].shape == (120, 2)


class _Watched(dict):
    """A writer record that counts the reads of its entries (a copy reads them all)."""

    reads = 0

    def _read(self):
        type(self).reads += 1

    def __iter__(self):
        self._read()
        return super().__iter__()

    def keys(self):
        self._read()
        return super().keys()

    def items(self):
        self._read()
        return super().items()

    def copy(self):
        self._read()
        return super().copy()


def test_a_write_keeps_only_its_targets_writer_record(labelled, monkeypatch):
    """A write copied the writer record of every live AnnData to put it back on failure,
    where only its target's can change: another AnnData's record is not read, and the
    target's is put back when the write fails."""
    from deltavae.model import _backed, _result_writers

    model, adata = labelled
    other, fresh = adata.copy(), adata.copy()
    model.write_to_adata(other, key_added="other")
    ref, record = _result_writers._WRITERS[id(other)]
    monkeypatch.setitem(_result_writers._WRITERS, id(other), (ref, _Watched(record)))
    mine, note = dict(_result_writers._WRITERS[id(adata)][1]), _backed.note_writer

    def failing(*args, **kwargs):  # the record written, then a failure
        note(*args, **kwargs)
        raise RuntimeError("failed after the record")

    monkeypatch.setattr(_backed, "note_writer", failing)
    with pytest.raises(RuntimeError, match="failed after the record"):
        model.write_to_adata(adata, key_added="second")
    assert _result_writers._WRITERS[id(adata)][1] == mine
    with pytest.raises(RuntimeError, match="failed after the record"):
        model.write_to_adata(fresh)
    assert id(fresh) not in _result_writers._WRITERS
    assert _Watched.reads == 0


def test_a_write_refused_by_a_warning_keeps_the_other_models_results():
    """With warnings as errors, write_to_adata's "replaced another model's results" warning
    raised after the write: the other model's obsm["X_zinbvae"] was lost all the same."""
    adata = dv.datasets.synthetic_counts(
        n_cells=80, n_genes=12, n_clusters=2, n_conditions=2, seed=0
    )
    models = []
    for batch_key in (None, "condition"):
        dv.model.ZINBVAE.setup_anndata(adata, batch_key=batch_key)
        scvi.settings.seed = 0
        model = dv.model.ZINBVAE(adata, n_latent=2, n_hidden=8)
        model.train(**TRAIN)
        models.append(model)
    models[0].write_to_adata(adata)
    before = state(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="replaced obsm\\['X_zinbvae'\\]"):
            models[1].write_to_adata(adata)
    np.testing.assert_array_equal(adata.obsm["X_zinbvae"], before["obsm"]["X_zinbvae"])
    assert_unchanged(before, adata)  # scvi-tools' codes of the first setup too


def test_from_reference_refusing_an_argument_keeps_another_models_setup():
    """NMFDeconv.from_reference set the spots up before the model refused an argument; its
    clean-up removed the keys it had added only: another model's scvi-tools ids
    (uns["_scvi_manager_uuid"]) and codes stayed replaced by the failed model's."""
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=2, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=40, cells_per_spot=(2, 5), seed=3
    )
    spots = spots.copy()
    dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", inference="per_spot"
    )
    before = state(spots)
    with pytest.raises(ValueError, match="n_hidden must be a positive integer"):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster", n_hidden=-3)
    assert_unchanged(before, spots)


def _failing(*args, **kwargs):
    raise KeyboardInterrupt  # an interrupt, or a field's check, partway through


@pytest.mark.parametrize("model", ["ZINBVAE", "NMFDeconv"])
def test_setup_failing_partway_keeps_another_models_setup(model, monkeypatch):
    """scvi-tools registers a setup's fields one after the other: one failing (an interrupt
    over a large AnnData) left the fields before it written over another model's codes
    (obs["_scvi_batch"] of CGMDVAE's condition became ZINBVAE's batch), and a spot model's
    obs["_indices"] written before the registration."""
    from scvi.data import fields

    from deltavae.model._labels import ConditionsByName

    adata = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=10, n_clusters=2, n_conditions=2, seed=0
    )
    adata.obs["donor"] = np.array(["d1", "d2", "d3"])[np.arange(60) % 3]
    dv.model.CGMDVAE.setup_anndata(adata, labels_key="cluster", condition_key="condition")
    before = state(adata)
    if model == "ZINBVAE":  # its batch registered, then its covariates fail
        monkeypatch.setattr(ConditionsByName, "register_field", _failing)
        kwargs = {"batch_key": "donor", "categorical_covariate_keys": ["condition"]}
    else:  # its spots' rows written, then their registration fails
        monkeypatch.setattr(fields.NumericalObsField, "register_field", _failing)
        kwargs = {"spot_index": True}
    with pytest.raises(KeyboardInterrupt):
        getattr(dv.model, model).setup_anndata(adata, **kwargs)
    assert_unchanged(before, adata)


@pytest.mark.parametrize(
    ("model", "kwargs"),
    [("CGMDVAE", {"condition_key": "donor"}), ("ZINBVAE", {"batch_key": "donor"})],
)
def test_setup_refused_by_its_warning_keeps_another_models_setup(model, kwargs):
    """With warnings as errors, setup_anndata's "categories with fewer than 3 cells" warning
    raised once scvi-tools had registered the fields: another model's codes and ids
    (obs["_scvi_batch"], uns["_scvi_manager_uuid"]) were replaced by a setup never kept."""
    adata = dv.datasets.synthetic_counts(
        n_cells=60, n_genes=10, n_clusters=2, n_conditions=2, seed=0
    )
    adata.obs["donor"] = ["d1"] * 58 + ["d2"] * 2
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    before = state(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="fewer than 3 cells"):
            getattr(dv.model, model).setup_anndata(adata, **kwargs)
    assert_unchanged(before, adata)


def test_from_reference_refused_keeps_the_users_own_setup_of_the_spots():
    """The failed call's setup (layer=None) replaced the user's NMFDeconv setup of the spots
    in scvi-tools' store: NMFDeconv(spots, signatures) built next read X, not the layer the
    user had set them up with."""
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=30, n_clusters=2, n_conditions=1, seed=1
    )
    spots, ref = dv.datasets.pseudo_spots(
        cells, "cluster", n_spots=40, cells_per_spot=(2, 5), seed=3
    )
    spots = spots.copy()
    spots.layers["counts"] = spots.X.copy()
    signatures = dv.model.NMFDeconv.signatures_from_reference(ref, "cluster")
    dv.model.NMFDeconv.setup_anndata(spots, layer="counts")
    with pytest.raises(ValueError, match="n_hidden must be a positive integer"):
        dv.model.NMFDeconv.from_reference(spots, reference=ref, labels_key="cluster", n_hidden=-3)
    model = dv.model.NMFDeconv(spots, signatures=signatures)
    assert model.registry_["setup_args"]["layer"] == "counts"


def _spots_set_up(first, second):
    """Spots set up for the spot model ``first`` (reading the layer), then ``second`` (X)."""
    spots = dv.datasets.convex_mixtures(n_spots=40, n_genes=60, n_archetypes=3, seed=0)
    spots.layers["counts"] = spots.X.copy()
    spots.obs["slide"] = np.array(["s1", "s2"])[np.arange(40) % 2]
    first_kwargs = {"layer": "counts", "sample_key": "slide"} if first == "Archetypes" else {}
    getattr(dv.model, first).setup_anndata(spots, **first_kwargs)
    getattr(dv.model, second).setup_anndata(spots)
    return spots


@pytest.mark.parametrize(
    ("first", "refused", "kwargs", "match"),
    [
        ("ZINBVAE", "CGMDVAE", {"n_clusters": 2, "n_latent": 0}, "n_latent must be"),
        ("CGMDVAE", "ZINBVAE", {"n_latent": 0}, "n_latent must be"),
        ("Archetypes", "NMFDeconv", {"n_components": 2, "n_hidden": 0}, "n_hidden must be"),
        ("NMFDeconv", "Archetypes", {"n_archetypes": 0}, "n_archetypes must be"),
    ],
)
def test_a_constructor_refused_keeps_the_last_setup(first, refused, kwargs, match):
    """A model built on an AnnData another model was set up on since took its own setup
    back (obs["_scvi_batch"] and uns["_scvi_manager_uuid"] rewritten) before it refused an
    argument: the AnnData was left with the refused model's codes and ids in place of those
    of the setup the user made last, and scvi-tools kept the failed model's registration."""
    cells = first in ("ZINBVAE", "CGMDVAE")
    if cells:
        adata = dv.datasets.synthetic_counts(
            n_cells=60, n_genes=10, n_clusters=2, n_conditions=2, seed=0
        )
        adata.obs["donor"] = np.array(["d1", "d2", "d3"])[np.arange(60) % 3]
        setups = {"ZINBVAE": {"batch_key": "condition"}, "CGMDVAE": {"condition_key": "donor"}}
        getattr(dv.model, refused).setup_anndata(adata, **setups[refused])
        getattr(dv.model, first).setup_anndata(adata, **setups[first])
    else:
        adata = _spots_set_up(refused, first)
    store = getattr(dv.model, refused)._per_instance_manager_store
    models_before = dict(store)
    before = state(adata)
    with pytest.raises((ValueError, TypeError), match=match):
        getattr(dv.model, refused)(adata, **kwargs)
    assert_unchanged(before, adata)
    assert dict(store) == models_before  # no registration of a model never built
