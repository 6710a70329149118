"""Loading saved models: what load computes, refuses and advises (model/_saved.py and the
models' loads)."""

import re
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import deltavae as dv
from deltavae.model import _candidates, _nmfdeconv

TRAIN = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False}


def _no_start(*args, **kwargs):
    raise AssertionError("load computed the start that the saved parameters replace")


def _same_state(a, b):
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture
def model_reads(monkeypatch):
    """The model files torch.load reads from here on (their paths, in order)."""
    reads, load = [], torch.load

    def counted(f, *args, **kwargs):
        reads.append(str(f))
        return load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", counted)
    return reads


@pytest.fixture(scope="module")
def split():
    cells = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=40, n_clusters=3, n_conditions=1, seed=1
    )
    return dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, cells_per_spot=(2, 6), seed=3)


@pytest.mark.filterwarnings("ignore:spots and signatures share only")
@pytest.mark.parametrize("inference", ["amortized", "per_spot"])
@pytest.mark.parametrize("reference", [False, True])
def test_nmfdeconv_load_skips_the_start(
    split, inference, reference, tmp_path, monkeypatch, model_reads
):
    """NMFDeconv.load built the model anew, computing the NMF (or NNLS) start from the spots,
    and then replaced it with the saved parameters: 1.15 s of a 0.12 s load for 20k spots x
    200 genes. The start is skipped; the read-outs are the saved model's, bit for bit."""
    spots, ref = split
    spots = spots.copy()
    dv.model.NMFDeconv.setup_anndata(spots, spot_index=inference == "per_spot")
    if reference:
        sig = pd.DataFrame(
            np.random.default_rng(0).gamma(1.0, 1.0, (3, 40)), columns=spots.var_names
        )
        model = dv.model.NMFDeconv(spots, signatures=sig, inference=inference, n_hidden=8)
    else:
        model = dv.model.NMFDeconv(spots, n_components=3, inference=inference, n_hidden=8)
    model.train(**TRAIN)
    model.save(tmp_path / "m")
    monkeypatch.setattr(_nmfdeconv, "nmf_start", _no_start)
    monkeypatch.setattr(_nmfdeconv, "nnls_start", _no_start)
    loaded = dv.model.NMFDeconv.load(tmp_path / "m", spots)
    assert model_reads == [str(tmp_path / "m" / "model.pt")]  # read 3 times before
    _same_state(model, loaded)
    assert loaded.cell_types_ == model.cell_types_
    assert loaded.get_proportions().equals(model.get_proportions())
    assert loaded.get_signatures().equals(model.get_signatures())
    if inference == "amortized" and not reference:
        # The NMF start's limit (factors <= spots) is no reason to refuse fewer spots.
        few = dv.model.NMFDeconv.load(tmp_path / "m", spots[:2].copy())
        assert few.get_proportions().shape == (2, 3)
    if inference == "per_spot" and not reference:
        # A subset of its own spots was told "loads onto those spots only", which it is.
        subset = r"takes all of them; got 20 spots, a subset of them\. Pass all 40"
        with pytest.raises(ValueError, match=subset):
            dv.model.NMFDeconv.load(tmp_path / "m", spots[5:25].copy())


@pytest.mark.filterwarnings("ignore:merge_threshold=0.9 would merge every archetype")
@pytest.mark.filterwarnings("ignore:min_spots=1 was not fully applied")
def test_archetypes_load_skips_the_candidates_and_anchor_search(tmp_path, monkeypatch):
    """Archetypes.load read the spots, embedded them and searched for the anchors (2.2 s of a
    0.15 s load for 20k spots x 200 genes), all replaced by the saved parameters."""
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=30, n_archetypes=3, n_markers=5)
    mix.obs["slide"] = pd.Categorical(np.where(np.arange(60) % 3, "a", "b"))
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    model = dv.model.Archetypes(mix, n_archetypes="auto", max_candidates=8, min_spots=1)
    model.train(**TRAIN)
    model.save(tmp_path / "a")
    monkeypatch.setattr(_candidates, "candidate_spots", _no_start)
    monkeypatch.setattr(_candidates, "start_archetypes", _no_start)
    loaded = dv.model.Archetypes.load(tmp_path / "a", mix)
    _same_state(model, loaded)
    assert torch.equal(loaded.module.candidate_samples, model.module.candidate_samples)
    assert np.array_equal(loaded.candidate_rows_, model.candidate_rows_)
    assert loaded.elbow_ is not None and loaded.n_archetypes_raw_ == model.n_archetypes_raw_
    got, expected = loaded.get_archetype_weights(), model.get_archetype_weights()
    assert got.equals(expected)
    assert loaded.get_archetype_profiles().equals(model.get_archetype_profiles())


def test_latent_imputer_holds_its_reference_cells_once(split, tmp_path):
    """SpatialImputer(design='latent') kept an integer reference twice: the DataFrame given
    (init_params_, saved, and read back by load) and the module's float32 buffer made of it;
    after load, both, the int64 one twice the buffer's size. They are one float32 array."""
    spots, ref = split
    spots = spots[:, :30].copy()
    dv.model.SpatialImputer.setup_anndata(spots)
    cells = pd.DataFrame(
        np.asarray(ref.X.todense() if hasattr(ref.X, "todense") else ref.X, dtype=np.int64),
        index=ref.obs_names,
        columns=ref.var_names,
    )
    model = dv.model.SpatialImputer(spots, reference=cells, design="latent", n_hidden=8)
    model.train(**TRAIN)
    model.save(tmp_path / "imp")
    loaded = dv.model.SpatialImputer.load(tmp_path / "imp", spots)
    for m in (model, loaded):
        held = m.init_params_["non_kwargs"]["reference"]
        assert (held.dtypes == np.float32).all()
        assert np.shares_memory(held.to_numpy(), m.module.reference_counts.numpy())
        np.testing.assert_array_equal(held.to_numpy(), cells.to_numpy())
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def _fitted(model) -> dict:
    return {k: v for k, v in vars(model).items() if k.endswith("_") and not k.startswith("_")}


def test_a_saved_reference_is_read_once_to_map_or_prepare_a_query(tmp_path, model_reads):
    """load_query_data(query, folder) read model.pt twice (deltavae's checks, then
    scvi-tools' own read), prepare_query_anndata up to three times (and its genes' reads),
    the parameters held twice meanwhile. Each now reads it once; the query maps as from the
    model itself (its new condition found: the saved registry stays as saved)."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.train(max_epochs=1, enable_progress_bar=False)
    model.save(tmp_path / "ref")
    model_file = str(tmp_path / "ref" / "model.pt")
    query = adata[:30, ::-1].copy()  # genes in another order: prepared first
    query.obs["condition"] = "new"
    dv.model.ZINBVAE.prepare_query_anndata(query, tmp_path / "ref")
    assert model_reads == [model_file]  # read 2 times before
    del model_reads[:]
    mapped = dv.model.ZINBVAE.load_query_data(query, tmp_path / "ref")
    assert model_reads == [model_file]  # read 2 times before
    assert mapped.query_mapping_["new_categories"] == {"condition": ["new"]}
    direct = dv.model.ZINBVAE.load_query_data(query.copy(), model)
    got, want, ref = (m.module.state_dict() for m in (mapped, direct, model))
    assert got.keys() == want.keys()
    for name, value in got.items():
        assert value.shape == want[name].shape, name
        if value.shape == ref[name].shape:  # the reference's weights, as saved
            assert torch.equal(value, ref[name]), name


def test_a_read_kept_for_a_load_goes_where_torch_load_would_put_it(tmp_path):
    """scvi-tools reads a reference with torch.load(map_location=<the device>) and pads its
    tensors against a module already there: the kept read is given on that device too."""
    from deltavae.model._load_state import _held_or_read, keep_read, one_read

    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16).save(tmp_path / "m")
    state = {"w": torch.ones(2)}

    def never(*args, **kwargs):
        raise AssertionError("read from disk again")

    with one_read():
        keep_read(tmp_path / "m", None, ({"registry_": {"a": [1]}}, np.array(["g"]), state))
        attrs, _, read, _ = _held_or_read(never)(tmp_path / "m", False, map_location="meta")
        assert read["w"].device.type == "meta" and state["w"].device.type == "cpu"
        attrs["registry_"]["a"].append(2)  # scvi-tools sets a query up on it
        _, _, _, _ = _held_or_read(never)(tmp_path / "m", False)
        again = _held_or_read(never)(tmp_path / "m", False)[0]
        assert again["registry_"] == {"a": [1]}


def test_a_second_read_in_one_load_is_not_changed_by_what_the_first_caller_did(tmp_path):
    """read_saved gave a second caller inside one load the very dicts it gave the first: a
    key the first popped (load pops the Pyro store) or set was gone or changed for the next."""
    from deltavae.model._load_state import one_read
    from deltavae.model._saved import read_saved

    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16).save(tmp_path / "m")
    with one_read():
        attrs, names, state = read_saved(dv.model.ZINBVAE, tmp_path / "m")
        key = next(iter(state))
        state.pop(key)
        attrs["registry_"] = None
        names[0] = "changed"
        again_attrs, again_names, again_state = read_saved(dv.model.ZINBVAE, tmp_path / "m")
    assert key in again_state and isinstance(again_attrs["registry_"], dict)
    assert again_names[0] == adata.var_names[0]


def test_load_holds_the_fitted_attributes_the_saved_model_held(tmp_path, model_reads):
    """scvi-tools saves the class defaults of attributes ending in "_" and load set them on
    the model: a reload held best_epoch_, diverged_, reference_diverged_ and train_args_ in
    vars(model) that the model saved did not (a trained one, reference_diverged_). The model
    file is read once (load's checks read it, then scvi-tools' load read it again)."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16)
    model.save(tmp_path / "m", save_anndata=True)
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", adata)
    assert model_reads == [str(tmp_path / "m" / "model.pt")]
    _same_state(model, loaded)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the saved AnnData's own notes
        saved = dv.model.ZINBVAE.load(tmp_path / "m")  # its AnnData read as scvi-tools reads it
    assert len(model_reads) == 2 and saved.adata.obs_names.equals(adata.obs_names)
    _same_state(model, saved)
    registry = dv.model.ZINBVAE.load_registry(tmp_path / "m")  # not a load: read on its own
    assert registry["setup_args"] == model.registry_["setup_args"] and len(model_reads) == 3
    assert _fitted(loaded).keys() == _fitted(model).keys()
    assert {"best_epoch_", "diverged_", "reference_diverged_", "train_args_"} <= _fitted(
        model
    ).keys()
    assert model.reference_diverged_ is None and loaded.train_args_ is None


def _cells(seed=0):
    return dv.datasets.synthetic_counts(
        n_cells=120, n_genes=20, n_clusters=2, n_conditions=2, seed=seed
    )


def _trained(cls, adata, **kwargs):
    model = cls(adata, n_latent=3, n_hidden=16, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged, said elsewhere
        model.train(max_epochs=1, batch_size=64)
    return model


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.CGMDVAE])
def test_cell_models_load_genes_in_another_order_on_a_copy(cls, tmp_path):
    """ZINBVAE.load / CGMDVAE.load refused the training genes in another order (with advice
    of two statements), while model.adata = it, every read-out and the spot models' load
    match genes by name: read on a copy in the training order, results written into it."""
    adata = _cells()
    kwargs = {"condition_key": "condition"} if cls is dv.model.CGMDVAE else {}
    cls.setup_anndata(adata, **kwargs)
    model = _trained(cls, adata, **({"n_clusters": 2} if kwargs else {}))
    model.save(tmp_path / "m")
    moved = adata[:, [1, 0, *range(2, 20)]].copy()
    with pytest.warns(UserWarning, match=r"another order \(2 moved; e.g. position 0 .*a copy"):
        loaded = cls.load(tmp_path / "m", moved)
    assert _fitted(loaded).keys() == _fitted(model).keys()  # reference_diverged_ was added
    assert list(moved.var_names) == list(adata.var_names[[1, 0, *range(2, 20)]])
    assert list(loaded.adata.var_names) == list(adata.var_names)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    written = loaded.write_to_adata()
    key = written[0].split("/")[1]
    np.testing.assert_array_equal(moved.obsm[key], model.get_latent_representation())
    assert key not in adata.obsm


def test_load_reads_the_training_genes_of_a_whole_with_more_genes(tmp_path):
    """load refused an AnnData with more genes than the model's (the whole a model of its
    highly variable genes came from) while every read-out and write_to_adata read it by name."""
    adata = _cells()
    genes = adata[:, 5:].copy()
    dv.model.ZINBVAE.setup_anndata(genes)
    model = _trained(dv.model.ZINBVAE, genes)
    model.save(tmp_path / "m")
    whole = adata[:, ::-1].copy()  # 20 genes, the model's 15 of them in another order
    with pytest.warns(UserWarning, match=r"5 genes more than the model's 15; the model reads"):
        loaded = dv.model.ZINBVAE.load(tmp_path / "m", whole)
    assert list(loaded.adata.var_names) == list(model.adata.var_names)
    assert whole.n_vars == 20
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
    key = loaded.write_to_adata()[0].split("/")[1]
    np.testing.assert_array_equal(whole.obsm[key], model.get_latent_representation())
    with pytest.raises(ValueError, match="missing"):  # fewer genes stay refused
        dv.model.ZINBVAE.load(tmp_path / "m", adata[:, 6:].copy())


def test_a_query_model_loads_onto_its_query_with_the_genes_it_lacks(tmp_path):
    """A query model saved with a prefix, loaded onto the query it mapped (5 genes missing),
    was refused with advice to subset by the saved genes (adata[:, genes]), which fails on
    those very genes; and 'saved without its AnnData' advised load(path, adata) without the
    prefix, which finds no model.pt. The query is aligned as load_query_data aligned it."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    vae = _trained(dv.model.ZINBVAE, adata)
    query = _cells(seed=1)[:, 5:].copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # genes missing, nothing new to learn: said there
        q = dv.model.ZINBVAE.load_query_data(query, vae)
    assert q.query_mapping_["n_genes_missing"] == 5
    q.save(tmp_path / "q", prefix="p_")
    with pytest.raises(ValueError, match=r"load\('.*q', adata=adata, prefix='p_'\)"):
        dv.model.ZINBVAE.load(tmp_path / "q", prefix="p_")
    given = query[:, ::-1].copy()
    with pytest.warns(UserWarning, match=r"lacks 5 of the model's 20 genes \(as when it was"):
        loaded = dv.model.ZINBVAE.load(tmp_path / "q", given, prefix="p_")
    assert loaded.is_query_model and loaded.adata.n_vars == 20
    np.testing.assert_array_equal(loaded.get_latent_representation(), q.get_latent_representation())
    loaded.write_to_adata()
    np.testing.assert_array_equal(given.obsm["X_zinbvae"], q.get_latent_representation())
    with pytest.raises(ValueError, match="shares 5 of the reference's 20 genes"):
        dv.model.ZINBVAE.load(tmp_path / "q", query[:, :5].copy(), prefix="p_")


def test_load_names_the_model_for_an_unknown_keyword_and_refuses_a_legacy_conversion(tmp_path):
    """An unknown keyword to load was 'BaseModelClass.load() got an unexpected keyword
    argument' (scvi-tools' class, not the model's); scvi-tools' convert_legacy_save of a
    deltavae save failed with 'No such file ... model_params.pt', leaving an empty folder."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    _trained(dv.model.ZINBVAE, adata).save(tmp_path / "m", prefix="p_")
    with pytest.raises(TypeError, match=r"^ZINBVAE.load\(\) got .*'acellerator' \(did you mean"):
        dv.model.ZINBVAE.load(tmp_path / "m", adata, acellerator="cpu", prefix="p_")
    with pytest.raises(TypeError, match=r"^NMFDeconv.load\(\) got an unexpected keyword .*'foo'"):
        dv.model.NMFDeconv.load(tmp_path / "m", adata, foo=1)
    out = tmp_path / "converted"
    with pytest.raises(ValueError, match=r"current format.*load\('.*m', adata=adata, prefix='p_'"):
        dv.model.ZINBVAE.convert_legacy_save(tmp_path / "m", out, prefix="p_")
    assert not out.exists()
    with pytest.raises(FileNotFoundError, match=r"No saved model in .*prefix='p_'"):
        dv.model.ZINBVAE.convert_legacy_save(tmp_path / "m", out)
    # Saved with its AnnData, which load reads: told to pass adata=adata all the same.
    dv.model.ZINBVAE.load(tmp_path / "m", adata, prefix="p_").save(
        tmp_path / "d", save_anndata=True
    )
    with pytest.raises(ValueError, match=r"load it with ZINBVAE\.load\('[^']*d'\)\.$"):
        dv.model.ZINBVAE.convert_legacy_save(tmp_path / "d", out)


@pytest.mark.parametrize("cls", ["NMFDeconv", "Archetypes", "SpatialImputer", "CGMDVAE"])
def test_load_advice_is_the_call_to_type(cls, tmp_path):
    """A folder of prefixed saves was answered 'load one with NMFDeconv.load(path, adata,
    prefix=...)': placeholders for the folder given, and the AnnData of a spot model is its
    spots; now the folder itself and adata= by keyword, as load takes it."""
    (tmp_path / "p_model.pt").write_bytes(b"")
    data = "adata" if cls == "CGMDVAE" else "spots"
    call = rf"{cls}.load\('{tmp_path}', adata={data}, prefix='p_'\)\.$"
    with pytest.raises(FileNotFoundError, match=call):
        getattr(dv.model, cls).load(tmp_path)


def test_imputer_load_skips_the_pass_over_the_spots(split, tmp_path, monkeypatch, model_reads):
    """SpatialImputer.load (deconvolution) summed every spot's counts for a starting
    abundance that the saved one replaced: a pass over the spots (the whole file on disk)."""
    from deltavae.model import _imputer

    spots, ref = split
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # few shared genes
        model = dv.model.SpatialImputer.from_reference(
            spots[:, :30].copy(), reference=ref, labels_key="cluster", profiles="type"
        )
        model.train(**TRAIN)
    model.save(tmp_path / "imp")
    monkeypatch.setattr(_imputer, "row_sums", _no_start)
    loaded = dv.model.SpatialImputer.load(tmp_path / "imp", spots[:, :30].copy())
    assert model_reads == [str(tmp_path / "imp" / "model.pt")]  # its genes, checks and load
    _same_state(model, loaded)
    assert loaded.get_proportions().equals(model.get_proportions())


def test_latent_library_zinbvae_load_skips_the_library_pass(tmp_path, monkeypatch):
    """ZINBVAE(use_observed_lib_size=False).load read every cell for the library prior's
    means and variances, which the saved buffers replace (scvi-tools' SCVI does the same)."""
    from deltavae.model import _zinbvae

    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    model = _trained(dv.model.ZINBVAE, adata, use_observed_lib_size=False)
    model.save(tmp_path / "m")
    monkeypatch.setattr(_zinbvae, "batch_library_prior", _no_start)
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", adata)
    _same_state(model, loaded)
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )


def test_load_onto_columns_renamed_since_names_the_users_column(tmp_path):
    """deltavae fit renames "/" in obs column names before training ('treat/time' ->
    'treat-time') and saves the model so (--save-model); loaded onto the INPUT file, load
    said "adata.obs lacks 'treat-time' ... add it", naming none of the user's columns, and a
    labels column renamed so was read as every cell unlabelled without a word of 'cell/type'.
    Both name the column closest to the one registered, as setup_anndata does."""
    adata = _cells()
    adata.obs["treat-time"] = adata.obs["condition"]
    adata.obs["cell-type"] = adata.obs["cluster"].astype(str)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="treat-time", labels_key="cell-type")
    _trained(dv.model.CGMDVAE, adata, n_clusters=2).save(tmp_path / "m")
    given = adata.copy()
    given.obs = given.obs.rename(columns={"treat-time": "treat/time", "cell-type": "cell/type"})
    with pytest.raises(KeyError, match=r"lacks 'treat-time' \(did you mean 'treat/time'\?\), a"):
        dv.model.CGMDVAE.load(tmp_path / "m", given)
    given.obs["treat-time"] = given.obs["treat/time"]
    with pytest.warns(UserWarning, match=r"lacks 'cell-type' \(did you mean 'cell/type'\?\), the"):
        dv.model.CGMDVAE.load(tmp_path / "m", given)


@pytest.mark.filterwarnings("ignore:spots and signatures share only")
def test_a_copy_of_a_model_writes_its_results_where_they_can_be_read(split, tmp_path):
    """A model that reads a copy of the AnnData given (from_reference's spots, load onto genes
    in another order) writes into that AnnData; pickled (joblib) or deep-copied, the copy
    took a copy of it along and write_to_adata() filled that: the keys were returned, and
    neither the user's AnnData nor copy.adata held the results. A copy writes into its own
    AnnData, as a copy of any model does (and as one from backed spots did)."""
    import copy
    import pickle

    spots, ref = split
    spots = spots[:, :30].copy()
    imputer = dv.model.SpatialImputer.from_reference(spots, ref, labels_key="cluster", n_hidden=8)
    imputer.train(**TRAIN)
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    _trained(dv.model.ZINBVAE, adata).save(tmp_path / "m")
    with pytest.warns(UserWarning, match="another order"):
        loaded = dv.model.ZINBVAE.load(tmp_path / "m", adata[:, ::-1].copy())
    for model in (imputer, loaded):
        expected = model.adata.copy()
        keys = model.write_to_adata(expected)
        for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
            assert clone.write_to_adata() == keys
            for slot, key in (k.split("/") for k in keys):
                np.testing.assert_array_equal(
                    np.asarray(getattr(clone.adata, slot)[key]),
                    np.asarray(getattr(expected, slot)[key]),
                )


def test_a_save_of_another_major_version_is_refused_with_what_reads_it(tmp_path, monkeypatch):
    """A save of a newer deltavae was told "retrain it with this version" (upgrading reads
    it), one of an older major version the same (that version reads it), and one without a
    version "saved by deltavae None"."""
    from deltavae.model import _saved

    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = _trained(dv.model.ZINBVAE, adata)
    monkeypatch.setattr(_saved, "_package_version", lambda: "2.1.0")
    for saved, told in [
        ("3.0.0", r"saved by deltavae 3\.0\.0, newer than .*: upgrade deltavae \(pip install -U"),
        ("1.4.2", r"deltavae 1\.4\.2, .* \(2\.1\.0\) cannot .*pip install 'deltavae==1\.4\.2'"),
        (None, r"saved without its deltavae version .* \(2\.1\.0\) cannot read"),
    ]:
        model.deltavae_version_ = saved
        model.save(tmp_path / str(saved))
        with pytest.raises(ValueError, match=told):
            dv.model.ZINBVAE.load(tmp_path / str(saved), adata)


def test_parameters_another_version_built_are_not_called_damaged(tmp_path, monkeypatch):
    """A save whose checksums hold but whose parameters do not fit the module this deltavae
    builds (a parameter added since, as by a release) was said to be "damaged or changed
    after saving; save the model again", which a user holding only the folder cannot do."""
    import torch

    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    _trained(dv.model.ZINBVAE, adata).save(tmp_path / "m")

    class Later(dv.model.ZINBVAE._module_cls):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.added = torch.nn.Parameter(torch.zeros(2))

    monkeypatch.setattr(dv.model.ZINBVAE, "_module_cls", Later)
    told = r"Missing key.*\"added\".*as saved \(its checksums hold\); this deltavae .*retrain"
    with pytest.raises(ValueError, match=told):
        dv.model.ZINBVAE.load(tmp_path / "m", adata)


def test_saving_over_its_folder_keeps_the_file_the_model_reads(tmp_path, monkeypatch):
    """save(overwrite=True) without the AnnData removes an AnnData saved earlier in the folder;
    a model loaded onto that very file, opened backed, had its data deleted under it (read
    through the open handle until the session ended, then lost); so had a save with it
    that failed."""
    import anndata as ad
    from scvi.model.base import BaseModelClass

    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = _trained(dv.model.ZINBVAE, adata)
    model.save(tmp_path / "m", save_anndata=True)
    backed = ad.read_h5ad(tmp_path / "m" / "adata.h5ad", backed="r")
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", backed)
    loaded.save(tmp_path / "m", overwrite=True)
    assert (tmp_path / "m" / "adata.h5ad").is_file()
    again = dv.model.ZINBVAE.load(tmp_path / "m")
    np.testing.assert_array_equal(
        again.get_latent_representation(), model.get_latent_representation()
    )
    with monkeypatch.context() as patch:  # a save with it that fails: the data stay too
        patch.setattr(BaseModelClass, "save", _disk_full)
        with pytest.raises(OSError, match="No space left"):
            loaded.save(tmp_path / "m", overwrite=True, save_anndata=True)
    assert (tmp_path / "m" / "adata.h5ad").is_file()
    model.save(tmp_path / "m", overwrite=True)  # a model reading other data: removed, as before
    assert not (tmp_path / "m" / "adata.h5ad").exists()


def _disk_full(*args, **kwargs):
    raise OSError(28, "No space left on device")


def test_a_bit_changed_in_the_saved_attributes_is_refused(tmp_path):
    """The parameters' checksums cover the parameters only: a bit flipped in the pickled
    attributes (model.pt's data.pkl: the setup, split, history, the typicality and library
    records, those checksums themselves) loaded silently. Of 60 single-bit flips there in a
    semi-supervised CGMDVAE's file, 14 loaded, with other predicted labels, sampled counts,
    history or training arguments, and 7 failed inside pickle or pandas (UnicodeDecodeError,
    IndexError, ModuleNotFoundError: No module named '_^builtin__'). The CRC-32 that the zip
    archive keeps of each record is checked."""
    adata = _cells()
    dv.model.ZINBVAE.setup_anndata(adata)
    model = _trained(dv.model.ZINBVAE, adata)
    model.save(tmp_path / "m")
    path = tmp_path / "m" / "model.pt"
    raw = bytearray(path.read_bytes())
    needle = model.train_indices_.tobytes()  # numpy's bytes, inside data.pkl (cells < 128)
    assert raw.count(needle) == 1
    raw[raw.find(needle)] ^= 1  # the first training cell, another one
    path.write_bytes(bytes(raw))
    damaged = r"corrupted or truncated .*record 'model/data.pkl' does not match the CRC-32"
    with pytest.raises(ValueError, match=damaged):
        dv.model.ZINBVAE.load(tmp_path / "m", adata)
    with pytest.raises(ValueError, match=damaged):
        dv.model.ZINBVAE.load_query_data(adata, tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)  # saved again: loads
    np.testing.assert_array_equal(
        dv.model.ZINBVAE.load(tmp_path / "m", adata).train_indices_, model.train_indices_
    )


@pytest.mark.filterwarnings("ignore:spots and signatures share only")
def test_a_save_of_another_class_names_the_call_that_reads_it(split, tmp_path):
    """ZINBVAE.load_query_data(cells, the folder of an NMFDeconv) advised
    "use NMFDeconv.load_query_data", which NMFDeconv has not ("type object 'NMFDeconv' has
    no attribute 'load_query_data'"), and the refusals said "a NMFDeconv model"."""
    spots, cells = split
    spots = spots.copy()
    dv.model.NMFDeconv.setup_anndata(spots)
    dv.model.NMFDeconv(spots, n_components=3, n_hidden=8).save(tmp_path / "nmf")
    with pytest.raises(ValueError, match=r"is an NMFDeconv model, which maps no query: load"):
        dv.model.ZINBVAE.load_query_data(cells.copy(), tmp_path / "nmf")
    with pytest.raises(ValueError, match=r"with NMFDeconv\.load\('.*nmf', adata=spots\)"):
        dv.model.CGMDVAE.prepare_query_anndata(cells.copy(), tmp_path / "nmf")
    with pytest.raises(ValueError, match=r"an NMFDeconv model; use NMFDeconv\.load, not ZINB"):
        dv.model.ZINBVAE.load(tmp_path / "nmf", spots)


@pytest.mark.parametrize("cls", [dv.model.ZINBVAE, dv.model.NMFDeconv])
def test_load_without_an_anndata_as_scvi_tools_does_is_named(cls, tmp_path):
    """load(path, adata=False), scvi-tools 1.4's load without data, was told "adata must be
    an AnnData (cells x genes); got bool. Wrap a table or a matrix with anndata.AnnData(X)"."""
    unit = "spots" if cls is dv.model.NMFDeconv else "cells"
    told = rf"adata=False\) loads a model without an AnnData in scvi-tools.*the training {unit}"
    with pytest.raises(TypeError, match=told + r", or adata=None for the AnnData saved"):
        cls.load(tmp_path, adata=False)


def test_load_onto_categories_renamed_since_names_the_training_ones(tmp_path):
    """A condition renamed since training ('stim' -> 'STIM') was refused with advice to map it
    as a new condition (load_query_data, which would learn it anew rather than read it as
    the model's 'stim'), and a renamed label with "Mark those cells unlabelled" alone,
    naming none of the model's labels. Both name the training category it is close to."""
    adata = _cells()
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str).map({"0": "B", "1": "T cell"})
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    _trained(dv.model.CGMDVAE, adata, n_clusters=2).save(tmp_path / "m")
    given = adata.copy()
    given.obs["condition"] = given.obs["condition"].cat.rename_categories({"stim": "STIM"})
    renamed = r"\('STIM': did you mean 'stim'\? A category renamed since training is read .*back"
    with pytest.raises(ValueError, match=r"known: \['ctrl', 'stim'\]\. " + renamed):
        dv.model.CGMDVAE.load(tmp_path / "m", given)
    given = adata.copy()
    given.obs["cell_type"] = given.obs["cell_type"].replace({"T cell": "T-cell"})
    known = r"not trained with: \['T-cell'\] \(its labels: \['B', 'T cell'\]\)\. "
    with pytest.raises(ValueError, match=known + r"\('T-cell': did you mean 'T cell'\? "):
        dv.model.CGMDVAE.load(tmp_path / "m", given)


def test_a_save_of_scvi_tools_is_named_as_scvi_tools(tmp_path):
    """A folder scvi-tools' SCVI saved, given to a deltavae load, was told "use SCVI.load",
    which deltavae has not (dv.model.SCVI: AttributeError): scvi-tools' class is named."""
    import scvi

    adata = _cells()
    scvi.model.SCVI.setup_anndata(adata, layer="counts")
    scvi.model.SCVI(adata, n_latent=2, n_hidden=8).save(tmp_path / "s")
    told = r"holds a model of scvi-tools' SCVI, not of deltavae: use scvi\.model\.SCVI\.load"
    with pytest.raises(ValueError, match=told + r", not ZINBVAE\.load\."):
        dv.model.ZINBVAE.load(tmp_path / "s", adata)
    with pytest.raises(ValueError, match=told + r"_query_data, not CGMDVAE\.load_query_data\."):
        dv.model.CGMDVAE.load_query_data(adata.copy(), tmp_path / "s")


def test_an_anndata_saved_with_the_model_and_changed_since_is_refused(tmp_path):
    """The AnnData save_anndata=True writes beside the model was read as it was found: of 24
    single-bit flips in a ZINBVAE's adata.h5ad, 6 crashed Python inside HDF5 (segmentation
    fault), 1 loaded other counts and latents silently, 2 failed in h5py's words (KeyError,
    RuntimeError). save keeps the file's checksum (CRC-32) with the model
    (saved_anndata_digest_) and load checks it before the file is opened."""
    x = np.random.default_rng(0).poisson(3.0, (60, 12)).astype(np.float32)
    x[0, 0] = 6.0  # 1.5 * 2**2: its exponent's last bit flipped, 3.0 (counts all the same)
    adata = ad.AnnData(x)
    adata.obs_names = [f"c{i}" for i in range(60)]
    adata.var_names = [f"g{i}" for i in range(12)]
    dv.model.ZINBVAE.setup_anndata(adata)
    model = _trained(dv.model.ZINBVAE, adata)
    model.save(tmp_path / "m", save_anndata=True)
    path = tmp_path / "m" / "adata.h5ad"
    raw = bytearray(path.read_bytes())
    needle = x[0].tobytes()
    assert raw.count(needle) == 1
    raw[raw.find(needle) + 2] ^= 0x80  # x[0, 0]: 6.0 -> 3.0
    path.write_bytes(bytes(raw))
    told = r"AnnData saved with the model in .* is not the file saved \(adata.h5ad's checksum"
    with pytest.raises(ValueError, match=told + r".*you trust: ZINBVAE\.load\('.*m', adata=adata"):
        dv.model.ZINBVAE.load(tmp_path / "m")
    assert re.fullmatch("crc32:[0-9a-f]{8}", model.saved_anndata_digest_)
    # Passed explicitly, the file is the user's to vouch for; saved again without it, the
    # digest goes with the AnnData.
    assert dv.model.ZINBVAE.load(tmp_path / "m", adata).saved_anndata_digest_ is not None
    model.save(tmp_path / "m", overwrite=True)
    assert model.saved_anndata_digest_ is None and not path.exists()
    model.save(tmp_path / "m", overwrite=True, save_anndata=True, prefix="p_")
    loaded = dv.model.ZINBVAE.load(tmp_path / "m", prefix="p_")
    np.testing.assert_array_equal(
        loaded.get_latent_representation(), model.get_latent_representation()
    )
