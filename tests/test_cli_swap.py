"""``deltavae demo`` and ``fit --save-model`` put their finished folder in place in one rename
(_folder_swap.py): moved in one file at a time, a failure part way left an earlier demo's
files beside the new run's, or an earlier saved model without its AnnData."""

import hashlib
import os
import warnings

import numpy as np
import pytest

import deltavae as dv
from deltavae import _cli_commands
from deltavae.cli import main

EARLIER = b"an earlier demo's file"
#: Files every demo writes (its AnnData and two of its plots).
WRITTEN = ["pbmc3k_zinbvae.h5ad", "umap_leiden.png", "elbo_history.png"]


def _small_pbmc(n_cells, n_top_genes, seed):
    """A stand-in for PBMC 3k: synthetic counts with a cell_type column."""
    adata = dv.datasets.synthetic_counts(
        n_cells=90, n_genes=30, n_clusters=3, n_conditions=1, seed=seed
    )
    adata.obs["cell_type"] = adata.obs["cluster"]
    return adata


def _failing_move(folder, failing, monkeypatch):
    """os.replace and os.rename fail at the ``failing``-th rename onto ``folder`` or into it."""
    landed = []

    def counted(real):
        def move(src, dst, *args, **kwargs):
            where = os.path.abspath(os.fspath(dst))
            if str(folder) in (where, os.path.dirname(where)):
                landed.append(where)
                if len(landed) == failing:
                    raise OSError(28, "No space left on device")
            return real(src, dst, *args, **kwargs)

        return move

    monkeypatch.setattr(os, "replace", counted(os.replace))
    monkeypatch.setattr(os, "rename", counted(os.rename))


@pytest.mark.parametrize("failing", [1, 2])
def test_a_demo_replaces_an_earlier_ones_files_all_at_once(failing, tmp_path, monkeypatch):
    """A rename into --out failing (the first, or the second) leaves --out wholly the earlier
    demo's, or wholly the new one's; never a mix; the user's own file kept, nothing beside."""
    out = tmp_path / "demo"
    out.mkdir()
    for name in WRITTEN:
        (out / name).write_bytes(EARLIER)
    (out / "notes.txt").write_text("the user's")
    monkeypatch.setattr(_cli_commands, "_prepare_pbmc3k", _small_pbmc)
    _failing_move(out, failing, monkeypatch)
    code = main(["demo", "--out", str(out), "--epochs", "1"])
    assert code in (0, 2)
    old = [name for name in WRITTEN if (out / name).read_bytes() == EARLIER]
    assert old in ([], WRITTEN), f"a mix: {old} of the earlier demo beside the new run's"
    assert (code == 2) == (old == WRITTEN)
    assert (out / "notes.txt").read_text() == "the user's"
    assert os.listdir(tmp_path) == ["demo"]


def _hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def test_a_fit_that_fails_placing_its_model_keeps_the_earlier_save_whole(
    tmp_path, monkeypatch, capsys
):
    """fit --save-model --overwrite removed the earlier save's adata.h5ad, then moved the new
    files in one by one: a failure there left the earlier model.pt without its AnnData. The
    earlier save is now byte for byte as it was and loads. The full disk is said in one line
    with what to do (it printed a traceback)."""
    adata = dv.datasets.synthetic_counts(n_cells=90, n_genes=20, n_clusters=2, seed=0)
    adata.layers.clear()
    counts = tmp_path / "counts.h5ad"
    adata.write_h5ad(counts)
    dv.model.ZINBVAE.setup_anndata(adata)
    earlier = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged, said elsewhere
        earlier.train(max_epochs=1, batch_size=45)
    folder = tmp_path / "model"
    earlier.save(folder, save_anndata=True)
    before = _hashes(folder)
    _failing_move(folder, 1, monkeypatch)
    argv = ["fit", str(counts), "--model", "zinbvae", "--epochs", "1", "--no-plots"]
    argv += ["--out", str(tmp_path / "z.h5ad"), "--save-model", str(folder), "--overwrite"]
    assert main(argv) == 2  # a full disk: said in one line, not a traceback
    said = capsys.readouterr().err
    assert "No space left on device" in said and "free some space there" in said
    assert "Traceback" not in said
    monkeypatch.undo()
    assert _hashes(folder) == before
    np.testing.assert_array_equal(
        dv.model.ZINBVAE.load(folder).get_latent_representation(),
        earlier.get_latent_representation(),
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counts.h5ad", "model", "z.h5ad"]
