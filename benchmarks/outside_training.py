"""CGMDVAE's steps around the training loop at scale, beside scvi-tools' SCVI and SCANVI.

Per model, in one process, in turn: ``setup_anndata``, the constructor, ``train`` (split into
the epochs and what comes after them, the records), the read-out (CGMDVAE: ``predict_clusters``;
semi-supervised CGMDVAE: ``predict_labels``, twice; SCVI: ``get_latent_representation``;
SCANVI: ``predict``), ``save`` and ``load``, each with wall and CPU seconds. ``--profile``
prints cProfile's top functions of every step but the epochs.

The data (``--data blocks``, default): CSR counts, ``--cells`` x ``--genes``, 100 stored
counts per cell (1-5), in 10 groups: each cell takes half of its genes among its group's
block of genes, the other half among all (``numpy.random.default_rng(seed)``); 5% of the
cells labelled with their group (the semi-supervised models), the others ``"Unknown"``.
``--data uniform``: the same without groups (benchmarks/README.md, "Outside the training loop,
200,000 cells"). One torch thread unless ``--threads``.

    python benchmarks/outside_training.py --cells 200000 --epochs 2
    python benchmarks/outside_training.py --cells 50000 --models semi --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads
from _common import Timer, environment_line, load_average, markdown_table, quiet
from _env import announce, with_versions  # noqa: E402

MODELS = ("cgmdvae", "semi", "scvi", "scanvi")
STEPS = (
    "setup",
    "constructor",
    "train: epochs",
    "train: after",
    "read-out",
    "again",
    "save",
    "load",
)


def counts(n_cells: int, n_genes: int, kind: str, seed: int):
    """The benchmark's counts (see the module) and each cell's group."""
    import numpy as np
    from scipy import sparse

    rng = np.random.default_rng(seed)
    per_cell, n_groups = 100, 10
    groups = rng.integers(0, n_groups, n_cells)
    cols = rng.integers(0, n_genes, (n_cells, per_cell))
    if kind == "blocks":
        block = n_genes // n_groups
        own = groups[:, None] * block + rng.integers(0, block, (n_cells, per_cell // 2))
        cols[:, : per_cell // 2] = own
    cols.sort(axis=1)
    values = rng.integers(1, 6, (n_cells, per_cell)).astype(np.float32)
    indptr = np.arange(0, n_cells * per_cell + 1, per_cell)
    x = sparse.csr_matrix((values.ravel(), cols.ravel(), indptr), shape=(n_cells, n_genes))
    x.sum_duplicates()
    return x, groups


def _adata(x, groups, seed: int):
    import anndata as ad
    import numpy as np
    import pandas as pd

    adata = ad.AnnData(x.copy())
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    labelled = np.random.default_rng(seed + 1).random(adata.n_obs) < 0.05
    adata.obs["label"] = pd.Categorical(np.where(labelled, [f"t{g}" for g in groups], "Unknown"))
    return adata


class Steps:
    """Each step's wall and CPU seconds, and with ``profile`` cProfile's top functions."""

    def __init__(self, profile: int):
        self.times, self.profile = {}, profile

    def run(self, name: str, fn, profiled: bool = True):
        prof = cProfile.Profile() if self.profile and profiled else None
        with Timer() as t:
            if prof is not None:
                prof.enable()
            out = fn()
            if prof is not None:
                prof.disable()
        self.times[name] = (t.seconds, t.cpu_seconds)
        print(f"  {name}: {t.seconds:.2f} s wall, {t.cpu_seconds:.2f} s CPU", file=sys.stderr)
        if prof is not None and t.cpu_seconds > 0.5:
            text = io.StringIO()
            stats = pstats.Stats(prof, stream=text).sort_stats("cumulative")
            stats.print_stats(self.profile)
            print(f"### cProfile of {name}\n{text.getvalue()}", file=sys.stderr)
        return out


def _train_split(steps: Steps, model, epochs: int, kwargs: dict):
    """``train``, timed as its epochs and what follows the last one (its records)."""
    from lightning.pytorch.callbacks import Callback

    marks = {}

    class Mark(Callback):
        def on_train_end(self, trainer, pl_module):
            marks["end"] = (time.perf_counter(), time.process_time())

    with Timer() as t:
        model.train(max_epochs=epochs, callbacks=[Mark()], **kwargs)
    wall, cpu = marks["end"][0] - t._start, marks["end"][1] - t._cpu_start
    steps.times["train: epochs"] = (wall, cpu)
    steps.times["train: after"] = (t.seconds - wall, t.cpu_seconds - cpu)
    print(
        f"  train: {t.seconds:.2f} s wall, {t.cpu_seconds:.2f} s CPU "
        f"({t.cpu_seconds - cpu:.2f} s CPU after the epochs)",
        file=sys.stderr,
    )


def run_model(name: str, adata, args) -> dict:
    import scvi

    import deltavae as dv

    scvi.settings.seed = args.seed
    steps = Steps(args.profile)
    train = {"enable_progress_bar": False, "enable_model_summary": False}
    folder = tempfile.mkdtemp(prefix=f"outside_{name}_")
    semi = {"labels_key": "label", "unlabeled_category": "Unknown"}
    if name in ("cgmdvae", "semi"):
        cls = dv.model.CGMDVAE
        steps.run("setup", lambda: cls.setup_anndata(adata, **(semi if name == "semi" else {})))
        model = steps.run("constructor", lambda: cls(adata, n_clusters=10))
        if args.profile and args.profile_train:
            steps.run("train", lambda: model.train(max_epochs=args.epochs, **train))
        else:
            _train_split(steps, model, args.epochs, train)
        read = model.predict_labels if name == "semi" else model.predict_clusters
    else:
        cls = scvi.model.SCANVI if name == "scanvi" else scvi.model.SCVI
        steps.run("setup", lambda: cls.setup_anndata(adata, **(semi if name == "scanvi" else {})))
        model = steps.run("constructor", lambda: cls(adata))
        _train_split(steps, model, args.epochs, train)
        read = model.predict if name == "scanvi" else model.get_latent_representation
    first = steps.run("read-out", read)
    again = steps.run("again", read)
    steps.run("save", lambda: model.save(folder, overwrite=True))
    steps.run("load", lambda: cls.load(folder, adata=adata))
    if args.readouts:  # to compare two copies of deltavae's read-outs
        import pickle

        record = getattr(model, "typicality_record_", None)
        with open(os.path.join(args.readouts, f"{name}.pkl"), "wb") as fh:
            pickle.dump({"read_out": first, "again": again, "typicality_record": record}, fh)
    return {"times": steps.times}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", type=int, default=200_000)
    p.add_argument("--genes", type=int, default=2_000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--data", choices=("blocks", "uniform"), default="blocks")
    p.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--profile", type=int, default=0, help="cProfile's top N per step (0: none)")
    p.add_argument("--profile-train", action="store_true", help="profile train whole too")
    p.add_argument("--json", help="write the seconds here")
    p.add_argument("--readouts", help="a folder: each model's read-outs pickled there")
    args = p.parse_args(argv)
    announce("outside_training.py")  # its header: the versions it ran on
    quiet()
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from _common import environment

    print(environment_line(environment()), file=sys.stderr)
    x, groups = counts(args.cells, args.genes, args.data, args.seed)
    results, loads = {}, [load_average()]
    for name in args.models:
        print(f"{name} (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
        results[name] = run_model(name, _adata(x, groups, args.seed), args)
        loads.append(load_average())
    headers = ["step (s, wall / CPU)", *args.models]
    rows = []
    for step in STEPS + ("train",):
        row = [step]
        for name in args.models:
            t = results[name]["times"].get(step)
            row.append("" if t is None else f"{t[0]:.2f} / {t[1]:.2f}")
        if any(row[1:]):
            rows.append(row)
    print(f"{args.cells} cells x {args.genes} genes ({args.data}), {args.epochs} epochs, "
          f"seed {args.seed}, load {np.mean(loads):.1f}")  # fmt: skip
    print(markdown_table(headers, rows))
    if args.json:
        out = {name: result["times"] for name, result in results.items()}
        with open(args.json, "w") as fh:
            record = {"args": vars(args), "load": loads, "results": out}
            json.dump(with_versions(record), fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
