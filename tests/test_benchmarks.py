"""The benchmark scripts' own bookkeeping (the scripts themselves run outside pytest)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

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
    genes = imputation.scored_genes(truth, expressed)
    # Not the genes without reference counts (no method can impute them) nor constant ones.
    assert genes == ["a", "b"]
    # A constant prediction of "b" (PCC and RMSE undefined) is a failure, not left out.
    pred = pd.DataFrame({"a": truth["a"], "b": 1.0}, index=spots)
    table, failed = imputation.gene_scores(truth[genes], pred)
    assert failed == 1
    assert table.loc["b", "pcc"] == 0.0 and table.loc["b", "rmse"] == pytest.approx(np.sqrt(2))
    assert table["pcc"].median() == pytest.approx(0.5)
