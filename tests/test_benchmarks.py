"""The benchmark scripts' own bookkeeping (the scripts themselves run outside pytest)."""

import importlib
import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import deltavae as dv
from deltavae.metrics import imputation_scores
from deltavae.model._imputer_cross_val import gene_folds, scored_genes

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def imputation():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("imputation", BENCHMARKS / "imputation.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCHMARKS))


def test_imputation_scores_every_method_on_the_same_genes(imputation):
    rng = np.random.default_rng(0)
    spots = [f"s{i}" for i in range(20)]
    truth = pd.DataFrame(
        {"a": rng.random(20), "b": rng.random(20), "zero": 0.0, "absent": rng.random(20)},
        index=spots,
    )
    expressed = pd.Series({"a": True, "b": True, "zero": True, "absent": False})
    genes = scored_genes(truth, expressed)
    # Not the genes without reference counts (no method can impute them) nor constant ones.
    assert genes == ["a", "b"]
    # A constant prediction of "b" (PCC and RMSE undefined) is a failure, not left out.
    pred = pd.DataFrame({"a": truth["a"], "b": 1.0}, index=spots)
    with pytest.warns(UserWarning, match="pred is constant across spots"):
        table = imputation_scores(truth[genes], pred)
    table, failed = imputation.failures(table.assign(fold=0))
    assert failed == 1
    assert table.loc["b", "pcc"] == 0.0 and table.loc["b", "rmse"] == pytest.approx(np.sqrt(2))
    assert table["pcc"].median() == pytest.approx(0.5)


def test_imputation_runs_each_method_through_the_package_folds(imputation):
    """The benchmark's folds are the package's (SpatialImputer.cross_validate's): kNN, which
    trains nothing, scores each shared gene once, in the fold KFold gives the seed."""
    data = dv.datasets.synthetic_counts(n_cells=80, n_genes=12, n_clusters=2, seed=0)
    ref, spots = data[:40].copy(), data[40:].copy()
    args = SimpleNamespace(folds=3, seed=0, only_folds=None, knn_k=5)
    table, seconds = imputation.run_method(spots, ref, "knn", args)
    genes = list(spots.var_names)
    assert list(table.index) == genes and seconds >= 0
    held = [list(table.index[table["fold"] == f]) for f in range(3)]
    assert held == gene_folds(genes, 3, 0)
    args.only_folds = [1]
    assert list(imputation.run_method(spots, ref, "knn", args)[0].index) == held[1]


@pytest.fixture
def env_module():
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location("_env", BENCHMARKS / "_env.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module
    sys.path.remove(str(BENCHMARKS))


def test_benchmarks_record_the_versions_they_ran_on(env_module, capsys):
    """The semi-supervised table moved between two runs of one commit: packages had changed,
    and neither the printed header nor the JSON said which versions ran."""
    from importlib.metadata import version

    env = env_module.versions()
    names = ["python", "torch", "pyro-ppl", "scvi-tools", "lightning", "scanpy", "anndata"]
    names += ["numpy", "scipy", "scikit-learn", "igraph", "leidenalg", "umap-learn"]
    names += ["pynndescent", "numba", "commit"]
    assert set(names) <= set(env)
    assert env["numpy"] == version("numpy") and env["torch"] == version("torch")
    assert env["python"] == ".".join(map(str, sys.version_info[:3]))
    line = env_module.versions_line(env)
    assert all(f"{name} {env[name]}" in line for name in names[:-1] if env[name])
    assert env_module.announce("x.py") == env_module.versions()
    assert capsys.readouterr().out.startswith("# x.py; versions: python ")
    env_module.announce("x.py", json_lines=True)  # a JSON-lines script's every line parses
    assert json.loads(capsys.readouterr().out) == {"script": "x.py", "versions": env}
    assert env_module.with_versions({"a": 1}, env) == {"a": 1, "versions": env}
    assert env_module.with_versions([1, 2], env) == {"versions": env, "results": [1, 2]}
    # Every benchmark script prints the line in its header (gpu_check: its environment line,
    # which holds it; gpu_wheels installs wheels and measures nothing).
    for script in sorted(BENCHMARKS.glob("[a-z]*.py")):
        if script.stem not in ("gpu_check", "gpu_wheels"):
            assert f'announce("{script.name}"' in script.read_text(), script.name
