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
    assert _common._git_commit(tmp_path) is None


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
