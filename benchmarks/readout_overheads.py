"""Read-out and load overheads of one source tree against another, each measurement in a
fresh Python process, the trees alternated (A B B A ...), the results' checksums compared.

Measured (``--what``):

* ``expr``: ``get_normalized_expression`` of a ZINBVAE and a CGMDVAE (CPU and wall seconds,
  the median of ``--repeat`` calls after one warm-up), ``n_samples`` 1 and 5, ``return_mean``
  on and off;
* ``pps``: ``posterior_predictive_sample``'s peak RSS above the RSS before the call
  (``/proc/self/status`` VmHWM, reset before the call);
* ``load``: ``load`` of a saved model and its reads of ``model.pt`` (CRC pass, one
  ``torch.load``, the weights' checksum; CPU seconds, the median of ``--repeat``).

The data: dense counts ``--cells`` x ``--genes`` (Poisson, mean 0.3,
``numpy.random.default_rng(seed)``) as CSR, two batches; the models untrained (weights drawn
with ``torch.manual_seed(seed)``, ``is_trained_`` set): the read-outs' work does not depend
on training. One torch thread.

    python benchmarks/readout_overheads.py --src /old/src --src /new/src --what expr
    python benchmarks/readout_overheads.py --src /old/src --src /new/src --what pps --cells 50000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads
from _common import load_average
from _env import announce  # noqa: E402

EXPR_CASES = [
    (kind, n, mean) for kind in ("ZINBVAE", "CGMDVAE") for n in (1, 5) for mean in (True, False)
]


def _data(cells: int, genes: int, seed: int):
    import anndata as ad
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = sp.csr_matrix(rng.poisson(0.3, size=(cells, genes)).astype(np.float32))
    adata = ad.AnnData(counts)
    adata.obs_names = [f"c{i}" for i in range(cells)]
    adata.var_names = [f"g{i}" for i in range(genes)]
    adata.obs["batch"] = np.where(np.arange(cells) % 2, "a", "b")
    adata.obs["batch"] = adata.obs["batch"].astype("category")
    return adata


def _model(kind: str, adata, seed: int):
    import torch

    import deltavae as dv

    torch.manual_seed(seed)
    if kind == "ZINBVAE":
        dv.model.ZINBVAE.setup_anndata(adata, batch_key="batch")
        model = dv.model.ZINBVAE(adata)
    else:
        dv.model.CGMDVAE.setup_anndata(adata, condition_key="batch")
        model = dv.model.CGMDVAE(adata, n_clusters=5)
    model.is_trained_ = True
    return model


def _digest(x) -> str:
    import numpy as np

    x = getattr(x, "values", x)
    if hasattr(x, "todense"):
        x = x.todense()
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()[:16]


def _peak_rss_mib() -> float:
    with open("/proc/self/status") as fh:
        line = next(r for r in fh if r.startswith("VmHWM"))
    return int(line.split()[1]) / 1024


def _rss_mib() -> float:
    with open("/proc/self/status") as fh:
        line = next(r for r in fh if r.startswith("VmRSS"))
    return int(line.split()[1]) / 1024


def worker(args) -> dict:
    """One measurement in this process (the source tree is the one on ``PYTHONPATH``)."""
    import warnings

    import torch

    import deltavae as dv

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    src = os.environ.get("PYTHONPATH", "")
    if not dv.__file__.startswith(os.path.abspath(src)):
        raise SystemExit(f"deltavae was imported from {dv.__file__}, not from {src}")
    adata = _data(args.cells, args.genes, args.seed)
    if args.what == "load":
        return _load_parts(_model(args.kind, adata, args.seed), adata, args.repeat)
    model = _model(args.kind, adata, args.seed)
    if args.what == "pps":
        import gc

        gc.collect()
        before = _rss_mib()
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        torch.manual_seed(args.seed)
        out = model.posterior_predictive_sample(n_samples=args.n_samples)
        return {"peak above MiB": _peak_rss_mib() - before, "digest": _digest(out)}
    times, digest = [], None
    for _ in range(args.repeat + 1):
        torch.manual_seed(args.seed)
        wall, cpu = time.perf_counter(), time.process_time()
        out = model.get_normalized_expression(
            n_samples=args.n_samples, return_mean=bool(args.return_mean), return_numpy=True
        )
        times.append((time.process_time() - cpu, time.perf_counter() - wall))
        digest = _digest(out)
        del out
    times = times[1:]
    return {
        "cpu": statistics.median(t[0] for t in times),
        "wall": statistics.median(t[1] for t in times),
        "digest": digest,
    }


def _load_parts(model, adata, repeat: int) -> dict:
    """CPU seconds (medians of ``repeat``) of ``load`` and of its reads of ``model.pt``: the
    CRC pass, one ``torch.load``, the weights' SHA-256."""
    import zipfile

    import torch

    from deltavae.model._saved import weights_digest

    def median_cpu(call) -> float:
        times = []
        for _ in range(repeat + 1):
            cpu = time.process_time()
            call()
            times.append(time.process_time() - cpu)
        return statistics.median(times[1:])

    with tempfile.TemporaryDirectory() as folder:
        model.save(folder, overwrite=True)
        path = os.path.join(folder, "model.pt")
        state = torch.load(path, map_location="cpu", weights_only=False)["model_state_dict"]
        return {
            "model.pt MiB": os.path.getsize(path) / 2**20,
            "testzip": median_cpu(lambda: zipfile.ZipFile(path).testzip()),
            "torch.load": median_cpu(
                lambda: torch.load(path, map_location="cpu", weights_only=False)
            ),
            "weights digest": median_cpu(lambda: weights_digest(state)),
            "load": median_cpu(lambda: type(model).load(folder, adata)),
        }


def _run(src: str, args, **case) -> dict:
    command = [sys.executable, __file__, "--worker", "--what", args.what]
    command += ["--cells", str(args.cells), "--genes", str(args.genes), "--seed", str(args.seed)]
    command += ["--repeat", str(args.repeat)]
    for key, value in case.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", action="append", help="a source tree (give two)")
    parser.add_argument("--what", choices=("expr", "pps", "load"), default="expr")
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--genes", type=int, default=2_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="A B then B A, this many times")
    parser.add_argument("--kind", default="ZINBVAE")
    parser.add_argument("--n-samples", type=int, default=1)
    parser.add_argument("--return-mean", type=int, default=1)
    parser.add_argument(
        "--case", action="append", help="expr only: KIND,N_SAMPLES,RETURN_MEAN (default: all 8)"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    announce("readout_overheads.py")  # its header: the versions it ran on
    if args.what == "expr":
        chosen = [c.split(",") for c in args.case] if args.case else EXPR_CASES
        cases = [{"kind": k, "n_samples": int(n), "return_mean": int(m)} for k, n, m in chosen]
    elif args.what == "pps":
        cases = [{"kind": k, "n_samples": n} for k in ("ZINBVAE", "CGMDVAE") for n in (1, 5)]
    else:
        cases = [{"kind": k} for k in ("ZINBVAE", "CGMDVAE")]
    print(f"load {load_average()}; {args.cells} cells x {args.genes} genes, seed {args.seed}")
    for case in cases:
        got = {src: [] for src in args.src}
        for r in range(args.rounds):
            order = args.src if r % 2 == 0 else args.src[::-1]
            for src in order:
                got[src].append(_run(src, args, **case))
        cells = []
        for src, runs in got.items():
            keys = [k for k in runs[0] if isinstance(runs[0][k], float)]
            figures = ", ".join(f"{k} {' / '.join(f'{r[k]:.3f}' for r in runs)}" for k in keys)
            cells.append(f"{src}: {figures}; digest {runs[0].get('digest')}")
        digests = {r.get("digest") for runs in got.values() for r in runs}
        print(case, "| same results" if len(digests) == 1 else "| RESULTS DIFFER")
        for line in cells:
            print("   ", line)
    print(f"load {load_average()}")


if __name__ == "__main__":
    main()
