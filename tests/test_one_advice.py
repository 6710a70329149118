"""One wording for one problem, whichever method meets it (duplicated checks had drifted
apart and gave different advice for the same mistake)."""

import re

import numpy as np
import pytest

import deltavae as dv

TRAIN = {"enable_progress_bar": False}


def _message(call) -> str:
    with pytest.raises(TypeError) as info:
        call()
    return str(info.value)


def _without_call(message: str) -> str:
    """The advice without the method's own call (", then ZINBVAE.load(dir_path, adata).")."""
    return re.sub(r"(, then |: )\w+\.\w+\([\w, ]*\)\.?$", "", message).rstrip(".")


@pytest.fixture
def saved(counts_adata, tmp_path):
    dv.model.ZINBVAE.setup_anndata(counts_adata)
    model = dv.model.ZINBVAE(counts_adata, n_latent=2, n_hidden=8)
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "vae")
    return model, str(tmp_path / "vae")


def test_a_path_or_swapped_arguments_get_the_same_advice_from_every_method(
    saved, counts_adata, tmp_path
):
    """load(path, "cells.h5ad") said "ZINBVAE.load's adata must be an AnnData" where
    setup_anndata and write_to_adata said "adata must be an AnnData (cells x genes)";
    load(path, path) advised anndata.read_h5ad for a saved model's folder, which
    prepare_query_anndata called a swap and load_query_data "got str"; load(adata, path)
    and save(adata) worded the AnnData-for-a-folder differently."""
    model, path = saved
    Z = dv.model.ZINBVAE
    file = "cells.h5ad"
    on_file = [
        lambda: Z.load(path, file),
        lambda: Z.setup_anndata(file),
        lambda: model.write_to_adata(file),
        lambda: model.get_latent_representation(file),
        lambda: Z.prepare_query_anndata(file, path),
        lambda: Z.load_query_data(file, path),
    ]
    said = {_without_call(_message(call)) for call in on_file}
    assert said == {
        "adata must be an AnnData (cells x genes); got the path 'cells.h5ad'. Read it first: "
        "adata = anndata.read_h5ad(path) (or deltavae.read_lazy(path), which leaves the "
        "counts on disk)"
    }
    assert _message(on_file[0]).endswith(", then ZINBVAE.load(dir_path, adata).")
    on_folder = [
        lambda: Z.load(path, path),
        lambda: Z.prepare_query_anndata(path, counts_adata),
        lambda: Z.load_query_data(path, counts_adata),
        lambda: model.get_latent_representation(path),
    ]
    for call in on_folder:
        assert f"got the folder {path!r}, which holds a saved model. Pass the AnnData" in (
            _message(call)
        )
    assert _message(on_folder[0]).endswith(
        "Pass the AnnData as adata: ZINBVAE.load(dir_path, adata)."
    )
    as_folder = [
        (lambda: Z.load(counts_adata, path), "ZINBVAE.load", ", then the AnnData"),
        (lambda: model.save(counts_adata), "model.save", ""),
        (lambda: Z.view_setup_args(counts_adata), "ZINBVAE.view_setup_args", ""),
    ]
    for call, method, then in as_folder:
        assert _message(call).startswith(f"{method} takes the model's folder as dir_path{then}: ")
        assert _message(call).endswith("; got an AnnData as dir_path.")
    # A zarr store is read with read_zarr (the advice for a file said read_h5ad).
    store = str(tmp_path / "cells.zarr")
    counts_adata[:5].copy().write_zarr(store)
    for call in (lambda: Z.load(path, store), lambda: Z.setup_anndata(store)):
        assert "Read it first: adata = anndata.read_zarr(path)" in _message(call)
    for call in (lambda: Z.setup_anndata(None), lambda: Z.load_query_data(None, path)):
        assert _message(call).startswith("adata must be an AnnData (cells x genes); got None.")
    assert np.isfinite(Z.load(path, counts_adata).get_latent_representation()).all()


def test_genes_in_another_order_get_one_warning_from_load_and_every_read_out(saved, counts_adata):
    """load (in_training_order) said "adata has the same genes in another order (60 moved;
    ...); the model reads a copy ..." and the read-outs and model.adata = (match_genes)
    "adata has the model's 60 genes in another order; they are reordered by name ...": one
    reordering, one warning, which names what moved."""
    model, path = saved
    backwards = counts_adata[:, ::-1].copy()

    def told(call) -> list[str]:
        with pytest.warns(UserWarning) as record:
            call()
        return [str(w.message) for w in record if "another order" in str(w.message)]

    said = [
        told(lambda: dv.model.ZINBVAE.load(path, backwards)),
        told(lambda: model.get_latent_representation(backwards)),
        told(lambda: model.write_to_adata(backwards)),
        told(lambda: setattr(model, "adata", backwards.copy())),
    ]
    assert all(s == said[0] for s in said)
    assert said[0] == [
        "adata has the same genes in another order (60 moved; e.g. position 0 holds "
        "'gene_59', the model's gene there is 'gene_0'); the model reads a copy with them in "
        "the training order, by name (adata itself is unchanged: model.write_to_adata(adata) "
        "writes the results into it, and results by gene follow the training order)."
    ]


def _bad_training_calls(n_rows: int) -> dict:
    """Arguments each refused before training, by a message that names the model's rows."""
    return {
        "max_epochs": {"max_epochs": 0},
        "train_size": {"train_size": 0},
        "validation_size": {"train_size": 0.5, "validation_size": 0.001},
        "no validation": {"train_size": 1 - 0.5 / n_rows},
        "restore_best": {"train_size": 1.0, "restore_best": True},
        "early_stopping": {"train_size": 1.0, "early_stopping": True},
        "external_indexing": {
            "restore_best": True,
            "datasplitter_kwargs": {"external_indexing": [np.arange(n_rows)]},
        },
        "drop_last": {"batch_size": 10 * n_rows, "datasplitter_kwargs": {"drop_last": True}},
        "reduce_lr": {"train_size": 1.0, "plan_kwargs": {"reduce_lr_on_plateau": True}},
        "batch norm": {"batch_size": 1},
        "last of one": {"batch_size": 5, "datasplitter_kwargs": {"drop_last": False}},
        "shuffle": {"datasplitter_kwargs": {"shuffle": True}},
        # scvi-tools' sparse CSR minibatches reached the encoder: "Sparse CSR tensors do not
        # have is_contiguous", after the model was built and the data split.
        "load_sparse_tensor": {"datasplitter_kwargs": {"load_sparse_tensor": True}},
        "shuffle_block_size": {"shuffle_block_size": 0},
    }


@pytest.mark.parametrize(("model", "unit"), [("ZINBVAE", "cell"), ("Archetypes", "spot")])
def test_training_refusals_name_cells_or_spots_where_they_are_worded(model, unit):
    """A spot model's refusals were a cell model's rewritten by a regex over the finished
    message: the user's own values were rewritten too (early_stopping_monitor='cell loss'
    was quoted back as 'spot loss'), and refusals outside it (datasplitter_kwargs['shuffle'],
    shuffle_block_size) still said cells."""
    adata = dv.datasets.synthetic_counts(n_cells=40, n_genes=12, n_clusters=2, seed=0)
    cls = getattr(dv.model, model)
    cls.setup_anndata(adata)
    trained = cls(adata, n_latent=2) if model == "ZINBVAE" else cls(adata, n_archetypes=2)
    other = "spot" if unit == "cell" else "cell"
    for what, kwargs in _bad_training_calls(adata.n_obs).items():
        with pytest.raises(ValueError) as info:
            trained.train(**{"max_epochs": 1, **TRAIN, **kwargs})
        message = str(info.value)
        assert re.search(rf"\b{unit}s?\b", message), (what, message)
        assert not re.search(rf"\b{other}s?\b", message), (what, message)
    with pytest.raises(ValueError, match="early_stopping_monitor='cell loss' is not a metric"):
        trained.train(max_epochs=1, early_stopping_monitor="cell loss", **TRAIN)


def test_a_path_where_an_anndata_goes_names_the_reader_of_its_format(tmp_path):
    """Every path was told anndata.read_h5ad: a zarr store, Cell Ranger's folder or .h5."""
    (tmp_path / "filtered").mkdir()
    (tmp_path / "filtered" / "matrix.mtx.gz").write_bytes(b"")
    readers = {
        str(tmp_path / "filtered"): "adata = scanpy.read_10x_mtx(path), then",
        "filtered_feature_bc_matrix.h5": "adata = scanpy.read_10x_h5(path), then",
        "atlas.zarr": "adata = anndata.read_zarr(path) (or deltavae.read_lazy(path)",
        "atlas.h5ad": "adata = anndata.read_h5ad(path) (or deltavae.read_lazy(path)",
    }
    for path, reader in readers.items():
        with pytest.raises(TypeError, match=re.escape(f"Read it first: {reader}")):
            dv.model.ZINBVAE.setup_anndata(path)


@pytest.mark.parametrize("model", ["NMFDeconv", "SpatialImputer"])
def test_from_reference_tells_how_to_read_a_file_name(counts_adata, model):
    """from_reference("spots.h5ad", ...) said "got str" (NMFDeconv: and that a table of
    signatures goes to NMFDeconv(spots, signatures=table)), not to read the file."""
    cls = getattr(dv.model, model)
    for spots, reference, name in (
        ("spots.h5ad", counts_adata, "spots"),
        (counts_adata, "ref.h5ad", "reference"),
    ):
        match = (
            rf"^{name} must be an AnnData \((spots|cells) x genes\); got the path '.*'\. Read "
            rf"it first: {name} = anndata.read_h5ad\(path\) .*, then {model}.from_reference"
        )
        with pytest.raises(TypeError, match=match):
            cls.from_reference(spots, reference=reference, labels_key="cluster")
