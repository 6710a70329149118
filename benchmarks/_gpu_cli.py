"""gpu_check.py's command line (variants phase): ``deltavae fit`` on the device.

The command builds, trains and reads its model itself (on a GPU with ``--accelerator gpu``),
writes the input with the results, and says where it trained: no other check runs it on a
device. A labelled CGMDVAE of 600 PBMC cells from phase 1's AnnData (labels' typicality
record, write-out, report), in memory and with ``--backed`` (the counts read from the file in
chunks of rows), a few epochs each; the written latent and cluster probabilities must be
finite and the command must have said it trained on a GPU (on the CPU with ``--device cpu``).
"""

from __future__ import annotations

import contextlib
import io

from _gpu_report import CheckFailed, Context

N_CELLS, EPOCHS = 600, 3


def cli_entry(ctx: Context, models: dict) -> None:
    """``deltavae fit --model cgmdvae`` of ``models["ZINBVAE/pbmc"]``'s cells (skipped
    without them), in memory and backed."""
    source = models.get("ZINBVAE/pbmc")
    if source is None:
        return
    folder = ctx.tmp / "cli"
    folder.mkdir(exist_ok=True)
    cells = source["adata"][:N_CELLS].copy()
    cells.obs = cells.obs[["cell_type"]].copy()
    for key in list(cells.obsm):  # the input as a user has it, without phase 1's results
        del cells.obsm[key]
    path = folder / "cells.h5ad"
    cells.write_h5ad(path)
    for backed in (False, True):
        name = "deltavae fit --backed" if backed else "deltavae fit"
        out = folder / f"out_{int(backed)}.h5ad"
        ctx.report.run(
            "CLI/cgmdvae",
            f"{name} --accelerator {ctx.accelerator}",
            lambda o=out, b=backed: _fit(ctx, path, o, b),
            detail=str,
            finite=False,
        )


def _fit(ctx: Context, path, out, backed: bool) -> str:
    import anndata as ad
    import numpy as np
    import torch

    from deltavae import cli

    argv = ["fit", str(path), "--model", "cgmdvae", "--out", str(out), "--overwrite"]
    argv += ["--labels-key", "cell_type", "--epochs", str(EPOCHS), "--no-plots"]
    argv += ["--accelerator", ctx.accelerator, "--seed", str(ctx.seed)]
    argv += ["--threads", str(torch.get_num_threads())]  # the script's, put back after it
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        status = cli.main([*argv, *(["--backed"] if backed else [])])
    printed = said.getvalue()
    if status != 0:
        raise CheckFailed(f"exit status {status}: {printed.strip().splitlines()[-1:]}")
    where = "on a GPU" if ctx.accelerator == "gpu" else "on the CPU"
    if where not in printed:
        raise CheckFailed(f"the command did not say it trained {where}: {printed[:200]!r}")
    written = ad.read_h5ad(out)
    keys = [k for k in written.obsm if k.startswith("X_") or k.endswith("_probs")]
    bad = [k for k in keys if not np.isfinite(np.asarray(written.obsm[k])).all()]
    if not keys or bad:
        raise CheckFailed(f"obsm written: {keys}; not finite: {bad}")
    return f"{written.n_obs} cells, wrote {', '.join(sorted(keys))}"
