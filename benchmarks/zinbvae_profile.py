"""Where a ZINBVAE (or SCVI) training epoch spends its time: torch.profiler's top operators and
cProfile's top Python functions, on PBMC 3k (2,000 seurat_v3 HVGs), batch size 128.

Run from the repository root (one torch thread, as on the shared machine)::

    OMP_NUM_THREADS=1 python benchmarks/zinbvae_profile.py --epochs 5 --top 15
    OMP_NUM_THREADS=1 python benchmarks/zinbvae_profile.py --model scvi

The first epoch (warm-up) is not profiled.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time

import _common  # noqa: F401 - first: it sets OMP_WAIT_POLICY before torch loads
from _common import quiet
from _env import announce  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", choices=("ours", "scvi"), default="ours")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    announce("zinbvae_profile.py")  # its header: the versions it ran on
    quiet()
    import scvi
    import torch
    from torch.profiler import ProfilerActivity, profile
    from zinbvae_vs_scvi import _build, _train, load_pbmc

    torch.set_num_threads(args.threads)
    adata = load_pbmc(2000)
    scvi.settings.seed = args.seed
    model = _build(args.model, adata)
    _train(args.model, model, 1, 1)  # warm-up, not profiled

    start = time.perf_counter()
    _train(args.model, model, args.epochs, 1)
    plain = (time.perf_counter() - start) / args.epochs
    print(f"{args.model}: {plain:.3f} s/epoch without a profiler ({adata.n_obs} cells)")

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _train(args.model, model, args.epochs, 1)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top))

    profiler = cProfile.Profile()
    profiler.enable()
    _train(args.model, model, args.epochs, 1)
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(args.top * 3)
    print(text.getvalue())
    return 0


if __name__ == "__main__":
    sys.exit(main())
