"""Shared fixtures: small synthetic count data with known clusters and conditions."""

import sys

import matplotlib
import pytest
import scvi
import torch

matplotlib.use("Agg")
# Tiny models: one thread avoids oversubscribing the 2 CI cores (spin-waits cost 10x).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    scvi.settings.seed = 0


@pytest.fixture(autouse=True)
def _close_figures():
    """Every test's figures closed after it (matplotlib keeps them open, and warns past 20)."""
    yield
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(autouse=True, scope="module")
def _seed_module():
    # Module-scoped fixtures that train are set up before the per-test seed above; without
    # this their result would depend on which tests ran before them.
    scvi.settings.seed = 0


@pytest.fixture
def counts_adata():
    """300 cells x 60 genes, 3 clusters x 2 conditions, raw counts in X and layers['counts']."""
    import deltavae as dv

    return dv.datasets.synthetic_counts(
        n_cells=300, n_genes=60, n_clusters=3, n_conditions=2, seed=0
    )


@pytest.fixture
def tracked(monkeypatch):
    """Run ``{name: call}`` (and first ``train``) with each tensor's would-be device
    followed, ``module`` on the device; fail on any mix (``_device_tracker.run_tracked``)."""
    from _device_tracker import run_tracked, track_moves

    track_moves(monkeypatch)
    return run_tracked
