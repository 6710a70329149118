"""benchmarks/gpu_check.py: its bookkeeping (the script itself runs on a CUDA machine)."""

import importlib.metadata
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


def test_report_records_ok_fail_and_skip(gpu_check, capsys):
    report = gpu_check.Report("cpu")
    assert report.run("m", "ok", lambda: 3) == 3

    def boom():
        raise RuntimeError("Tensor on device meta is not on the expected device cpu\nmore")

    failed = report.run("m", "fails", boom)
    assert failed is gpu_check.FAILED
    assert report.run("m", "needs it", lambda: 1, needs=[failed]) is gpu_check.FAILED
    nan = report.run("m", "non-finite", lambda: torch.tensor([1.0, float("nan")]))
    assert nan is gpu_check.FAILED
    assert report.counts() == (1, 2, 1)
    rows = {r.check: r for r in report.rows}
    assert (
        rows["fails"].detail
        == "RuntimeError: Tensor on device meta is not on the expected device cpu"
    )
    assert "CheckFailed: 1 non-finite" in rows["non-finite"].detail
    assert "| m " in report.table()
    assert "[FAIL]" in capsys.readouterr().err


def test_devices_compare_relative_to_the_largest_value(gpu_check):
    a = torch.tensor([[100.0, 1.0]])
    assert "relative" in gpu_check._same(a, a + 0.05, 1e-3, "latent")
    with pytest.raises(gpu_check.CheckFailed, match="latent"):
        gpu_check._same(a, a + 0.2, 1e-3, "latent")


def test_cuda_without_a_gpu_exits_2(gpu_check):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert gpu_check.main(["--device", "cuda"]) == 2


def test_environment_names_the_copy_of_deltavae_that_ran(gpu_check, tmp_path, monkeypatch):
    import _common

    import deltavae

    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    env = gpu_check.environment("cpu")
    assert Path(env["deltavae_path"]) == Path(deltavae.__file__).resolve().parent
    assert env["OMP_NUM_THREADS"] == "3"
    assert env["torch_threads"] == torch.get_num_threads()
    assert env["device_name"].startswith("CPU")
    line = _common.environment_line(env)
    assert env["deltavae_path"] in line and "OMP_NUM_THREADS=3" in line
    # A commit where the package lies in a git checkout; none in a plain folder.
    assert _common.git_commit(tmp_path) is None  # _env.git_commit


def test_gpu_wheels_lists_what_a_target_lacks():
    """benchmarks/gpu_wheels.py: deltavae's installed dependencies (and scikit-misc for the
    check), at this environment's versions, less what the target has and never torch."""
    spec = importlib.util.spec_from_file_location("gpu_wheels", PATH.parent / "gpu_wheels.py")
    wheels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wheels)
    closure = wheels.installed_closure(["deltavae"])
    assert {"scvi-tools", "pyro-ppl", "anndata", "scanpy", "torch"} <= set(closure)
    assert closure["scvi-tools"] == importlib.metadata.version("scvi-tools")
    assert wheels.normalise("Scikit_Misc") == "scikit-misc"
    assert wheels.NEVER >= {"torch", "deltavae"}


def test_the_last_line_names_what_failed(gpu_check):
    """A run's one line said only how many steps failed; it names them and why."""
    report = gpu_check.Report("cpu")
    report.run("m", "fine", lambda: 1)
    assert report.summary() == "gpu_check: 1 passed, 0 failed"

    def differs():
        raise gpu_check.CheckFailed("only 0.97000 of the draws equal")

    failed = report.run("CGMDVAE/kang", "sample(seed=1) on cpu == on cuda", differs)
    report.run("m", "after it", lambda: 1, needs=[failed])
    for i in range(7):
        report.run("m", f"also {i}", differs)
    line = report.summary()
    assert line.startswith("gpu_check: 1 passed, 8 failed (1 skipped after a failure): FAILED ")
    assert "CGMDVAE/kang sample(seed=1) on cpu == on cuda (CheckFailed: only 0.97000" in line
    assert line.endswith("; and 2 more") and "\n" not in line


def test_sampled_cells_compare_clusters_and_libraries(gpu_check):
    """Generated cells on the CPU copy against the device's: the counts alone left their
    libraries (drawn from stored quantiles) and clusters unchecked."""
    import numpy as np
    import pandas as pd
    from _gpu_spatial import _same_draws
    from anndata import AnnData

    def cells(expected, cluster="0"):
        counts = np.array([[10.0, 3.0], [50.0, 7.0]])  # counts alike, whatever expected
        obs = pd.DataFrame({"cluster": [cluster] * 2}, index=["s_0", "s_1"])
        out = AnnData(counts.astype(np.float32), obs=obs)
        out.layers["counts"], out.layers["expected"] = counts, expected
        return out

    expected = np.array([[10.2, 3.0], [50.0, 7.4]])
    assert "libraries" in _same_draws(cells(expected), cells(expected * (1 + 1e-6)), True)
    deeper = expected.copy()
    deeper[1] *= 1.2  # a library drawn otherwise; its rounded counts may stay alike
    with pytest.raises(gpu_check.CheckFailed, match="expected totals"):
        _same_draws(cells(expected), cells(deeper), True)
    assert "draws equal" in _same_draws(cells(expected), cells(deeper))  # not sample's
    with pytest.raises(gpu_check.CheckFailed, match="obs differ: \\['cluster'\\]"):
        _same_draws(cells(expected), cells(expected, "1"), True)


def test_de_normalized_means_are_checked_against_the_counts(gpu_check):
    """The check of DE's raw_normalized_mean1/2 (counts per 10,000, a cell without counts 0)."""
    from types import SimpleNamespace

    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from _gpu_models import _normalized_means
    from anndata import AnnData

    counts = np.array([[1.0, 3.0], [0.0, 0.0], [2.0, 2.0], [5.0, 0.0]])
    adata = AnnData(counts, obs=pd.DataFrame({"g": list("aabb")}, index=list("wxyz")))
    model = SimpleNamespace(
        adata=adata,
        adata_manager=SimpleNamespace(get_from_registry=lambda key: sp.csr_matrix(counts)),
    )
    de = pd.DataFrame(
        {"raw_normalized_mean1": [1250.0, 3750.0], "raw_normalized_mean2": [7500.0, 2500.0]},
        index=adata.var_names[::-1],
    )
    with pytest.raises(gpu_check.CheckFailed, match="raw_normalized_mean1"):
        _normalized_means(model, de, "g", ("a", "b"))  # read by gene name: reversed here
    de.index = adata.var_names
    assert "raw_normalized_mean2 (b, 2 cells)" in _normalized_means(model, de, "g", ("a", "b"))
    adata.obs["_scvi_raw_norm_scaling"] = 1.0
    with pytest.raises(gpu_check.CheckFailed, match="left in the model's AnnData"):
        _normalized_means(model, de, "g", ("a", "b"))


def test_gathered_read_outs_repeat_exactly_at_one_seed(gpu_check):
    """Phase 5's gathered read-outs (``_gpu_reads``): read twice on one device they must
    be equal, so that the device and the CPU copy can be compared at all (z of the
    expression, likelihood parameters, library sizes, marginal likelihood, DE and the
    correlation matrix (its gammas too), and the posterior predictive counts, are drawn on
    the CPU from one seed, the counts read in other minibatches each time), and a part that
    differs is named."""
    import numpy as np
    from _gpu_reads import device_reads, same_read

    import deltavae as dv

    adata = dv.datasets.synthetic_counts(
        n_cells=150, n_genes=30, n_clusters=2, n_conditions=2, seed=0
    )
    adata.obs["cell_type"] = adata.obs["cluster"].astype(str)
    dv.model.ZINBVAE.setup_anndata(adata, batch_key="condition")
    vae = dv.model.ZINBVAE(adata, n_latent=3, n_hidden=16, use_observed_lib_size=False)
    vae.train(max_epochs=1, accelerator="cpu", enable_progress_bar=False)
    reads = device_reads("ZINBVAE/gene-batch", vae)
    assert len(reads) == 8 and "every batch" in next(iter(reads))
    assert any(label.startswith("posterior_predictive_sample(") for label in reads)
    for label, read in reads.items():
        assert "max |diff| 0.00e+00" in same_read(read(vae), read(vae), 0.0), label
    params = reads["get_likelihood_parameters(), z drawn on the CPU (seeded)"](vae)
    moved = {**params, "dropout": params["dropout"] + 1e-2}
    with pytest.raises(gpu_check.CheckFailed, match="^dropout"):
        same_read(params, moved, 1e-3)
    assert np.isfinite(params["mean"]).all()
