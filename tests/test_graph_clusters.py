"""Leiden in the CGMDVAE's mixture start and refit (train/_graph_clusters.py): bounded runs."""

import igraph
import numpy as np
import pytest

from deltavae.train import _graph_clusters as gc
from deltavae.train._mixture_init import _UMAP_NEIGHBORS, _balanced_neighbours


def _graph(z):
    return gc.fuzzy_graph(*_balanced_neighbours(z, np.zeros(len(z)), _UMAP_NEIGHBORS))


@pytest.fixture
def leiden_calls(monkeypatch):
    """Every igraph Leiden call's ``n_iterations`` and the type of its ``weights``."""
    calls = []
    original = igraph.Graph.community_leiden

    def record(self, *args, **kwargs):
        calls.append((kwargs.get("n_iterations", 2), type(kwargs.get("weights"))))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(igraph.Graph, "community_leiden", record)
    return calls


def test_converged_runs_of_leiden_k_are_bounded_on_a_graph_without_clusters(
    leiden_calls, monkeypatch
):
    """Converged Leiden on an unstructured neighbour graph iterates many times (about 45 on
    20,000 cells); igraph's n_iterations=-1 has no bound. Here every run is bounded: with the
    bound set to 3, no call runs unbounded and each of the 5 restarts takes at most 3."""
    monkeypatch.setattr(gc, "_MAX_ITERATIONS", 3)
    runs = []  # the igraph calls of each run to convergence (the bisection's have a bound)
    converged = gc.converged_leiden

    def counted(g, weights, resolution, max_iterations=None):
        before = len(leiden_calls)
        membership = converged(g, weights, resolution, max_iterations)
        if max_iterations is None:
            runs.append(leiden_calls[before:])
        return membership

    monkeypatch.setattr(gc, "converged_leiden", counted)
    z = np.random.default_rng(0).normal(size=(600, 6))
    labels = gc.leiden_k(_graph(z), 6, seed=0)
    assert labels.min() == 0
    iterations = [n for n, _ in leiden_calls]
    assert min(iterations) > 0, "a Leiden run without a bound on its iterations"
    assert len(runs) == gc._RESTARTS
    assert max(sum(n for n, _ in run) for run in runs) <= 3


def test_bounded_leiden_returns_igraphs_converged_partition_when_it_converges_in_time():
    """Iterating one call at a time, stopping at the first iteration that does not raise the
    quality, draws what n_iterations=-1 draws: the same partition, seed for seed."""
    rng = np.random.default_rng(1)
    z = np.vstack([rng.normal(c, 1.3, (100, 4)) for c in np.eye(4) * 3.0])
    g, weights = gc._igraph(_graph(z))
    for seed in range(4):
        with gc._seeded_igraph(seed):
            bounded = gc.converged_leiden(g, weights, 0.5, max_iterations=1000)
        with gc._seeded_igraph(seed):
            unbounded = g.community_leiden(
                objective_function="modularity", weights=weights, resolution=0.5, n_iterations=-1
            ).membership
        assert bounded == unbounded


def test_leiden_gets_its_weights_as_a_list(leiden_calls):
    """igraph converts numpy weights anew in each call (about 40 ms a call on 20,000 cells'
    graph, a list under 10 ms); every call of leiden_k and leiden gets a list."""
    z = np.random.default_rng(2).normal(size=(200, 4))
    gc.leiden_k(_graph(z), 3, seed=0)
    gc.leiden(_graph(z), 1.0, seed=0)
    assert leiden_calls and {kind for _, kind in leiden_calls} == {list}
