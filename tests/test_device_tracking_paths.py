"""Public paths added or changed since the last GPU run (commit 887c3ff7, 2026-12-04) that the
other tracking files leave out, followed with each tensor's would-be device
(:mod:`_device_tracker`, as in test_device_tracking.py): ``sample(label=...)``, read-outs of
some cells (``indices=``), differential expression by ``mode="change"``, ``translate`` of the
model's own cells (``adata=None``); a CGMDVAE saved, loaded and trained on, and one refitted
after loading (``refit_mixture=True``); the spot models' read-outs of new spots
(``impute(adata=...)``, ``get_proportions``, ``get_abundance``, the imputer's latent of new
spots) and a panel gene no spot counts; the spot models saved, loaded and trained on;
``SpatialImputer.cross_validate`` (whose models are built and trained inside); models of an
AnnData left on disk (an .h5ad opened ``backed="r"``, a zarr store read lazily); and
``deltavae fit``, the command line, for every model."""

import numpy as np
import pytest
from _device_tracker import DeviceTracker, on_device, track_moves
from _stores import read_store, write_store
from scipy import sparse

import deltavae as dv

TRAIN = {"accelerator": "cpu", "enable_progress_bar": False, "batch_size": 64}
ALL_MODELS = (
    dv.model.ZINBVAE,
    dv.model.CGMDVAE,
    dv.model.NMFDeconv,
    dv.model.SpatialImputer,
    dv.model.Archetypes,
)


def _counts(seed=0, n_genes=40):
    adata = dv.datasets.synthetic_counts(
        n_cells=200, n_genes=n_genes, n_clusters=3, n_conditions=2, seed=seed
    )
    adata.obs["cell_type"] = "t" + adata.obs["cluster"].astype(str)
    return adata


def _spots(n_measured: int | None = 100):
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=120, n_clusters=3, seed=1)
    spots, ref = dv.datasets.pseudo_spots(cells, "cluster", n_spots=40, seed=0)
    return spots[:, spots.var_names[:n_measured]].copy(), ref


@pytest.fixture
def trained_on_device(monkeypatch):
    """Every model's ``train`` marks its module as on the device first: for the paths that
    build their models inside (``cross_validate``, the command line)."""
    track_moves(monkeypatch)
    for cls in ALL_MODELS:

        def marked(self, *args, _train=cls.train, **kwargs):
            on_device(self.module)
            return _train(self, *args, **kwargs)

        monkeypatch.setattr(cls, "train", marked)


def _untracked_mixes(call) -> str:
    """What ``call()`` mixed, its models' modules marked as on the device where they train."""
    tracker = DeviceTracker()
    with tracker:
        call()
    return tracker.report()


# 2-4 s each: in the slow stage, which CI runs too (the default stage keeps under 6 min).
@pytest.mark.slow
def test_cgmdvae_read_outs_since_the_last_gpu_run_stay_on_the_device(tracked):
    adata = _counts()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, n_latent=3, n_hidden=16)
    some = np.arange(5, 120, 2)
    tracked(
        model.module,
        {
            "sample by label": lambda: model.sample(10, label="t1", seed=0),
            "sample by label in parts": lambda: model.sample(20, label="t2", seed=0, batch_size=7),
            "clusters of some cells": lambda: model.predict_clusters(indices=some, soft=True),
            "soft labels of some cells": lambda: model.predict_labels(indices=some, soft=True),
            "typicality of some cells": lambda: model.predict_labels(
                indices=some, unknown_below=0.3
            ),
            "de by change": lambda: model.differential_expression(
                groupby="cell_type", group1="t0", mode="change"
            ),
            "translate its own cells": lambda: model.translate(None, "stim", seed=0),
            "reconstruction": model.get_reconstruction_error,
        },
        train=lambda: model.train(max_epochs=2, **TRAIN),
    )


@pytest.mark.slow
def test_a_loaded_cgmdvae_trains_on_on_the_device(tracked, tmp_path):
    adata = _counts()
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition", labels_key="cell_type")
    model = dv.model.CGMDVAE(adata, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, **TRAIN)
    model.save(tmp_path / "labelled")
    loaded = dv.model.CGMDVAE.load(tmp_path / "labelled", adata, accelerator="cpu")
    ctrl = adata[adata.obs["condition"] == "ctrl"].copy()
    tracked(
        loaded.module,
        {
            "labels": lambda: loaded.predict_labels(unknown_below=0.2),
            "translate": lambda: loaded.translate(ctrl, "stim", seed=0),
            "sample": lambda: loaded.sample(5, seed=0),
        },
        train=lambda: loaded.train(max_epochs=1, **TRAIN),
    )


@pytest.mark.slow
def test_a_loaded_cgmdvae_refits_its_mixture_on_the_device(tracked, tmp_path):
    """Refitted onto clusters of its latent space after loading (``refit_mixture=True``)."""
    free = _counts()
    dv.model.CGMDVAE.setup_anndata(free, condition_key="condition")
    model = dv.model.CGMDVAE(free, n_clusters=3, n_latent=3, n_hidden=16)
    model.train(max_epochs=1, mixture_init="kmeans", refit_mixture=False, **TRAIN)
    model.save(tmp_path / "free")
    loaded = dv.model.CGMDVAE.load(tmp_path / "free", free, accelerator="cpu")
    tracked(
        loaded.module,
        {"sample": lambda: loaded.sample(5, seed=0)},
        train=lambda: loaded.train(max_epochs=1, refit_mixture=True, **TRAIN),
    )


def test_spot_read_outs_of_new_spots_stay_on_the_device(tracked):
    measured, ref = _spots()
    new = measured[3:20].copy()
    for design in ("deconvolution", "latent"):
        imputer = dv.model.SpatialImputer.from_reference(
            measured.copy(), ref, labels_key="cluster", design=design
        )
        calls = {"impute new spots": lambda m=imputer: m.impute(adata=new.copy())}
        if design == "deconvolution":
            calls["abundance"] = imputer.get_abundance
            calls["abundance, some spots"] = lambda m=imputer: m.get_abundance(
                indices=np.arange(3, 20)
            )
            calls["proportions of new spots"] = lambda m=imputer: m.get_proportions(
                new.copy(), batch_size=5
            )
        else:
            calls["latent of new spots"] = lambda m=imputer: m.get_latent_representation(new.copy())
        tracked(imputer.module, calls, train=lambda m=imputer: m.train(max_epochs=2, **TRAIN))


def test_a_panel_gene_no_spot_counts_is_read_on_the_device(tracked):
    """The neighbour profiles of the visible genes some spot counts (``observed_cells``): a
    panel gene that is 0 in every spot is left out of the cells' correlations."""
    measured, ref = _spots()
    x = measured.X.toarray() if sparse.issparse(measured.X) else np.array(measured.X)
    x[:, 0] = 0
    measured.X = x
    with pytest.warns(UserWarning, match="1 of the spots' 100 genes are 0 in every spot"):
        imputer = dv.model.SpatialImputer.from_reference(measured, ref, labels_key="cluster")
    assert not bool(imputer.module.observed().all())
    tracked(
        imputer.module,
        {"impute": imputer.impute, "proportions": imputer.get_proportions},
        train=lambda: imputer.train(max_epochs=2, **TRAIN),
    )


def test_spot_models_loaded_train_on_and_read_on_the_device(tracked, tmp_path):
    measured, ref = _spots()
    imputer = dv.model.SpatialImputer.from_reference(
        measured.copy(), ref, labels_key="cluster", design="latent"
    )
    spots, _ = _spots(None)
    deconv = dv.model.NMFDeconv.from_reference(
        spots, reference=ref, labels_key="cluster", inference="per_spot"
    )
    mix = dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0)
    mix.obs["slide"] = np.repeat(["a", "b"], 30)
    dv.model.Archetypes.setup_anndata(mix, sample_key="slide")
    archetypes = dv.model.Archetypes(mix, n_archetypes=3)
    reads = {
        "SpatialImputer": lambda m: {"impute": m.impute, "latent": m.get_latent_representation},
        "NMFDeconv": lambda m: {"proportions": m.get_proportions, "abundance": m.get_abundance},
        "Archetypes": lambda m: {
            "weights": m.get_archetype_weights,
            "write": lambda: m.write_to_adata(mix.copy()),
        },
    }
    for model in (imputer, deconv, archetypes):
        name = type(model).__name__
        model.train(max_epochs=1, **TRAIN)
        model.save(tmp_path / name)
        loaded = type(model).load(tmp_path / name, model.adata, accelerator="cpu")
        on = lambda m=loaded: m.train(max_epochs=1, **TRAIN)  # noqa: E731
        tracked(loaded.module, reads[name](loaded), train=on)


def test_cross_validation_builds_and_trains_on_the_device(trained_on_device):
    cells = dv.datasets.synthetic_counts(n_cells=200, n_genes=60, n_clusters=3, seed=1)
    ref, spots = cells[:100].copy(), cells[100:, :40].copy()
    for design in ("deconvolution", "latent"):
        mixes = _untracked_mixes(
            lambda d=design: dv.model.SpatialImputer.cross_validate(
                spots,
                ref,
                labels_key="cluster",
                n_folds=2,
                max_epochs=1,
                design=d,
                train_kwargs={"enable_progress_bar": False, "accelerator": "cpu"},
            )
        )
        assert not mixes, f"{design}: {mixes}"


@pytest.mark.slow
@pytest.mark.parametrize("store", ["h5ad", "zarr"])
def test_models_of_an_anndata_on_disk_stay_on_the_device(tracked, tmp_path, store):
    """The matrix read from the file in chunks of rows: training, read-outs and results
    written into the file (a zarr store)."""
    data = _counts(n_genes=30)
    data.X = sparse.csr_matrix(data.X)
    del data.layers["counts"]
    cells = read_store(write_store(data, tmp_path / f"cells.{store}"))
    ctrl = cells[(cells.obs["condition"] == "ctrl").to_numpy()]
    if store == "h5ad":
        dv.model.CGMDVAE.setup_anndata(cells, condition_key="condition", labels_key="cell_type")
        model = dv.model.CGMDVAE(cells, n_latent=3, n_hidden=16)
        calls = {
            "labels": lambda: model.predict_labels(unknown_below=0.2),
            "translate": lambda: model.translate(ctrl, "stim", seed=0),
            "latent shift": lambda: model.predict_perturbation(
                ctrl, "stim", method="latent_shift", seed=0
            ),
        }
    else:
        dv.model.ZINBVAE.setup_anndata(cells, batch_key="condition")
        model = dv.model.ZINBVAE(cells, n_latent=3, n_hidden=16)
        calls = {
            "expression": lambda: model.get_normalized_expression(n_samples=2),
            "nearest response": lambda: model.predict_perturbation(
                ctrl,
                "stim",
                method="nearest_response",
                condition_key="condition",
                balance_key="cell_type",
            ),
            "write": model.write_to_adata,
        }
    tracked(model.module, calls, train=lambda: model.train(max_epochs=2, **TRAIN))


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::UserWarning")  # tiny models' notes, printed as notes
@pytest.mark.parametrize("model", ["zinbvae", "cgmdvae", "nmfdeconv", "imputer", "archetypes"])
def test_the_command_line_trains_and_reads_on_the_device(trained_on_device, tmp_path, model):
    """``deltavae fit``: the model it builds trained on the device, then read and written."""
    from deltavae import cli

    if model in ("nmfdeconv", "imputer"):
        spots, ref = _spots(100 if model == "imputer" else None)
        ref.write_h5ad(tmp_path / "ref.h5ad")
        spots.write_h5ad(tmp_path / "in.h5ad")
        extra = ["--reference", str(tmp_path / "ref.h5ad"), "--labels-key", "cluster"]
    elif model == "archetypes":
        dv.datasets.convex_mixtures(n_spots=60, n_genes=60, n_archetypes=3, seed=0).write_h5ad(
            tmp_path / "in.h5ad"
        )
        extra = ["--n-archetypes", "3"]
    else:
        _counts().write_h5ad(tmp_path / "in.h5ad")
        extra = ["--batch-key", "condition"]
        if model == "cgmdvae":
            extra = ["--condition-key", "condition", "--labels-key", "cell_type"]
    argv = ["fit", str(tmp_path / "in.h5ad"), "--model", model, "--out", str(tmp_path / "o.h5ad")]
    argv += ["--epochs", "2", "--no-plots", "--accelerator", "cpu", *extra]
    status = {}
    mixes = _untracked_mixes(lambda: status.setdefault("rc", cli.main(argv)))
    assert status["rc"] == 0
    assert not mixes, mixes
