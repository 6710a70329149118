"""Seconds and accuracy of the CGMDVAE's mixture start, per method, each in a fresh process.

The start clusters the condition-centred posterior means of z once, at ``mixture_init_epoch``
(``deltavae.train.MixtureInitialization.cluster``). Issue 19's target: under 3 s on 10,000
cells after the first call in a fresh process (the first call pays numba's compilation of
UMAP's graph code, once per process). Every method runs in its own interpreter, twice on the
same points; the table gives both calls' seconds and the ARI of the second against the truth.

Points: ``--n`` draws of 10 Gaussian blobs in 10 dimensions (seed 0), optionally split into two
conditions (``--conditions 2``); or the ``z`` saved in ``.npz`` files (``--z``, arrays ``z``,
``labels`` and optionally ``cats``, the condition codes), e.g. a CGMDVAE's z at its start.

    python benchmarks/mixture_start.py
    python benchmarks/mixture_start.py --conditions 2 --methods leiden umap
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
from _env import announce, with_versions  # noqa: E402

_CHILD = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
from deltavae.train._mixture_init import MixtureInitialization, _condition_groups
from deltavae.metrics import ari
import torch
method, source, n, n_conditions = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
if source == "blobs":
    rng = np.random.default_rng(0)
    centres = rng.normal(0, 3, (10, 10))
    labels = rng.integers(0, 10, n)
    z = (centres[labels] + rng.normal(0, 1, (n, 10))).astype(np.float32)
    group = rng.integers(0, n_conditions, n) if n_conditions > 1 else None
else:
    saved = np.load(source, allow_pickle=True)
    z, labels = saved["z"], saved["labels"]
    cats = saved["cats"] if "cats" in saved and saved["cats"].ndim else None
    group = None if cats is None else _condition_groups(torch.as_tensor(cats).view(len(z), -1))
k = len(np.unique(labels))
start = MixtureInitialization(method=method, seed=0)
seconds = []
for _ in range(2):
    t = time.perf_counter()
    clusters = start.cluster(z, k, group)
    seconds.append(time.perf_counter() - t)
print(json.dumps({"seconds": seconds, "ari": float(ari(labels, clusters)), "n": len(z), "k": k}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["leiden", "umap", "spectral", "kmeans"])
    parser.add_argument("--n", type=int, default=10_000, help="blob points")
    parser.add_argument("--conditions", type=int, default=1)
    parser.add_argument("--z", nargs="*", default=[], help=".npz files with z and labels")
    parser.add_argument("--out", default=None, help="write the rows as JSON")
    args = parser.parse_args()
    announce("mixture_start.py")  # its header: the versions it ran on
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    env.setdefault("NUMBA_NUM_THREADS", env["OMP_NUM_THREADS"])
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("| points | method | first call (s) | second call (s) | ARI |")
    print("|---|---|---|---|---|")
    rows = []
    for source in ["blobs", *args.z]:
        for method in args.methods:
            started = time.time()
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, method, source, str(args.n), str(args.conditions)],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            row.update(method=method, source=source, wall=time.time() - started)
            rows.append(row)
            name = (
                f"{row['n']:,} blobs, {args.conditions} condition(s)"
                if source == "blobs"
                else f"{os.path.basename(source)} ({row['n']:,}, k={row['k']})"
            )
            first, second = row["seconds"]
            print(f"| {name} | {method} | {first:.2f} | {second:.2f} | {row['ari']:.3f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(with_versions(rows), f, indent=1)


if __name__ == "__main__":
    main()
