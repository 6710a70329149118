"""Where the Leiden mixture start and refit spend their time, step by step (one thread).

On ``--n`` cells (20,000: the start's and the refit's cap) of clustered counts
(``synthetic_counts``, 10 clusters, 2,000 genes; z its first 10 principal components) and of
counts without structure (Poisson, mean 0.5; z standard normal in 10 dimensions): the
counts' 50 principal components (the refit's ``data_components``), the balanced neighbour
searches, UMAP's fuzzy graphs, the igraph graph, the bisection of the resolution (steps of
2 iterations), each of ``leiden_k``'s converged restarts (with its iterations) and
``exactly_k``. The start's graph is z's; the refit's joins the components'. CPU seconds.

    python benchmarks/leiden_profile.py
    python benchmarks/leiden_profile.py --n 5000
"""

from __future__ import annotations

import argparse
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import numpy as np
from _env import announce  # noqa: E402
from scipy import sparse


def clock(f, *args):
    start = time.process_time()
    out = f(*args)
    return out, time.process_time() - start


def profile(z, data, k, rows, tag):
    import igraph

    from deltavae.train import _graph_clusters as gc
    from deltavae.train._mixture_init import _UMAP_NEIGHBORS, _balanced_neighbours

    one = np.zeros(len(z))
    neighbours, t = clock(_balanced_neighbours, z, one, _UMAP_NEIGHBORS)
    rows.append((tag, "neighbours of z", t))
    graph, t = clock(gc.fuzzy_graph, *neighbours)
    rows.append((tag, "fuzzy graph of z", t))
    if data is not None:
        neighbours, t = clock(_balanced_neighbours, data, one, _UMAP_NEIGHBORS)
        rows.append((tag, "neighbours of the components", t))
        other, t = clock(gc.fuzzy_graph, *neighbours)
        rows.append((tag, "fuzzy graph of the components", t))
        graph = ((graph + other) / 2).tocsr()
    _, t = clock(gc._igraph, graph)
    rows.append((tag, "igraph graph", t))
    calls, original = [], igraph.Graph.community_leiden

    def record(self, *args, **kwargs):
        out, t = clock(lambda: original(self, *args, **kwargs))
        calls.append((kwargs.get("n_iterations"), t))
        return out

    igraph.Graph.community_leiden = record
    try:
        labels, total = clock(gc.leiden_k, graph, k, 0)
    finally:
        igraph.Graph.community_leiden = original
    steps = [t for n, t in calls if n == 2]
    rows.append((tag, f"bisection, {len(steps)} steps", sum(steps)))
    singles = [t for n, t in calls if n != 2]
    per = len(singles) / gc._RESTARTS
    rows.append((tag, f"5 converged restarts ({per:.0f} iterations each on average)", sum(singles)))
    rows.append((tag, "leiden_k in all", total))
    _, t = clock(gc.exactly_k, z, labels, k, 0)
    rows.append((tag, "exactly_k", t))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    announce("leiden_profile.py")  # its header: the versions it ran on
    import deltavae as dv
    from deltavae.train._label_space import data_components

    print(f"load average at start: {__import__('os').getloadavg()[0]:.2f}")
    rows = []
    counts = dv.datasets.synthetic_counts(args.n, 2000, n_clusters=10, n_conditions=1, seed=0)
    rng = np.random.default_rng(0)
    noise = rng.poisson(0.5, (args.n, 2000)).astype(np.float32)
    for name, x in (("clustered", counts.X), ("no structure", noise)):
        data, t = clock(data_components, sparse.csr_matrix(x), None, 0)
        rows.append((name, "50 principal components of the counts", t))
        if name == "clustered":
            z = np.ascontiguousarray(data[:, :10])
        else:
            z = np.random.default_rng(1).normal(size=(args.n, 10)).astype(np.float32)
        profile(z, None, 10, rows, f"{name}, start")
        profile(z, data, 10, rows, f"{name}, refit")
    print("| data | step | CPU s |")
    print("|---|---|---|")
    for tag, step, t in rows:
        print(f"| {tag} | {step} | {t:.2f} |")


if __name__ == "__main__":
    main()
