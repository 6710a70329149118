"""GPU check: train every deltavae model on a CUDA device and call everything that runs it.

One script, for a machine with one NVIDIA GPU. It records each step as ok, FAIL (the
exception's type and first line; the script goes on) or skip (an earlier step it needs failed)
and ends with a table and the line ``gpu_check: N passed, M failed``, followed where any step
failed by ``: FAILED <model> <check> (<why>); ...``: that one line says what differs. Exit
status 1 when any step failed.

Phases (real data shipped with the package, nothing downloaded):

1. ZINBVAE on PBMC 3k (2,000 ``seurat_v3`` genes on the counts): training on the device, then
   every public method that runs the module: latents (of the training cells, of a new AnnData,
   sampled), normalized expression, differential expression (B against CD14+ monocytes), ELBO,
   reconstruction error, marginal likelihood (and the three per cell, which numpy must read
   on the host), likelihood parameters, posterior predictive
   samples, feature correlations, library sizes, the aggregated posterior and
   ``write_to_adata`` (also into the whole PBMC 3k of every gene, which must get the same
   latent). scvi-tools' own mixin methods (ELBO onwards in that list)
   run last, after phase 6: one that fails can leave scvi-tools' registry of the model's
   AnnData broken, and that must not hide the other checks (it is restored and reported).
   Differential expression's ``raw_normalized_mean1/2`` are checked against the groups'
   counts per 10,000 (read on the host), and scvi-tools' scaling column must not stay in obs.
2. Kang IFN-beta (``condition`` ctrl / stim): a semi-supervised CGMDVAE (half the cells keep
   their ``cell_type``) with z, w and z moved to ctrl, hard and soft clusters, labels,
   ``write_to_adata``, generated cells (one cluster and condition; drawn ones; the library
   quantiles of each cluster and condition they draw library sizes from), ``translate``
   and ``predict_perturbation`` by translate, latent shift and nearest response (expression and
   latent similarity), plus the scvi-tools methods above. A ZINBVAE (condition as batch, donor
   as covariate) trained on donor 101 gives ``predict_perturbation`` by latent shift and
   nearest response and differential abundance; the donor-101 CGMDVAE of two condition keys
   (condition, donor) z moved to stim, drawn cells (both keys drawn jointly), ``translate``
   and latent shift.
3. Query mapping: donor 107 mapped onto donor-101 references with ``load_query_data`` (a new
   ``donor`` category), a few epochs of query training, then ``predict_labels`` (CGMDVAE) and
   a 15-NN label transfer on the latent (ZINBVAE), scored against the held-out cell types.
   The CGMDVAE query also: ``predict_labels(unknown_below=0.1)`` (typicality against the
   reference's record; the cells under it, and only they, take the unlabelled mark),
   ``predict`` (the same labels), ``write_to_adata(unknown_below=0.1)``, its latent after
   ``query.X`` is replaced (that of the new counts, as a copy's), and last, with the query
   subset in place (``sc.pp.filter_cells``), one more epoch and ``predict_labels`` of the
   cells left. Each query mapped on the CPU
   (ZINBVAE, CGMDVAE) trains two more epochs with ``optimizer="Custom"`` (SGD with weight
   decay): the reference's frozen and masked weights must not move.
4. Spatial: pseudo-spots summed from half of PBMC 3k with known proportions, the other half
   as reference: ``NMFDeconv.from_reference`` (proportions, abundance, signatures, technology
   factor, ``write_to_adata``), ``SpatialImputer.from_reference`` (neighbour profiles, on the
   spots without the reference's last 100 genes: ``impute`` scored by median PCC against their
   true counts, the same imputed in four chunks of spots, proportions, ``write_to_adata``,
   ``cross_validate`` of 20 shared genes in 2 folds, which must put back
   ``scvi.settings.seed`` and the CPU's and the device's generators) and ``Archetypes``
   (``n_archetypes="auto"``; weights of the training and of new spots, profiles, anchors,
   markers, signature matching, names, ``write_to_adata``).
4b. Variants (``_gpu_variants.py``): what the phases above leave out, each model joining
   phase 5's comparison: an unlabelled CGMDVAE on Kang (the default Leiden mixture start and
   the refit), CGMDVAE with ``likelihood="normal"`` on log-normalized PBMC cells, ZINBVAE with
   a per-batch dispersion, a latent library size, early stopping and ``restore_best``,
   ZINBVAE trained with ``precision="bf16-mixed"`` (and on CUDA ``"16-mixed"``), NMFDeconv
   per spot, SpatialImputer with the latent design, Archetypes with two samples; a CGMDVAE
   started from phase 1's ZINBVAE (``CGMDVAE.from_zinbvae``: the weights carried from the
   device, the mixture placed at epoch 0), trained with ``early_stopping="auto"`` (the best
   validation epoch kept), its ``predict_labels`` typicality read on the device;
   ``deltavae fit`` (the command line) of a labelled CGMDVAE of 600 PBMC cells with
   ``--accelerator gpu``, in memory and ``--backed``: its written results finite, the command
   saying it trained on a GPU (``_gpu_cli.py``);
   ZINBVAE, CGMDVAE, Archetypes and SpatialImputer (neighbour profiles) on 600 PBMC cells each
   trained twice from one seed under ``torch.use_deterministic_algorithms(True)`` (in a
   process with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``), every tensor of their state equal;
   then phase 1's ZINBVAE saved and pickled on the device and read back in a process that
   sees no GPU (``CUDA_VISIBLE_DEVICES=""``), its latent compared with the device's.
5. Devices: each trained model is copied to the CPU with ``to_device("cpu")``; its latent (for
   CGMDVAE also the cluster probabilities, for NMFDeconv the proportions, for SpatialImputer
   the imputed genes, for Archetypes the weights) is recomputed there and compared with the
   device's result: the maximum absolute difference is printed and a relative difference (to
   the largest value) above 1e-3 fails. The Kang CGMDVAE's seeded draws (generated cells,
   ``translate``'s counts, the latent shift's counts of 500 control cells, drawn on the CPU
   whatever the device, and their nearest responses; cells of a label, ``sample(label=...)``,
   decoded 16 at a time; the donor-101 ZINBVAE's too) are drawn
   again there, the translation with another ``batch_size``: fewer
   than 99.9% of them equal fails (generated cells: also other clusters or conditions, or
   expected totals, their drawn library sizes, beyond that 1e-3); the
   normal-likelihood CGMDVAE's generated cells (real values) must agree within the tolerance
   above. The read-outs that gather each minibatch's values on the device
   (``_gpu_reads.py``) are read on the device first and again on the CPU copy, within the
   same tolerance: of phase 1's and 2's count models and the gene-batch variant normalized
   expression (every batch where there are several), likelihood parameters, library sizes and
   per-cell marginal likelihood and differential expression's group means (``scale1``,
   ``scale2``; its cells drawn from one numpy seed), each with the guide's ``Normal`` draws at
   their means (the devices' generators differ), and differential abundance by cell type; the
   labelled CGMDVAE's soft labels with one label struck from one condition's record, so that
   its cells are labelled by the vote over conditions (``model/_label_votes.py``), and its
   latents moved to another condition by that vote (``get_latent_representation(condition=)``);
   of the spot models NMFDeconv's abundance, Archetypes' weights of new spots, SpatialImputer's
   imputation a quarter of the spots at a time, that of its spots subset and reordered in
   place (read as they are now), and its proportions or latents. The model then
   goes back to the device.
6. Save and load: each of the five models is saved, loaded with ``Model.load(path, adata,
   accelerator="gpu")``, checked to give the same latent as before saving (the Kang CGMDVAE
   the same seeded generated cells: its library quantiles are saved), and trained for a
   few more epochs: the loss must stay finite and the parameters must change.
7. Speed: ZINBVAE and ``scvi.model.SCVI`` with the same architecture (10 latent, 1 hidden layer
   of 128, ZINB, one dispersion per gene) on 100,000 synthetic cells x 2,000 genes (NB counts,
   10 clusters, fixed seed) at batch sizes 128 and 1024, alternating which model runs first:
   cells/s (all cells trained on, no validation; the first epoch is dropped as warm-up when
   there are more), GPU utilisation sampled during training and peak GPU memory
   (``torch.cuda.max_memory_allocated``). On CUDA also ZINBVAE at batch 128 with its
   minibatches in pinned memory (``datasplitter_kwargs={"pin_memory": True}``): the first run
   saw each minibatch's copy to the GPU wait for the device, and the GPU about 90% idle.

Time on one H200 with 16 CPU cores, measured on 2026-12-04 (``benchmarks/gpu_runs/``): 335 s
without the speed phase (data and ZINBVAE on PBMC 34 s; Kang 96 s; spatial 34 s; variants 158 s;
CPU copies 1 s; save / load 4 s; scvi-tools methods 9 s) and 77 s for the speed phase, with no
training cut short. The rows added since (the pinned speed run, two mixed-precision variants)
add about 40 s more, the deterministic repeats about 30 s (31 s on one CPU thread with
``--small``) and the two-key, whole-AnnData and chunked read-outs a few seconds (estimated),
so a run with the speed phase may pass 8 minutes: ``--skip-speed`` keeps the checks under it.
The steps added on 2026-12-06 (cross-validation's two trainings of at most 50 epochs on the
1,000 spots, two query epochs, a few read-outs) add an estimated 10-15 s.
The pretrained CGMDVAE (20 epochs on PBMC 3k, its Leiden start and refit, the typicality
record) adds an estimated 15-25 s.
The command line's two fits (3 epochs of 600 cells each) and ``sample(label=...)`` add an
estimated 5-10 s (the two fits took 12 s on one CPU thread).
Every training call is cut by Lightning's ``max_time`` at 60 s (40 s per speed run) or at what
is left of ``--budget-minutes`` (7.5), whichever comes first, and a phase that would start
after the budget is reported as failed; the detail column says when a box cut training short.

Besides deltavae's dependencies it needs scikit-misc (``seurat_v3`` genes); it stops at once,
naming what is missing. Where the machine has no package index, carry wheels
(``benchmarks/gpu_runs/README.md`` says how).

Run from the repository root::

    python benchmarks/gpu_check.py --out gpu_check.json       # on a CUDA machine
    python benchmarks/gpu_check.py --device cpu --small       # smoke check on a CPU, minutes
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import shutil
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path

# The benchmarks' folder, for the tests that load this file by path. _common comes first: it
# sets OMP_WAIT_POLICY before torch loads (see its docstring).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment as common_environment  # noqa: E402, I001 - first
from _common import environment_line, quiet  # noqa: E402
from _gpu_models import phase_kang, phase_scvi_methods, phase_zinbvae_pbmc  # noqa: E402
from _gpu_report import (  # noqa: E402, F401 - FAILED, CheckFailed and _same: for the tests
    FAILED,
    CheckFailed,
    Context,
    Report,
    Row,
    _first_line,
    _same,
)
from _gpu_spatial import phase_devices, phase_save_load, phase_spatial  # noqa: E402
from _gpu_speed import phase_speed, speed_table  # noqa: E402
from _gpu_variants import phase_variants  # noqa: E402


# --------------------------------------------------------------------------- main
def environment(device: str) -> dict:
    import torch

    env = common_environment()
    env["cuda_available"] = torch.cuda.is_available()
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["device_name"] = torch.cuda.get_device_name(0)
        env["device_memory_gib"] = round(props.total_memory / 2**30, 1)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = f"CPU ({platform.processor() or platform.machine()})"
    return env


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default cuda")
    p.add_argument(
        "--small",
        action="store_true",
        help="tiny epoch counts and subsampled data: a smoke run of a few minutes on a CPU",
    )
    p.add_argument("--skip-speed", action="store_true", help="leave out the ZINBVAE/SCVI speed run")
    p.add_argument("--out", type=Path, default=None, help="also write all results as JSON")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 with --device cpu, torch's default with cuda)",
    )
    p.add_argument("--seed", type=int, default=0, help="scvi.settings.seed and data seeds")
    p.add_argument(
        "--budget-minutes",
        type=float,
        default=7.5,
        help="time budget: training calls are cut to what is left of it, and phases that\n"
        "would start after it are not run (reported as failed); default 7.5",
    )
    return p.parse_args(argv)


# Modules the phases import beyond deltavae's own dependencies, with their pip names.
REQUIRED_MODULES = {"skmisc": "scikit-misc"}

PHASES = (
    ("ZINBVAE on PBMC", phase_zinbvae_pbmc),
    ("Kang: CGMDVAE, ZINBVAE reference, queries", phase_kang),
    ("spatial: NMFDeconv, SpatialImputer, Archetypes", phase_spatial),
    ("variants; a machine without a GPU", phase_variants),
    ("CPU copies against the device", phase_devices),
    ("save, load, train on", phase_save_load),
    ("scvi-tools mixin methods", phase_scvi_methods),
)


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    missing = [m for m in REQUIRED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        print(
            f"gpu_check: missing {', '.join(missing)} (pip install "
            f"{' '.join(REQUIRED_MODULES[m] for m in missing)})",
            file=sys.stderr,
        )
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    threads = args.threads or (1 if args.device == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    quiet()
    import scvi

    scvi.settings.seed = args.seed
    started = time.perf_counter()
    env = environment(args.device)
    header = (
        f"gpu_check on {env['device_name']} ({args.device}"
        + (f", {env['device_memory_gib']} GiB, CUDA {env['cuda']}" if args.device == "cuda" else "")
        + f"); {environment_line(env)}; lightning {env['lightning']}; "
        f"{'small' if args.small else 'full'} settings"
    )
    print(header, flush=True)
    report = Report(args.device)
    ctx = Context(args, report)
    models: dict = {}
    results: dict = {"settings": ctx.cfg | {"small": args.small, "device": args.device}}
    phases = [(label, lambda fn=fn: fn(ctx, models)) for label, fn in PHASES]
    if not args.skip_speed:
        phases.append(("speed: ZINBVAE vs SCVI", lambda: phase_speed(ctx, results)))
    phase_seconds = {}
    try:
        for label, fn in phases:
            print(f"== {label}", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            if ctx.remaining() <= 0:
                report._add(
                    Row("phase", label, "FAIL", 0.0, f"not run: {args.budget_minutes} min spent")
                )
                continue
            try:
                fn()
            except Exception as exc:  # noqa: BLE001 - a crash of the harness: one row, go on
                report._add(
                    Row(
                        "phase",
                        label,
                        "FAIL",
                        time.perf_counter() - t0,
                        _first_line(exc),
                        traceback.format_exc(limit=-6),
                    )
                )
            phase_seconds[label] = time.perf_counter() - t0
    finally:
        shutil.rmtree(ctx.tmp, ignore_errors=True)
    wall = time.perf_counter() - started
    passed, failed, skipped = report.counts()
    lines = ["", report.table(), ""]
    if "speed" in results:
        speed = results["speed"]
        lines += [
            f"Speed, {speed['n_cells']:,} synthetic cells x {speed['n_genes']} genes "
            "(all cells train, no validation; first epoch dropped when there are more):",
            "",
            speed_table(speed),
            "",
        ]
    lines.append("phases: " + "; ".join(f"{label} {s:.0f} s" for label, s in phase_seconds.items()))
    lines.append(f"total {wall:.0f} s")
    lines.append(report.summary())
    print("\n".join(lines), flush=True)
    if args.out is not None:
        results.update(
            {
                "environment": env,
                "rows": [asdict(r) for r in report.rows],
                "phase_seconds": phase_seconds,
                "wall_seconds": wall,
                "passed": passed,
                "failed": failed,
                "skipped": skipped,
            }
        )
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(f"results written to {args.out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
