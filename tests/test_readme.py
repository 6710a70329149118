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
