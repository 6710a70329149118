"""Scale: training on backed (on-disk) AnnData, results written into the file, DDP on CPU."""

import json
import os
import re
import subprocess
import sys
import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from lightning.pytorch.callbacks import Callback
from scipy import sparse

import deltavae as dv
from deltavae.cli import main
from deltavae.train._distributed import resolve_strategy

TRAIN = {"enable_progress_bar": False, "enable_model_summary": False, "batch_size": 64}


@pytest.fixture
def counts_h5ad(tmp_path):
    """300 cells x 60 genes, sparse CSR counts in X and in layers['counts'], on disk."""
    adata = dv.datasets.synthetic_counts(
        n_cells=300, n_genes=60, n_clusters=3, n_conditions=2, seed=0
    )
    adata.X = sparse.csr_matrix(adata.X)
    adata.layers["counts"] = sparse.csr_matrix(adata.layers["counts"])
    path = tmp_path / "counts.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture
def counts_zarr(counts_h5ad):
    """The same cells as a zarr store."""
    path = counts_h5ad.with_suffix(".zarr")
    with ad.settings.override(zarr_write_format=3):
        ad.read_h5ad(counts_h5ad).write_zarr(path)
    return path


def _lazy(path):
    """``dv.read_lazy``: an .h5ad with layers says they are held in memory (anndata's backed
    mode keeps only X on disk); these files have ``layers["counts"]``."""
    if str(path).endswith(".h5ad"):
        with pytest.warns(UserWarning, match="read_lazy keeps only X"):
            return dv.read_lazy(path)
    return dv.read_lazy(path)


def _fit(cls, adata, setup, init, epochs, **train):
    scvi.settings.seed = 0
    cls.setup_anndata(adata, **setup)
    model = cls(adata, n_latent=4, n_hidden=32, **init)
    model.train(max_epochs=epochs, **{**TRAIN, **train})
    return model


@pytest.mark.parametrize(
    ("cls", "setup", "init", "train"),
    [
        (dv.model.ZINBVAE, {"batch_key": "condition"}, {}, {}),
        # The mixture starts from k-means on z: a UMAP embedding can turn the last-bit
        # differences of the two reading paths (about 1e-7 in z) into a different start.
        (
            dv.model.CGMDVAE,
            {"layer": "counts", "condition_key": "condition"},
            {"n_clusters": 3},
            {"mixture_init": "kmeans"},
        ),
    ],
)
@pytest.mark.parametrize("store", ["h5ad", "zarr"])
def test_backed_training_matches_in_memory(
    counts_h5ad, counts_zarr, cls, setup, init, train, store
):
    backed = _lazy(counts_h5ad if store == "h5ad" else counts_zarr)
    assert not isinstance(backed.X, np.ndarray) and not sparse.issparse(backed.X)
    on_disk = _fit(cls, backed, setup, init, epochs=3, **train)
    in_memory = _fit(cls, ad.read_h5ad(counts_h5ad), setup, init, epochs=3, **train)
    np.testing.assert_allclose(
        on_disk.history["elbo_train"].to_numpy(float),
        in_memory.history["elbo_train"].to_numpy(float),
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        on_disk.get_latent_representation(), in_memory.get_latent_representation(), atol=1e-5
    )


@pytest.mark.slow  # 3-7 s: the default run keeps under its 6-minute budget
def test_the_refit_of_a_backed_model_reads_the_counts_as_in_memory(counts_h5ad):
    """The refit joins z's neighbours with the counts' principal components; on a backed
    file it left them out: the same z and ELBOs as in memory, other clusters (ARI 0.13)."""
    setup, init = {"condition_key": "condition"}, {"n_clusters": 3}
    backed = _fit(dv.model.CGMDVAE, ad.read_h5ad(counts_h5ad, backed="r"), setup, init, 8)
    in_memory = _fit(dv.model.CGMDVAE, ad.read_h5ad(counts_h5ad), setup, init, 8)
    np.testing.assert_array_equal(backed.predict_clusters(), in_memory.predict_clusters())


def test_write_to_adata_writes_every_cell_into_the_backed_file(counts_h5ad):
    backed = ad.read_h5ad(counts_h5ad, backed="r")
    model = _fit(dv.model.CGMDVAE, backed, {"condition_key": "condition"}, {"n_clusters": 3}, 2)
    backed.file.close()
    backed.file.open(filemode="r+")
    keys = model.write_to_adata()
    backed.file.close()

    saved = ad.read_h5ad(counts_h5ad)
    z = model.get_latent_representation(saved)
    assert saved.obsm["X_cgmdvae"].shape == (300, 4)
    np.testing.assert_allclose(saved.obsm["X_cgmdvae"], z, atol=1e-6)
    np.testing.assert_allclose(saved.obsm["cgmdvae_cluster_probs"].sum(1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(
        saved.obs["cgmdvae_cluster"].astype(str).to_numpy(),
        np.asarray(model.cluster_names)[model.predict_clusters(saved)],
    )
    assert int(saved.uns["cgmdvae"]["cluster_sizes"].sum()) == 300
    assert sparse.issparse(saved.X) and saved.X.sum() > 0
    assert "obsm/X_cgmdvae" in keys


def test_write_to_read_only_backed_adata_keeps_the_file(counts_h5ad):
    backed = ad.read_h5ad(counts_h5ad, backed="r")
    model = _fit(dv.model.ZINBVAE, backed, {}, {}, epochs=1)
    with pytest.warns(
        UserWarning,
        match=r"open read-only: obsm/X_zinbvae are in memory only.*"
        r"filemode='r\+'.*write_results_to_store\(adata, keys, adata.filename\)",
    ):
        assert model.write_to_adata(backed) == ["obsm/X_zinbvae"]
    assert backed.obsm["X_zinbvae"].shape == (300, 4)
    assert "X_zinbvae" not in ad.read_h5ad(counts_h5ad).obsm
    dv.write_results_to_store(backed, ["obsm/X_zinbvae"], backed.filename)  # as it says
    np.testing.assert_array_equal(
        ad.read_h5ad(counts_h5ad).obsm["X_zinbvae"], backed.obsm["X_zinbvae"]
    )


def test_saving_with_the_anndata_leaves_a_backed_adata_on_its_own_file(counts_h5ad, tmp_path):
    """anndata points a backed AnnData at the file it writes it to: save(save_anndata=True)
    left the user's AnnData naming the model's copy, and results written into it after
    reopening it for writing (as write_to_adata's warning says) landed in that copy."""
    backed = ad.read_h5ad(counts_h5ad, backed="r")
    model = _fit(dv.model.ZINBVAE, backed, {}, {}, epochs=1)
    model.save(tmp_path / "m", save_anndata=True)
    assert backed.filename == counts_h5ad
    backed.file.close()
    backed.file.open(filemode="r+")
    model.write_to_adata(backed)
    backed.file.close()
    assert "X_zinbvae" in ad.read_h5ad(counts_h5ad).obsm
    assert "X_zinbvae" not in ad.read_h5ad(tmp_path / "m" / "adata.h5ad").obsm


def test_cells_of_a_backed_file_are_read_in_the_order_asked_for(counts_h5ad):
    """scvi-tools reads a backed file's cells of a minibatch in file order: indices=[5, 1, 9]
    gave the rows of cells 1, 5 and 9 (get_normalized_expression labelled them 5, 1, 9)."""
    backed = ad.read_h5ad(counts_h5ad, backed="r")
    model = _fit(dv.model.ZINBVAE, backed, {}, {}, epochs=1)
    cells = [5, 1, 9, -1, 1]
    z = model.get_latent_representation()
    # Equal up to float32 summation order (a minibatch of other cells: 1.5e-7 in CI).
    np.testing.assert_allclose(model.get_latent_representation(indices=cells), z[cells], atol=1e-6)
    torch.manual_seed(0)
    picked = model.get_normalized_expression(indices=cells[:4])
    torch.manual_seed(0)
    expected = model.get_normalized_expression(ad.read_h5ad(counts_h5ad)[cells[:4]].copy())
    pd.testing.assert_frame_equal(picked, expected)


def test_a_view_of_a_backed_adata_is_read_like_the_file(counts_h5ad):
    """A subset of a backed AnnData (``adata[mask]``, the README's translate idiom) is read into
    memory for the call: anndata cannot copy a backed view as scvi-tools would."""
    backed = ad.read_h5ad(counts_h5ad, backed="r")
    model = _fit(dv.model.CGMDVAE, backed, {"condition_key": "condition"}, {"n_clusters": 3}, 2)
    ctrl = backed[backed.obs["condition"] == "ctrl"]
    in_memory = ad.read_h5ad(counts_h5ad)
    expected = model.get_latent_representation(
        in_memory[in_memory.obs["condition"] == "ctrl"].copy()
    )
    np.testing.assert_allclose(model.get_latent_representation(ctrl), expected, atol=1e-6)
    moved = model.translate(ctrl, "stim", response_weight=0)
    assert moved.n_obs == ctrl.n_obs and (moved.obs["condition"] == "stim").all()
    assert ctrl.is_view and ctrl.isbacked  # the caller's view is left as it was


class _ReplicaCheck(Callback):
    """Logs the plate size each process uses and how far the processes' parameters differ."""

    def on_train_epoch_end(self, trainer, pl_module):
        flat = torch.cat([p.detach().flatten() for p in pl_module.module.parameters()])
        gathered = trainer.strategy.all_gather(flat)
        pl_module.log("replica_spread", (gathered - gathered[0]).abs().max())
        pl_module.log("plate_size", float(pl_module.module.n_obs))


_DDP_CASES = {
    "ZINBVAE": ({"batch_key": "condition"}, {}),
    "CGMDVAE": ({"condition_key": "condition"}, {"n_clusters": 3}),
}


def _ddp_histories(name: str, path: str) -> dict:
    """Train with 2-process DDP and with one process; the histories the test checks."""
    torch.set_num_threads(1)
    cls = getattr(dv.model, name)
    setup, init = _DDP_CASES[name]
    epochs = 10
    ddp = _fit(
        cls,
        ad.read_h5ad(path, backed="r"),
        setup,
        init,
        epochs,
        strategy="ddp",
        devices=2,
        accelerator="cpu",
        batch_size=32,
        callbacks=[_ReplicaCheck()],
    )
    single = _fit(cls, ad.read_h5ad(path), setup, init, epochs)
    out = {
        "train": ddp.history["elbo_train"]["elbo_train"],
        "val": ddp.history["elbo_validation"]["elbo_validation"],
        "ref": single.history["elbo_validation"]["elbo_validation"],
        "plate_size": ddp.history["plate_size"]["plate_size"],
        "replica_spread": ddp.history["replica_spread"]["replica_spread"],
    }
    out = {k: v.to_numpy(float).tolist() for k, v in out.items()}
    out["latent_finite"] = bool(np.isfinite(ddp.get_latent_representation()).all())
    out["same_split"] = [
        getattr(ddp, f"{part}_indices") is not None
        and np.array_equal(getattr(ddp, f"{part}_indices"), getattr(single, f"{part}_indices"))
        for part in ("train", "validation")
    ]
    out["best_epoch"] = ddp.best_epoch_
    return out


def _in_fresh_interpreter(what: str, path) -> dict:
    """This file run as a script (see its end) with ``what`` and ``path``: what it printed."""
    proc = subprocess.run(
        [sys.executable, __file__, what, str(path)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Forks two training processes (about 50 s for both models): in the slow stage.
@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(_DDP_CASES))
def test_ddp_on_two_cpu_processes(counts_h5ad, name):
    """Two processes of 32 cells per step match one process of 64: same steps per epoch.

    DDP forks its workers; forking a process that has already run OpenMP/BLAS thread pools
    (as the rest of this test session has) can deadlock the children, so the check runs in a
    fresh interpreter, as a user's script would.
    """
    h = _in_fresh_interpreter(name, counts_h5ad)
    train, val, ref = (np.array(h[k]) for k in ("train", "val", "ref"))
    assert len(train) == len(val) == 10
    assert np.isfinite(train).all() and np.isfinite(val).all()
    assert val[-1] < val[0] and train[-1] < train[0]
    # Same shape as one process: falling over the run, final ELBO within 3%.
    assert (ref[-1] < ref[0]) and abs(val[-1] - ref[-1]) < 0.03 * abs(ref[-1])
    # Each process scales its minibatch to all training cells, and replicas stay identical
    # (for CGMDVAE also through the k-means initialisation of the mixture at epoch 1).
    assert all(size == 270 for size in h["plate_size"])
    assert max(h["replica_spread"]) < 1e-6
    assert h["latent_finite"]
    # The cells that trained and validated are known after the run, as in one process (the
    # worker processes split them; CGMDVAE's mixture refit reads the training cells).
    assert h["same_split"] == [True, True]
    # CGMDVAE keeps its best full-ELBO epoch (after the 5 warm-up epochs), also under DDP.
    assert h["best_epoch"] == (None if name == "ZINBVAE" else 5 + int(np.argmin(val[5:])))


class _PoisonRankZero(Callback):
    """Makes the first parameter of process 0 alone NaN after epoch 1, step 1."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank == 0 and (trainer.current_epoch, batch_idx) == (1, 1):
            with torch.no_grad():
                next(pl_module.module.parameters()).fill_(float("nan"))


class _PoisonRankOneInValidation(Callback):
    """Makes the first parameter of process 1 alone NaN before its first validation batch of
    epoch 1."""

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, *args):
        if trainer.global_rank == 1 and trainer.current_epoch == 1 and batch_idx == 0:
            if not trainer.sanity_checking:
                with torch.no_grad():
                    next(pl_module.module.parameters()).fill_(float("nan"))


def _ddp_divergence(path: str, validation: bool = False, data: bool = False) -> dict:
    """Two-process DDP where one process's loss (training or, with ``validation``,
    validation) becomes NaN, or (``data``) a validation cell's count overflows: what the
    caller gets."""
    torch.set_num_threads(1)
    adata = ad.read_h5ad(path)
    if data:  # cell 0 validates (shuffle_set_split=False below)
        adata.X = adata.X.toarray().astype(np.float32)
        adata.X[0, 0] = 3e38
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=32)
    before = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    callbacks = [_PoisonRankOneInValidation() if validation else _PoisonRankZero()]
    ddp = {"strategy": "ddp", "devices": 2, "accelerator": "cpu", "batch_size": 32}
    if data:
        callbacks, ddp = [], {**ddp, "shuffle_set_split": False}
    try:
        model.train(max_epochs=4, callbacks=callbacks, **{**TRAIN, **ddp})
        error = None
    except Exception as err:  # noqa: BLE001 - the test checks which
        error = err
    after = torch.cat([p.detach().flatten() for p in model.module.parameters()])
    return {
        "error": type(error).__name__,
        "message": str(error),
        "step": [getattr(error, "epoch", None), getattr(error, "step", None)],
        "unchanged": bool(torch.equal(before, after)),
        "trained": bool(model.is_trained_),
    }


class _TrainingCells(Callback):
    """Logs how far the processes' training cells differ and a checksum of them."""

    def on_train_epoch_end(self, trainer, pl_module):
        cells = torch.as_tensor(np.sort(trainer.datamodule.train_idx))
        gathered = trainer.strategy.all_gather(cells)
        pl_module.log("split_spread", (gathered - gathered[0]).abs().max().float())
        pl_module.log("split_checksum", float(_checksum(cells.numpy())))


def _checksum(cells: np.ndarray) -> int:
    return int((np.sort(cells) * np.arange(1, len(cells) + 1)).sum()) % 1_000_003


def _ddp_split(path: str) -> dict:
    """Two-process DDP with scvi.settings.seed unset (scvi-tools' default): the training
    cells of each process and those the model records; and the device of the calling
    process's module after the fit, with the run's first device faked as ``meta`` (on GPUs
    ``cuda:0``: the forked workers train there, the caller's module never left the CPU)."""
    import scvi.train._trainrunner as runner

    torch.set_num_threads(1)
    scvi.settings.seed = None
    devices = runner.parse_device_args
    runner.parse_device_args = lambda *a, **k: (*devices(*a, **k)[:2], torch.device("meta"))
    adata = ad.read_h5ad(path)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=32)
    ddp = {"strategy": "ddp", "devices": 2, "accelerator": "cpu", "batch_size": 32}
    model.train(max_epochs=1, callbacks=[_TrainingCells()], **{**TRAIN, **ddp})
    history = {k: float(model.history[k][k].iloc[-1]) for k in ("split_spread", "split_checksum")}
    return {
        **history,
        "recorded": _checksum(model.train_indices),
        "device": str(model.module.device),
    }


@pytest.mark.slow
def test_ddp_processes_share_one_split_of_the_cells(counts_h5ad):
    """With scvi.settings.seed unset, each DDP process drew its own training and validation
    cells (cells one process trained on, the other validated on), and the model recorded
    none: the calling process splits them once, for the workers and the model."""
    out = _in_fresh_interpreter("split", counts_h5ad)
    assert out["split_spread"] == 0
    assert out["split_checksum"] == out["recorded"]
    # As after one device's fit (scvi-tools' runner moves the module to the run's first
    # device): read-outs after a DDP fit on GPUs run on the GPU, not on the CPU.
    assert out["device"] == "meta"


@pytest.mark.slow
def test_a_nan_in_one_ddp_process_stops_all_with_the_divergence_error(counts_h5ad):
    """A process that stopped alone left the other waiting in the gradient exchange, which
    failed with gloo's "Connection closed by peer": the processes now agree when they read
    their losses and all stop, and the caller gets TrainingDivergedError naming the step
    (in a fresh interpreter, as the DDP test above)."""
    out = _in_fresh_interpreter("diverge", counts_h5ad)
    assert out["error"] == "TrainingDivergedError", out["message"][-500:]
    assert "epoch 1, step 2" in out["message"] and out["step"] == [1, 2]
    # The workers' parameters do not come back from a run that stopped: the model keeps its
    # own, and says so.
    assert (
        "from before this training run" in out["message"]
        and "lower learning rate" in out["message"]
    )
    assert out["unchanged"] and not out["trained"]


@pytest.mark.slow
def test_a_validation_nan_in_one_ddp_process_stops_all(counts_h5ad):
    """A validation loss that turns NaN in one process alone stops the run with
    TrainingDivergedError naming the validation (under DDP a pass's losses are read at its
    end, with one all-reduce, whatever each process's count of validation batches)."""
    out = _in_fresh_interpreter("diverge-validation", counts_h5ad)
    assert out["error"] == "TrainingDivergedError", out["message"][-500:]
    assert re.search(
        r"validation loss (of another process )?became nan after epoch 1's", out["message"]
    )


@pytest.mark.slow
def test_a_ddp_validation_loss_not_finite_from_the_data_points_at_the_cells(counts_h5ad):
    """Under DDP the check with the starting parameters was skipped: a count that overflows
    in a held-out cell was blamed on the learning rate."""
    out = _in_fresh_interpreter("diverge-data", counts_h5ad)
    assert out["error"] == "TrainingDivergedError", out["message"][-500:]
    assert "No learning rate can help: the parameters the run started from" in out["message"]
    assert "lower learning rate" not in out["message"]
    assert "from before this training run (DDP's worker processes" in out["message"]


def _sleep():
    import time

    time.sleep(60)


def test_an_interrupted_ddp_fit_stops_its_workers_and_gives_back_ctrl_c():
    """A notebook's interrupt reaches the kernel only: Lightning exited there while the forked
    workers trained on, and left SIGINT ignored."""
    import multiprocessing
    import signal

    from deltavae.train._distributed import cells_per_process, workers_stopped

    handler = signal.getsignal(signal.SIGINT)
    worker = multiprocessing.get_context("fork").Process(target=_sleep)
    with pytest.raises(SystemExit), workers_stopped(True):
        worker.start()
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # as Lightning leaves it
        raise SystemExit(1)
    assert not worker.is_alive() and worker.exitcode is not None
    assert signal.getsignal(signal.SIGINT) is handler
    # Each process's share decides its last minibatch (one cell of 129 per process crashed
    # BatchNorm; the test was on all 258 training cells).
    assert cells_per_process(258, 2) % 32 == 1 and cells_per_process(258, "1") == 258


def test_training_refuses_a_writable_backed_file(counts_h5ad):
    adata = ad.read_h5ad(counts_h5ad, backed="r+")
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata)
    # The advice reopens the model's own AnnData (read_h5ad(path, backed='r') was another).
    fix = r"read-only: adata.file.close\(\); adata.file.open\(filemode='r'\)"
    with pytest.raises(ValueError, match="backed='r\\+'.*" + fix):
        model.train(max_epochs=1, **TRAIN)
    adata.file.close()
    adata.file.open(filemode="r")
    model.train(max_epochs=1, **TRAIN)


def test_unrunnable_strategies_are_refused(counts_h5ad, monkeypatch):
    backed = ad.read_h5ad(counts_h5ad, backed="r")
    with pytest.raises(ValueError, match="'deepspeed' is not supported.*strategy='ddp'"):
        resolve_strategy("deepspeed", "cpu", backed)
    with pytest.raises(ValueError, match="accelerator='mps'.*strategy='auto'"):
        resolve_strategy("ddp", "mps", backed)
    with pytest.raises(ValueError, match="cannot be pickled; use strategy='ddp'"):
        resolve_strategy("ddp_spawn", "cpu", backed)
    from lightning.pytorch.strategies import DDPStrategy

    with pytest.raises(ValueError, match="'nccl' cannot run on the CPU; use 'gloo'"):
        resolve_strategy(DDPStrategy(process_group_backend="nccl"), "cpu", backed)
    # CUDA initialised here: by a model on the GPU, a DDP fit's among them (its model comes
    # back on its first GPU), which the message said nothing of.
    with monkeypatch.context() as patched:
        patched.setattr(torch.cuda, "is_initialized", lambda: True)
        with pytest.raises(ValueError, match=r"a DDP fit's, whose model comes back .* Restart"):
            resolve_strategy("ddp", "gpu", backed)
        assert resolve_strategy("ddp", "cpu", backed)[1]  # CPU processes use no CUDA
    dv.model.ZINBVAE.setup_anndata(backed)
    model = dv.model.ZINBVAE(backed)
    with pytest.raises(ValueError, match="'fsdp' is not supported"):
        model.train(max_epochs=1, strategy="fsdp", **TRAIN)
    with pytest.raises(ValueError, match="devices=2 or device=1, not both"):
        model.train(max_epochs=1, devices=2, device=1, **TRAIN)


def test_ddp_strategies_are_told_to_find_unused_parameters(counts_h5ad):
    """ "ddp_fork", "ddp_spawn" and DDPStrategy() (the script launcher deltavae advises when
    CUDA was initialised) stopped at the second step with Lightning's "parameters that were
    not used in producing the loss": only "ddp" was told to find them."""
    from lightning.pytorch.strategies import DDPStrategy

    memory = ad.read_h5ad(counts_h5ad)
    assert resolve_strategy("ddp_fork", "cpu", memory) == (
        "ddp_fork_find_unused_parameters_true",
        True,
    )
    # "ddp_spawn" failed in pickling scvi-tools' training plan ("Can't pickle local object").
    with pytest.raises(ValueError, match="^strategy='ddp_spawn' pickles.*training plan cannot"):
        resolve_strategy("ddp_spawn", "cpu", memory)
    script, _ = resolve_strategy(DDPStrategy(), "cpu", memory)
    assert script._ddp_kwargs == {"find_unused_parameters": True}
    # The user's own choice stays, and messages name the strategy as the user wrote it.
    kept = "ddp_fork_find_unused_parameters_false"
    assert resolve_strategy(kept, "cpu", memory)[0] == kept
    assert not resolve_strategy(DDPStrategy(find_unused_parameters=False), "cpu", memory)[
        0
    ]._ddp_kwargs["find_unused_parameters"]
    with pytest.raises(ValueError, match="^strategy='ddp_spawn' pickles"):
        resolve_strategy("ddp_spawn", "cpu", ad.read_h5ad(counts_h5ad, backed="r"))


def test_the_ddp_mixture_start_clusters_every_processs_cells(counts_h5ad):
    """Under DDP rank 0 clustered its own share of the training cells for the mixture start
    (1/N of them: a rare type could go unseen); now all of them, as one process does."""
    from types import SimpleNamespace

    from deltavae.train._data import DeltaDataSplitter, FileOrderDataLoader
    from deltavae.train._mixture_init import MixtureInitialization, encode_cells

    adata = ad.read_h5ad(counts_h5ad)
    dv.model.CGMDVAE.setup_anndata(adata, condition_key="condition")
    model = dv.model.CGMDVAE(adata, n_clusters=3, n_latent=4, n_hidden=16)
    splitter = DeltaDataSplitter(
        model.adata_manager, train_size=0.9, batch_size=64, distributed_sampler=True
    )
    splitter.split()
    trainer = SimpleNamespace(world_size=2, datamodule=splitter)
    model.module.eval()  # as the callback reads them
    z, _, cats, _, _ = MixtureInitialization(epoch=1)._collect(trainer, model.module)
    assert len(z) == len(cats) == len(splitter.train_idx) == 270
    loader = FileOrderDataLoader(model.adata_manager, indices=splitter.train_idx, batch_size=64)
    every = encode_cells(model.module, loader)["z"]
    # The same cells (in the loader's shuffled order): the same set of posterior means.
    np.testing.assert_allclose(np.sort(z.numpy(), 0), np.sort(every.numpy(), 0), atol=1e-6)


def test_every_ddp_process_takes_rank_zeros_split(counts_h5ad):
    """Under Lightning's script launcher (DDPStrategy()) or torchrun each process split the
    cells before the processes met; with scvi.settings.seed unset each drew its own split
    (rank 1 trained on cells rank 0 validated on). Setup takes rank 0's."""
    from types import SimpleNamespace

    from deltavae.train._data import DeltaDataSplitter

    adata = ad.read_h5ad(counts_h5ad)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata)
    rank_zero = (np.arange(30, 300), np.arange(30), np.array([], dtype=int))
    sent = []

    def broadcast(obj, src=0):
        sent.append(obj)
        return rank_zero

    splitter = DeltaDataSplitter(model.adata_manager, train_size=0.9)
    splitter.trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(broadcast=broadcast))
    splitter.setup("fit")
    assert len(sent) == 1 and len(sent[0][0]) == 270  # this process's own split, offered
    split = (splitter.train_idx, splitter.val_idx, splitter.test_idx)
    for got, want in zip(split, rank_zero, strict=True):
        np.testing.assert_array_equal(got, want)


def test_the_ddp_order_of_minibatches_follows_the_seed(counts_h5ad, tmp_path):
    """Each DDP process's sampler shuffled with torch's default seed 0: every run saw the
    same minibatches in the same order, whatever scvi.settings.seed."""
    import torch.distributed as dist

    from deltavae.train._data import FileOrderDataLoader

    adata = ad.read_h5ad(counts_h5ad)
    dv.model.ZINBVAE.setup_anndata(adata)
    manager = dv.model.ZINBVAE(adata).adata_manager
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        orders = {}
        for seed in (1, 2, 1):
            scvi.settings.seed = seed
            loader = FileOrderDataLoader(manager, batch_size=64, shuffle=True,
                                         distributed_sampler=True)  # fmt: skip
            orders.setdefault(seed, []).append([b.tolist() for b in loader.sampler])
    finally:
        dist.destroy_process_group()
        scvi.settings.seed = 0
    assert orders[1][0] == orders[1][1] and orders[1][0] != orders[2][0]


def test_ddp_processes_draw_their_own_noise(counts_h5ad):
    """Forked DDP processes (or a script seeded alike in each) drew the same random stream:
    the n-th cell of every process's minibatch had the same draw of z and dropout mask."""
    from types import SimpleNamespace

    from deltavae.train import DeltaTrainingPlan

    adata = ad.read_h5ad(counts_h5ad)
    dv.model.ZINBVAE.setup_anndata(adata)
    plan = DeltaTrainingPlan(dv.model.ZINBVAE(adata).module)
    draws = []
    for rank in (0, 1, 1):
        torch.manual_seed(0)
        plan.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        plan.on_fit_start()
        draws.append(torch.randn(4))
    torch.manual_seed(0)
    assert torch.equal(draws[0], torch.randn(4))  # rank 0 keeps its stream
    assert not torch.equal(draws[0], draws[1]) and torch.equal(draws[1], draws[2])


def test_cli_fit_backed(counts_h5ad, counts_zarr, tmp_path, capsys):
    # --no-plots: the first UMAP of a test process compiles umap-learn's numba code (20-50 s);
    # test_cli_fit_backed_draws_its_plots (-m slow) draws them.
    out = tmp_path / "out.h5ad"
    args = ["fit", str(counts_h5ad), "--model", "zinbvae", "--backed", "--epochs", "2"]
    args += ["--no-plots"]
    with warnings.catch_warnings():
        warnings.simplefilter("always", UserWarning)  # printed as the shell prints it
        assert main([*args, "--out", str(out)]) == 0
    # Training streams X from disk: no note on the file's layers without --layer.
    assert "keeps only X" not in capsys.readouterr().err
    result = ad.read_h5ad(out)
    assert result.obsm["X_zinbvae"].shape == (300, 10)
    assert np.isfinite(result.obsm["X_zinbvae"]).all()
    assert (result.X != ad.read_h5ad(counts_h5ad).X).nnz == 0

    missing = ["fit", str(tmp_path / "nope.zarr"), "--model", "zinbvae", "--backed"]
    assert main([*missing, "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "store.zarr").mkdir()
    store = ["fit", str(tmp_path / "store.zarr"), "--model", "zinbvae", "--backed"]
    (tmp_path / "taken").write_text("a file")
    assert main([*store, "--out", str(tmp_path / "taken")]) == 2
    assert "is a folder, not an .h5ad file or a zarr store" in capsys.readouterr().err
    # A zarr input's results are a store: an .h5ad name would hold a folder no reader opens.
    store = ["fit", str(counts_zarr), "--model", "zinbvae", "--backed"]
    assert main([*store, "--out", str(tmp_path / "new.h5ad")]) == 2
    assert "e.g. '" + str(tmp_path / "new.zarr") in capsys.readouterr().err
    assert not (tmp_path / "new.h5ad").exists()


def test_cli_fit_backed_zarr_writes_results_into_a_copy(counts_zarr, tmp_path, capsys):
    out = tmp_path / "out.zarr"
    args = ["fit", str(counts_zarr), "--model", "cgmdvae", "--n-clusters", "3", "--epochs", "2"]
    args += ["--no-plots"]  # drawn by test_cli_fit_backed_draws_its_plots (-m slow)
    assert main([*args, "--out", str(out)]) == 2  # a zarr store needs --backed
    assert "--backed" in capsys.readouterr().err
    assert main([*args, "--backed", "--out", str(out)]) == 0
    result = ad.read_zarr(out)
    assert result.obsm["X_cgmdvae"].shape == (300, 16)  # counts without a condition (D16)
    assert set(result.obs["cgmdvae_cluster"].astype(int)) <= {0, 1, 2}
    assert (result.X != ad.read_zarr(counts_zarr).X).nnz == 0
    assert "X_cgmdvae" not in ad.read_zarr(counts_zarr).obsm  # the input is untouched


@pytest.mark.slow
@pytest.mark.parametrize("stored", ["h5ad", "zarr"])
def test_cli_fit_backed_draws_its_plots(counts_h5ad, counts_zarr, tmp_path, stored):
    """The UMAP and ELBO plots of a --backed fit (of an .h5ad file and a zarr store), which
    the default-stage tests above skip (--no-plots)."""
    from deltavae._cli_files import plots_folder

    path = counts_h5ad if stored == "h5ad" else counts_zarr
    out = tmp_path / f"out.{stored}"
    args = ["fit", str(path), "--model", "cgmdvae", "--n-clusters", "3", "--epochs", "2"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the model's notes on a 2-epoch run
        assert main([*args, "--backed", "--out", str(out)]) == 0
    for name in ("umap_cgmdvae_cluster.png", "elbo_history.png"):
        assert (plots_folder(out) / name).stat().st_size > 1000, name


def test_results_of_a_lazily_read_h5ad_go_into_its_file(counts_h5ad, tmp_path):
    """read_lazy's docstring sends results to write_results_to_store: for an .h5ad it opened
    read-only (the file reopened for the write) as for a copy; a missing path says so."""
    import shutil

    copy = tmp_path / "copy.h5ad"
    shutil.copy(counts_h5ad, copy)
    adata = _lazy(counts_h5ad)
    model = _fit(dv.model.ZINBVAE, adata, {}, {}, epochs=1)
    with pytest.warns(UserWarning, match="open read-only"):
        keys = model.write_to_adata()
    dv.write_results_to_store(adata, keys, counts_h5ad)
    dv.write_results_to_store(adata, keys, copy)
    assert adata.file["obs"].file.mode == "r"  # read-only again, and still readable
    z = model.get_latent_representation()
    adata.file.close()
    for path in (counts_h5ad, copy):
        np.testing.assert_allclose(ad.read_h5ad(path).obsm["X_zinbvae"], z, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="does not exist; pass the zarr store or .h5ad"):
        dv.write_results_to_store(adata, keys, tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="'.*plain' is a directory but not a zarr store"):
        dv.write_results_to_store(adata, keys, tmp_path / "plain")
    # A copy with other cells or another order was rewritten by position (counts under other
    # cells' names, or a file anndata could no longer open).
    full = ad.read_h5ad(counts_h5ad)
    for name, other in (("sorted", full[::-1]), ("fewer", full[:100])):
        target = tmp_path / f"{name}.h5ad"
        other.copy().write_h5ad(target)
        before = target.read_bytes()
        match = "in another order" if name == "sorted" else "holds 100 cells and adata 300"
        with pytest.raises(ValueError, match=match):
            dv.write_results_to_store(adata, keys, target)
        assert target.read_bytes() == before
    with pytest.raises(ValueError, match="keys holds 'X_zinbvae', which adata does not hold"):
        dv.write_results_to_store(adata, ["X_zinbvae"], copy)


def test_read_lazy_refuses_what_it_cannot_stream(counts_h5ad, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        dv.read_lazy(tmp_path / "nope.zarr")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="'.*plain' is a directory but not a zarr store"):
        dv.read_lazy(tmp_path / "plain")
    # HDF5 without AnnData's groups (Cell Ranger's .h5) was h5py's raw KeyError ('obs').
    import h5py

    with h5py.File(tmp_path / "filtered.h5", "w") as f:
        f.create_group("matrix")
    with pytest.raises(ValueError, match=r"\(no AnnData groups: object 'obs'.*read_10x_h5"):
        dv.read_lazy(tmp_path / "filtered.h5")
    (tmp_path / "cells.zarr.zip").write_bytes(b"PK")
    with pytest.raises(ValueError, match=r"not an HDF5 file\): a zipped zarr store opens once"):
        dv.read_lazy(tmp_path / "cells.zarr.zip")
    dense = ad.read_h5ad(counts_h5ad)
    dense.X = dense.X.toarray()
    del dense.layers["counts"]  # no sparse layer to train from either
    dense.write_zarr(tmp_path / "dense.zarr")
    with pytest.raises(ValueError, match="stored dense"):
        dv.read_lazy(tmp_path / "dense.zarr")
    bad = ad.read_h5ad(counts_h5ad)
    bad.X = bad.X * 0.5
    bad.write_zarr(tmp_path / "half.zarr")
    lazy = dv.read_lazy(tmp_path / "half.zarr")
    with pytest.raises(ValueError, match="integer"):
        dv.model.ZINBVAE.setup_anndata(lazy)


def test_block_shuffling_reads_contiguous_stretches():
    from torch.utils.data import RandomSampler

    from deltavae.train._data import FileOrderBatchSampler

    rows = np.random.default_rng(0).permutation(1000)  # a random train split's file rows
    torch.manual_seed(0)
    batches = list(FileOrderBatchSampler(RandomSampler(range(1000)), 64, False, rows, 16))
    seen = np.concatenate(batches)
    assert sorted(seen.tolist()) == list(range(1000))  # every cell once per epoch
    for batch in batches:
        file_rows = rows[batch]
        assert (np.diff(file_rows) > 0).all()  # sorted by file row
        assert (np.diff(file_rows) > 1).sum() <= 3  # at most 4 stretches of 16 neighbours
    torch.manual_seed(1)
    other = list(FileOrderBatchSampler(RandomSampler(range(1000)), 64, False, rows, 16))
    assert any((a != b).any() for a, b in zip(batches, other, strict=True))  # reshuffled


def test_training_with_shuffle_blocks_on_a_zarr_store(counts_zarr):
    adata = dv.read_lazy(counts_zarr)
    model = _fit(dv.model.ZINBVAE, adata, {}, {}, epochs=4, shuffle_block_size=8)
    elbo = model.history["elbo_train"].to_numpy(float).ravel()
    assert np.isfinite(elbo).all() and elbo[-1] < elbo[0]
    for bad in (0, True, 2.5):  # named as the argument given, before Lightning starts
        with pytest.raises(ValueError, match="shuffle_block_size must be a positive integer"):
            model.train(max_epochs=1, shuffle_block_size=bad, **TRAIN)
    with pytest.raises(ValueError, match="shuffle_block_size is not supported with strategy"):
        model.train(
            max_epochs=1,
            shuffle_block_size=8,
            strategy="ddp",
            accelerator="cpu",
            devices=2,
            **TRAIN,
        )


def test_training_gives_free_heap_pages_back(counts_h5ad, monkeypatch):
    from deltavae.train import _plan

    assert _plan.release_free_memory() is sys.platform.startswith("linux")
    calls = []
    monkeypatch.setattr(_plan, "release_free_memory", lambda: calls.append(1))
    adata = ad.read_h5ad(counts_h5ad, backed="r")
    _fit(dv.model.ZINBVAE, adata, {}, {}, epochs=1, batch_size=2)  # 135 steps
    assert len(calls) == 135 // _plan._TRIM_EVERY == 13


def _ddp_early_stopping(path: str) -> dict:
    """Two-process DDP with early_stopping=True and a min_delta no epoch meets: how many
    epochs ran, and what the caller was told."""
    torch.set_num_threads(1)
    adata = ad.read_h5ad(path)
    dv.model.ZINBVAE.setup_anndata(adata)
    model = dv.model.ZINBVAE(adata, n_latent=4, n_hidden=32)
    ddp = {"strategy": "ddp", "devices": 2, "accelerator": "cpu", "batch_size": 32}
    stop = {"early_stopping_patience": 3, "early_stopping_min_delta": 1e4}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=20, early_stopping=True, n_epochs_kl_warmup=None, **stop,
                    **{**TRAIN, **ddp})  # fmt: skip
    return {"epochs": len(model.history["elbo_train"]), "notes": [str(w.message) for w in caught]}


# Forks two training processes (about 15 s): in the slow stage.
@pytest.mark.slow
def test_ddp_stops_early_when_asked(counts_h5ad):
    """scvi-tools turns early_stopping off under DDP ('early_stopping was automatically
    disabled'): the run trained all its epochs. deltavae adds the callback itself, and the
    caller is told that early stopping ended the run (the workers' record comes back)."""
    out = _in_fresh_interpreter("early_stopping", counts_h5ad)
    assert out["epochs"] == 4, out  # epoch 0, then 3 without a fall of 1e4
    assert not any("automatically disabled" in note for note in out["notes"]), out["notes"]
    assert not any("pass a max_epochs above" in note for note in out["notes"]), out["notes"]


if __name__ == "__main__":
    if sys.argv[1] == "early_stopping":
        print(json.dumps(_ddp_early_stopping(sys.argv[2])))
    elif sys.argv[1] == "split":
        print(json.dumps(_ddp_split(sys.argv[2])))
    elif sys.argv[1].startswith("diverge"):
        what = sys.argv[1]
        print(
            json.dumps(
                _ddp_divergence(sys.argv[2], what.endswith("validation"), what.endswith("data"))
            )
        )
    else:
        print(json.dumps(_ddp_histories(sys.argv[1], sys.argv[2])))


def test_ddp_shares_of_one_cell_are_refused_only_where_batch_norm_trains():
    """Two training rows on two processes: one each. ZINBVAE's BatchNorm cannot train on a
    minibatch of one (refused); NMFDeconv has no BatchNorm and trains on it (it was refused
    too, 'a minibatch needs 2')."""
    from deltavae.model._train_steps import add_splitter_arguments
    from deltavae.train._distributed import process_share

    cells = dv.datasets.synthetic_counts(n_cells=40, n_genes=20, n_clusters=2, seed=0)
    spots, _ = dv.datasets.pseudo_spots(cells, "cluster", n_spots=6, cells_per_spot=(1, 3))
    dv.model.NMFDeconv.setup_anndata(spots)
    nmf = dv.model.NMFDeconv(spots, n_components=2)
    kwargs = {}
    add_splitter_arguments(nmf, 4, None, 2, True, 2, kwargs)
    assert kwargs["datasplitter_kwargs"] == {"distributed_sampler": True}  # nothing dropped
    dv.model.ZINBVAE.setup_anndata(cells)
    with pytest.raises(ValueError, match="each process reads 1 cell"):
        add_splitter_arguments(dv.model.ZINBVAE(cells), 4, None, 2, True, 2, {})
    assert process_share(2, 2, batch_norm=False) == 1 and process_share(3, [0, 1]) == 2
    with pytest.raises(ValueError, match="each process reads 1 cell.*BatchNorm"):
        process_share(2, 2)
