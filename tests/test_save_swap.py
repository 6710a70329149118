"""A save over an earlier one (``save(overwrite=True)``) that fails at any step leaves the
earlier save as it was, byte for byte, and loadable (model/_staged_save.py, _folder_swap.py)."""

import hashlib
import os
import warnings

import anndata as ad
import numpy as np
import pytest
import torch

import deltavae as dv
from deltavae.model import _saved, _saved_anndata


def _cells(seed):
    return dv.datasets.synthetic_counts(
        n_cells=80, n_genes=16, n_clusters=2, n_conditions=2, seed=seed
    )


def _trained(name, seed):
    adata = _cells(seed)
    if name == "NMFDeconv":
        dv.model.NMFDeconv.setup_anndata(adata)
        model = dv.model.NMFDeconv(adata, n_components=2, n_hidden=8)
    else:
        cls = getattr(dv.model, name)
        kwargs = {"condition_key": "condition"} if name == "CGMDVAE" else {}
        cls.setup_anndata(adata, **kwargs)
        extra = {"n_clusters": 2} if name == "CGMDVAE" else {}
        model = cls(adata, n_latent=3, n_hidden=8, **extra)
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch: not converged, said elsewhere
        model.train(max_epochs=1, batch_size=40)
    return model


def _reading(model):
    """What the model computes from its parameters: the latent, or NMFDeconv's proportions."""
    if isinstance(model, dv.model.NMFDeconv):
        return np.asarray(model.get_proportions())
    return model.get_latent_representation()


@pytest.fixture(scope="module", params=["ZINBVAE", "CGMDVAE", "NMFDeconv"])
def models(request):
    """The model saved first, and another (other cells, other weights) saved over it."""
    return _trained(request.param, 0), _trained(request.param, 1)


def _files(parent):
    """Every file under ``parent`` (the save's folder and anything beside it), with its hash."""
    found = {}
    for root, _, names in os.walk(parent):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                found[os.path.relpath(path, parent)] = hashlib.sha256(f.read()).hexdigest()
    return found


def _half_written(path, exc):
    """A write that stops part way: some bytes in the file, then ``exc``."""
    with open(path, "wb") as f:
        f.write(b"\x89HDF partial")
    raise exc


def _fail_at(step, patch, dest):
    error = OSError(28, "No space left on device")
    if step == "adata.h5ad":

        def write(self, filename=None, *args, **kwargs):
            _half_written(filename, error)

        patch.setattr(ad.AnnData, "write_h5ad", write)
        patch.setattr(ad.AnnData, "write", write)
    elif step == "adata checksum":
        patch.setattr(_saved_anndata, "file_digest", lambda path: _half_written(path, error))
    elif step == "model.pt":
        patch.setattr(torch, "save", lambda obj, path, **kw: _half_written(path, error))
    elif step == "model.pt, interrupted":
        interrupt = KeyboardInterrupt()
        patch.setattr(torch, "save", lambda obj, path, **kw: _half_written(path, interrupt))
    elif step == "weights checksum":
        patch.setattr(_saved, "weights_digest", lambda state: _half_written(os.devnull, error))
    elif step == "label colours record":
        patch.setattr(_saved, "record_label_colours", lambda m: _half_written(os.devnull, error))
    elif step == "swap":  # the new folder renamed in
        rename = os.rename

        def failing(src, dst, *args, **kwargs):
            if os.fspath(dst) == os.fspath(dest) and ".saving-" in os.fspath(src):
                raise error
            return rename(src, dst, *args, **kwargs)

        patch.setattr(os, "rename", failing)
        patch.setattr(os, "replace", failing)
    return KeyboardInterrupt if "interrupted" in step else OSError


STEPS = [
    "adata.h5ad",
    "adata checksum",
    "model.pt",
    "model.pt, interrupted",
    "weights checksum",
    "label colours record",
    "swap",
]


@pytest.mark.parametrize("save_anndata", [True, False])
@pytest.mark.parametrize("step", STEPS)
def test_a_failed_save_over_an_earlier_one_leaves_it_whole(
    models, step, save_anndata, tmp_path, monkeypatch
):
    """save(overwrite=True) wrote into the earlier save's folder: it removed the AnnData saved
    there (save_anndata=False) before the steps that can fail, and on a failure after writing
    the new AnnData removed that one, so the earlier model.pt stayed without its data (load:
    "was saved without its AnnData"), or beside a half-written one. Every step failing, the
    folder and its neighbours are byte for byte as before and load the earlier model."""
    if step.startswith("adata") and not save_anndata:
        pytest.skip("no AnnData written, nor its checksum taken")
    first, second = models
    dest = tmp_path / "m"
    first.save(dest, save_anndata=True)
    (dest / "notes.txt").write_text("the user's")
    expected = _reading(first)
    before = _files(tmp_path)
    with monkeypatch.context() as patch:
        raised = _fail_at(step, patch, dest)
        with pytest.raises(raised):
            second.save(dest, overwrite=True, save_anndata=save_anndata)
    assert _files(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["m"]  # nothing left beside it
    loaded = type(first).load(dest)
    np.testing.assert_array_equal(_reading(loaded), expected)


def test_a_save_over_an_earlier_one_replaces_it_and_keeps_other_files(models, tmp_path):
    """The swap itself: the new model and its data in place, the earlier AnnData gone where
    the new save writes none, the user's files and another prefix's save kept, nothing left
    beside the folder, and a symbolic link to the folder still one."""
    first, second = models
    real = tmp_path / "real"
    first.save(real, save_anndata=True)
    first.save(real, overwrite=True, save_anndata=True, prefix="p_")
    (real / "notes.txt").write_text("the user's")
    os.chmod(real, 0o750)
    link = tmp_path / "m"
    link.symlink_to(real, target_is_directory=True)
    second.save(link, overwrite=True, save_anndata=True)
    assert link.is_symlink()
    np.testing.assert_array_equal(_reading(type(second).load(link)), _reading(second))
    np.testing.assert_array_equal(_reading(type(first).load(link, prefix="p_")), _reading(first))
    second.save(link, overwrite=True)  # no AnnData: the earlier one is not paired with it
    assert sorted(os.listdir(real)) == ["model.pt", "notes.txt", "p_adata.h5ad", "p_model.pt"]
    assert (real / "notes.txt").read_text() == "the user's"
    assert os.stat(real).st_mode & 0o777 == 0o750
    assert sorted(os.listdir(tmp_path)) == ["m", "real"]
    with pytest.raises(ValueError, match="saved without its AnnData"):
        type(second).load(link)


def test_a_save_refused_touches_nothing(models, tmp_path):
    """Into an existing folder without overwrite=True, or onto a file: refused by name before
    anything is written."""
    first, second = models
    first.save(tmp_path / "m", save_anndata=True)
    (tmp_path / "f").write_text("a file")
    before = _files(tmp_path)
    with pytest.raises(ValueError, match=r"already exists; pass overwrite=True"):
        second.save(tmp_path / "m", save_anndata=True)
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"is a file; save writes a directory"):
            second.save(tmp_path / "f", overwrite=overwrite)
    assert _files(tmp_path) == before
    assert sorted(os.listdir(tmp_path)) == ["f", "m"]


def test_a_first_save_that_fails_leaves_no_folder(models, tmp_path, monkeypatch):
    """A save into a new folder that fails leaves neither it nor anything beside it (its
    parents, made for it, stay, as before)."""
    first, _ = models
    monkeypatch.setattr(torch, "save", lambda obj, path, **kw: _half_written(path, OSError(28)))
    with pytest.raises(OSError):
        first.save(tmp_path / "new" / "m", save_anndata=True)
    assert os.listdir(tmp_path / "new") == []


def test_a_save_killed_between_the_two_renames_is_named_by_load(models, tmp_path):
    """A kill (SIGKILL, power loss) after save renamed the earlier folder aside and before it
    renamed the new one in leaves nothing at the path, both folders beside it under hidden
    names; load said only "No saved model at ... (expected a directory)". It now names both,
    and the earlier one, renamed back as it says, loads as it was."""
    first, second = models
    dest = tmp_path / "m"
    first.save(dest, save_anndata=True)
    second.save(tmp_path / "new", save_anndata=True)
    aside, unfinished = tmp_path / ".m.replaced-0a1b2c3d", tmp_path / ".m.saving-4e5f6a7b"
    os.rename(dest, aside)  # the disk as the kill leaves it
    os.rename(tmp_path / "new", unfinished)
    with pytest.raises(FileNotFoundError, match="was interrupted") as refused:
        type(first).load(dest)
    assert str(aside) in str(refused.value) and str(unfinished) in str(refused.value)
    os.rename(aside, dest)
    np.testing.assert_array_equal(_reading(type(first).load(dest)), _reading(first))
    (tmp_path / "other").mkdir()  # nothing beside a missing folder: no such advice
    with pytest.raises(FileNotFoundError) as missing:
        type(first).load(tmp_path / "none")
    assert "interrupted" not in str(missing.value)
