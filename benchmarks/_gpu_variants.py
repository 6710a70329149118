"""gpu_check.py's variants phase: the settings the main phases leave out, on the device (each
model joins the CPU comparison of phase 5), and a model taken to a machine without a GPU.

* CGMDVAE unlabelled on Kang: the default Leiden mixture start and the refit after training
  (the main phase's model has labels, which skip both);
* CGMDVAE with ``likelihood="normal"`` on log-normalized PBMC cells;
* CGMDVAE started from phase 1's ZINBVAE (``from_zinbvae``), trained with
  ``early_stopping="auto"``, its typicality compared in phase 5 (``_gpu_pretrained.py``);
* the command line, ``deltavae fit`` of a labelled CGMDVAE on the device, in memory and
  ``--backed`` (``_gpu_cli.py``);
* ZINBVAE with a per-batch dispersion, a latent library size, early stopping and the best
  validation epoch restored;
* NMFDeconv per spot, SpatialImputer with the latent design, Archetypes with two samples;
* four models (ZINBVAE, CGMDVAE, Archetypes, SpatialImputer) trained twice from one seed
  under deterministic algorithms, as README promises bit for bit on a GPU;
* training's guard on the device: a diverging run (``lr=1e6``, and a parameter made NaN
  after a given step) stops naming its first non-finite step with finite parameters kept,
  the losses being read every ``CHECK_EVERY`` steps there; and the host's waits for the
  device inside the training steps of ZINBVAE and CGMDVAE, counted with CUDA's sync debug
  mode (at most ``MAX_WAITS_PER_STEP`` a step on average);
* the device's ZINBVAE saved and pickled, then loaded and unpickled in a process that sees no
  GPU (``CUDA_VISIBLE_DEVICES=""``): its latent must match the device's; so must the pickled
  query model's and latent-design SpatialImputer's results (their modules hold tensors outside
  parameters and buffers, which a pickle once kept on the GPU).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import Counter

from _gpu_cli import cli_entry
from _gpu_models import prepare_kang, prepare_pbmc
from _gpu_pretrained import pretrained_entry
from _gpu_report import FAILED, CheckFailed, Context, _module_device, _same

# Relative difference above which a model read on a CPU-only machine differs from the device.
CPU_ONLY_TOLERANCE = 1e-3
# Host waits for the device per training step above which training is reported as waiting
# (the losses are read every 20 steps; an epoch's end and validation are not counted).
MAX_WAITS_PER_STEP = 0.25

_READ_ON_CPU = """
import os, pickle, sys
import numpy as np
import anndata as ad
import torch
import deltavae as dv
assert not torch.cuda.is_available(), "CUDA_VISIBLE_DEVICES did not hide the GPU"
how, path, adata_path, out = sys.argv[1:]
adata = ad.read_h5ad(adata_path)
if how == "load":
    model = dv.model.ZINBVAE.load(path, adata)
else:
    with open(path, "rb") as f:
        model = pickle.load(f)
device = str(next(model.module.parameters()).device)
if hasattr(model, "impute"):
    result = model.impute().to_numpy()
else:  # the pickled model's own AnnData (a query model's aligned copy)
    result = model.get_latent_representation()
np.save(out, result)
print(device)
"""

# Trains each model named twice from scvi.settings.seed under deterministic algorithms and
# prints how many of its state's tensors differ between the two runs.
_TRAIN_TWICE = """
import sys
import anndata as ad
import scvi
import torch
import deltavae as dv
torch.use_deterministic_algorithms(True)
adata_path, accelerator, *names = sys.argv[1:]
cells = ad.read_h5ad(adata_path)
spots, reference = dv.datasets.pseudo_spots(cells, "cell_type", n_spots=120, seed=0)
def build(name):
    if name == "SpatialImputer":  # neighbour profiles: the state-by-state maximum
        measured = spots[:, spots.var_names[:-100]].copy()
        return dv.model.SpatialImputer.from_reference(measured, reference, labels_key="cell_type")
    adata = spots.copy() if name == "Archetypes" else cells.copy()
    cls = getattr(dv.model, name)
    cls.setup_anndata(adata)
    kwargs = {"ZINBVAE": {}, "CGMDVAE": {"n_clusters": 6}, "Archetypes": {"n_archetypes": 4}}
    return cls(adata, **kwargs[name])
def state(name):
    scvi.settings.seed = 0
    model = build(name)
    extra = {"mixture_init_epoch": 1} if name == "CGMDVAE" else {}
    model.train(max_epochs=3, accelerator=accelerator, enable_progress_bar=False, **extra)
    return {k: v.detach().cpu() for k, v in model.module.state_dict().items()}
for name in names:
    first, again = state(name), state(name)
    differ = [k for k in first if not torch.equal(first[k], again[k])]
    print("twice", name, len(differ), len(first), ",".join(differ[:3]), flush=True)
"""

# The models _TRAIN_TWICE trains: the two VAEs and the two whose deterministic kernels differ
# (Archetypes' stick-breaking without a float cumsum, the imputer's maximum by state).
DETERMINISTIC_MODELS = ("ZINBVAE", "CGMDVAE", "Archetypes", "SpatialImputer")


def phase_variants(ctx: Context, models: dict) -> None:
    import deltavae as dv

    epochs = ctx.cfg["variant_epochs"]
    run = ctx.report.run
    kang = run("variants", "prepare Kang", lambda: prepare_kang(ctx.cfg["kang_cells"], 0))
    if kang is not FAILED:
        _entry(
            ctx,
            models,
            "CGMDVAE/unlabelled",
            lambda: _setup(dv.model.CGMDVAE, kang.copy(), condition_key="condition"),
            epochs,
            soft=True,
        )
        _entry(
            ctx,
            models,
            "ZINBVAE/gene-batch",
            lambda: _setup(
                dv.model.ZINBVAE,
                kang.copy(),
                batch_key="condition",
                model_kwargs={"dispersion": "gene-batch", "use_observed_lib_size": False},
            ),
            epochs,
            early_stopping=True,
            restore_best=True,
        )
        # Mixed precision (bf16 tested on a CPU in tests/test_zinbvae.py; float16, with its
        # gradient scaler, exists on CUDA only).
        for precision in ("bf16-mixed", "16-mixed") if ctx.device == "cuda" else ("bf16-mixed",):
            _entry(
                ctx,
                models,
                f"ZINBVAE/{precision}",
                lambda: _setup(dv.model.ZINBVAE, kang.copy()),
                epochs,
                precision=precision,
            )
    cells = run("variants", "prepare PBMC (log-normalized)", _logged_pbmc)
    if cells is not FAILED:
        _entry(
            ctx,
            models,
            "CGMDVAE/normal",
            lambda: _setup(
                dv.model.CGMDVAE,
                cells,
                model_kwargs={"n_clusters": 8, "likelihood": "normal"},
            ),
            epochs,
            soft=True,
            # Its cells' noise is drawn on the CPU apart from the count draws (CellDraws).
            seeded={"sample(seed=0)": lambda m: m.sample(50, seed=0)},
        )
    pretrained_entry(ctx, models)  # CGMDVAE.from_zinbvae of phase 1's ZINBVAE
    cli_entry(ctx, models)  # deltavae fit on the device, of phase 1's cells
    _spot_variants(ctx, models, epochs)
    _training_guard(ctx)
    if "ZINBVAE/pbmc" in models:
        _cpu_only(ctx, models["ZINBVAE/pbmc"], models)


def _setup(cls, adata, model_kwargs=None, **setup):
    cls.setup_anndata(adata, **setup)
    return cls(adata, **(model_kwargs or {}))


def _logged_pbmc():
    import scanpy as sc

    adata = prepare_pbmc(1000, 0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def _entry(
    ctx: Context, models: dict, name: str, build, epochs: int, soft=False, seeded=None, **train
):
    model = ctx.build_and_train(
        name, "build", build, epochs, detail=lambda m: type(m).__name__, on_device=True, **train
    )
    if model is FAILED:
        return
    kind = {"NMFDeconv": "proportions", "SpatialImputer": "imputed", "Archetypes": "weights"}
    kind = kind.get(type(model).__name__, "latent")
    read = {
        "proportions": model.get_proportions if kind == "proportions" else None,
        "imputed": getattr(model, "impute", None),
        "weights": getattr(model, "get_archetype_weights", None),
        "latent": getattr(model, "get_latent_representation", None),
    }[kind]
    result = ctx.report.run(name, f"{kind} on {ctx.device}", read)
    probs = None
    if soft:
        probs = ctx.report.run(
            name, "predict_clusters(soft=True)", lambda: model.predict_clusters(soft=True)
        )
    drawn = {  # seeded read-outs, drawn again on the CPU copy in phase 5
        label: (ctx.report.run(name, f"{label} on {ctx.device}", lambda f=f: f(model)), f)
        for label, f in (seeded or {}).items()
    }
    models[name] = {
        "model": model,
        "adata": model.adata,
        "latent": result,
        "soft": probs,
        "kind": kind,
        "seeded": drawn,
    }


def _spot_variants(ctx: Context, models: dict, epochs: int) -> None:
    import numpy as np

    import deltavae as dv

    made = ctx.report.run(
        "variants",
        "pseudo_spots (variants)",
        lambda: dv.datasets.pseudo_spots(
            prepare_pbmc(None, 0),  # all cells: a few hundred leave a type of one cell
            "cell_type",
            n_spots=ctx.cfg["n_spots"],
            seed=ctx.seed + 1,
        ),
        finite=False,
    )
    if made is FAILED:
        return
    spots, reference = made
    _entry(
        ctx,
        models,
        "NMFDeconv/per_spot",
        lambda: dv.model.NMFDeconv.from_reference(
            spots.copy(), reference, labels_key="cell_type", inference="per_spot"
        ),
        epochs * 5,
    )
    hidden = set(reference.var_names[-100:])
    measured = spots[:, [g for g in spots.var_names if g not in hidden]].copy()
    _entry(
        ctx,
        models,
        "SpatialImputer/latent",
        lambda: dv.model.SpatialImputer.from_reference(
            measured, reference, labels_key="cell_type", design="latent"
        ),
        epochs * 5,
    )
    slides = spots.copy()
    slides.obs["slide"] = np.where(np.arange(slides.n_obs) % 2 == 0, "a", "b")
    _entry(
        ctx,
        models,
        "Archetypes/samples",
        lambda: _setup(
            dv.model.Archetypes, slides, sample_key="slide", model_kwargs={"n_archetypes": 5}
        ),
        epochs,
    )


def _cpu_only(ctx: Context, entry: dict, models: dict) -> None:
    """The device's model saved and pickled, read back in a process without a GPU; the query
    model and the latent imputer pickled and read back likewise."""
    run, name = ctx.report.run, "ZINBVAE/pbmc"
    model, adata, on_device = entry["model"], entry["adata"], entry["latent"]
    folder = ctx.tmp / "cpu_only"
    folder.mkdir(exist_ok=True)
    data = folder / "adata.h5ad"
    wrote = run(name, "save + pickle for a CPU-only process", lambda: _write(model, adata, folder))
    for how, path in (("load", folder / "model"), ("pickle", folder / "model.pkl")):
        out = folder / f"latent_{how}.npy"
        run(
            name,
            f"{how} in a process without a GPU == on {ctx.device}",
            lambda h=how, p=path, o=out: _read_on_cpu(h, p, data, o, on_device),
            needs=[wrote, on_device],
            detail=str,
            finite=False,
        )
    for other in [n for n in ("ZINBVAE/query", "SpatialImputer/latent") if n in models]:
        path = folder / f"{other.replace('/', '_')}.pkl"
        pickled = run(
            other,
            "pickle for a CPU-only process",
            lambda m=models[other], p=path: _pickle(m["model"], p),
        )
        run(
            other,
            f"unpickle in a process without a GPU == on {ctx.device}",
            lambda p=path, e=models[other]: _read_on_cpu(
                "pickle", p, data, p.with_suffix(".npy"), e["latent"]
            ),
            needs=[pickled, models[other]["latent"]],
            detail=str,
            finite=False,
        )


def _pickle(model, path) -> str:
    with open(path, "wb") as f:
        pickle.dump(model, f)
    return f"module on {_module_device(model)}"


def _write(model, adata, folder) -> str:
    adata.write_h5ad(folder / "adata.h5ad")
    model.save(str(folder / "model"), overwrite=True)
    with open(folder / "model.pkl", "wb") as f:
        pickle.dump(model, f)
    return f"module on {_module_device(model)}"


def _read_on_cpu(how, path, data, out, on_device) -> str:
    import numpy as np

    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, "-c", _READ_ON_CPU, how, str(path), str(data), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise CheckFailed(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    device = done.stdout.strip().splitlines()[-1]
    if device != "cpu":
        raise CheckFailed(f"module on {device} in a process without a GPU")
    return _same(on_device, np.load(out), CPU_ONLY_TOLERANCE, f"result ({how}, on {device})")


def _training_guard(ctx: Context) -> None:
    """Divergence stopped on the device, and the host's waits per training step (CUDA)."""
    pbmc = ctx.report.run("guard", "prepare PBMC (600 cells)", lambda: prepare_pbmc(600, 0))
    if pbmc is FAILED:
        return
    for name in ("ZINBVAE", "CGMDVAE"):
        ctx.report.run(
            name, "host waits per training step", lambda n=name: _waits(ctx, pbmc, n), finite=False
        )
    ctx.report.run(
        "deterministic",
        "trained twice under deterministic algorithms: same bits",
        lambda: _trained_twice(ctx, pbmc),
        detail=str,
        finite=False,
    )
    ctx.report.run("ZINBVAE", "lr=1e6 stops, parameters finite", lambda: _huge_lr(ctx, pbmc))
    ctx.report.run(
        "ZINBVAE", "NaN after epoch 1, step 5: stops at step 6", lambda: _poisoned(ctx, pbmc)
    )


def _small_zinbvae(adata):
    import deltavae as dv

    return _setup(dv.model.ZINBVAE, adata.copy(), model_kwargs={"n_hidden": 32})


def _waits(ctx: Context, adata, name: str) -> str:
    """Host waits for the device inside training steps (forward, backward, optimiser step),
    counted with CUDA's sync debug mode; an epoch's end and validation are left out."""
    import warnings

    import torch
    from lightning.pytorch.callbacks import Callback

    import deltavae as dv

    class StepWaits(Callback):
        def __init__(self, caught):
            self.caught, self.in_steps, self.steps = caught, [], 0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = len(self.caught)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.in_steps += [w for w in self.caught[self.before :] if _is_wait(w)]
            self.steps += 1

    if name == "ZINBVAE":
        model, extra = _small_zinbvae(adata), {}
    else:
        model = _setup(dv.model.CGMDVAE, adata.copy(), model_kwargs={"n_clusters": 6})
        extra = {"mixture_init_epoch": None}
    cuda = ctx.device.startswith("cuda")  # elsewhere the steps run, and nothing is counted
    if cuda:
        torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            counter = StepWaits(caught)
            model.train(**ctx.fit(3, batch_size=32, callbacks=[counter], **extra))
    finally:
        if cuda:
            torch.cuda.set_sync_debug_mode("default")
    if not cuda:
        return f"{counter.steps} training steps; waits are counted on CUDA only"
    waits = [w for w in caught if _is_wait(w)]
    # Where the waits inside steps happened, most frequent first.
    where = Counter(f"{w.filename.rsplit('/', 1)[-1]}:{w.lineno}" for w in counter.in_steps)
    places = ", ".join(f"{n}x {at}" for at, n in where.most_common(6))
    detail = (
        f"{len(counter.in_steps)} waits in {counter.steps} training steps, {len(waits)} in all"
        + (f" (in steps: {places})" if places else "")
    )
    if len(counter.in_steps) > MAX_WAITS_PER_STEP * counter.steps:
        raise CheckFailed(detail)
    return detail


def _is_wait(caught) -> bool:
    """Whether a recorded warning is CUDA's sync debug mode reporting a wait."""
    return "synchroniz" in str(caught.message)


def _huge_lr(ctx: Context, adata) -> str:
    import torch

    from deltavae.train import TrainingDivergedError

    model = _small_zinbvae(adata)
    try:
        model.train(**ctx.fit(3, lr=1e6))
    except TrainingDivergedError as err:
        params = torch.cat([p.detach().flatten() for p in model.module.parameters()])
        if not bool(torch.isfinite(params).all()):
            raise CheckFailed("parameters kept are not finite") from err
        return str(err).split(". The model")[0]
    raise CheckFailed("lr=1e6 trained to the end without TrainingDivergedError")


def _poisoned(ctx: Context, adata) -> str:
    import torch
    from lightning.pytorch.callbacks import Callback

    from deltavae.train import TrainingDivergedError

    class Poison(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if (trainer.current_epoch, batch_idx) == (1, 5):
                with torch.no_grad():
                    next(pl_module.module.parameters()).fill_(float("nan"))

    model = _small_zinbvae(adata)
    try:
        model.train(**ctx.fit(4, batch_size=32, callbacks=[Poison()]))
    except TrainingDivergedError as err:
        params = torch.cat([p.detach().flatten() for p in model.module.parameters()])
        if "epoch 1, step 6 " not in str(err) or not bool(torch.isfinite(params).all()):
            raise CheckFailed(str(err)[:160]) from err
        return f"restored_at {err.restored_at}"
    raise CheckFailed("a NaN parameter trained to the end without TrainingDivergedError")


def _trained_twice(ctx: Context, adata) -> str:
    """README: training on a GPU repeats bit for bit under ``torch.use_deterministic_algorithms(
    True)`` with ``CUBLAS_WORKSPACE_CONFIG=:4096:8``. Each model of ``DETERMINISTIC_MODELS``
    trained twice from one seed in a process that sets both; CUDA also refuses there the
    kernels it has no deterministic version of."""
    path = ctx.tmp / "deterministic.h5ad"
    adata.write_h5ad(path)
    env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    args = [str(path), ctx.accelerator, *DETERMINISTIC_MODELS]
    done = subprocess.run(
        [sys.executable, "-c", _TRAIN_TWICE, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=max(30, int(min(300, ctx.remaining()))),
    )
    if done.returncode != 0:
        raise CheckFailed(f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1:]}")
    lines = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("twice ")]
    if len(lines) != len(DETERMINISTIC_MODELS):
        raise CheckFailed(f"{len(lines)} of {len(DETERMINISTIC_MODELS)} models reported")
    differ = [
        f"{name}: {n} of {total} tensors differ ({' '.join(rest)})"
        for name, n, total, *rest in lines
        if n != "0"
    ]
    if differ:
        raise CheckFailed("; ".join(differ))
    return ", ".join(f"{name} {total} tensors equal" for name, _, total, *_ in lines)
