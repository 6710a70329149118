"""The README's example runs as written (with fewer epochs)."""

import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_runs():
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed package)")
    code = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)[0]
    assert "model.train()" in code
    code = code.replace("model.train()", "model.train(max_epochs=2)")
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)
    adata, stim = namespace["adata"], namespace["stim"]
    assert "cgmdvae_cluster" in adata.obs and "X_umap" in adata.obsm
    assert (stim.obs["condition"] == "stim").all()
    assert stim.n_obs == int((adata.obs["condition"] == "ctrl").sum())


def test_readme_scanpy_session_runs():
    """The scanpy session's block: PBMC 3k from the package, counts kept in a layer before
    normalize_total, the latent written where scanpy's neighbors read it."""
    if not README.is_file():
        pytest.skip("README.md is not next to the tests (installed package)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    code = next(block for block in blocks if "dv.datasets.pbmc3k()" in block)
    assert "vae.train()" in code
    code = code.replace("vae.train()", "vae.train(max_epochs=2)")
    namespace: dict = {}
    exec(
        compile("import deltavae as dv\nimport scanpy as sc\n" + code, str(README), "exec"),
        namespace,
    )
    adata = namespace["adata"]
    assert adata.n_obs == 2638 and adata.n_vars == 2000
    assert adata.obsm["X_zinbvae"].shape == (2638, 10)
    assert "leiden" in adata.obs and "X_umap" in adata.obsm
