"""What CGMDVAE's epochs after the KL warm-up buy: the epoch ``restore_best`` keeps against
later ones, on the default settings.

One default run per set and seed (``max_epochs`` from the heuristic unless ``--epochs``; the
mixture start at a quarter, the KL warm-up over half, ``restore_best="auto"``, the refit):
its result as ``train`` returns it, then the parameters of chosen epochs of the same run
(copied at their validation), each with the refit ``train`` runs after training. Per epoch:
the training and validation ELBO (``history``; of every epoch: ``early_stopping=False``
unless ``--early-stopping auto``), and per copied epoch ARI / NMI of ``predict_clusters``
against the labels, the validation cells' ELBO after the refit
(``get_elbo``) and, on Kang, condition mixing (iLISI, batch ASW; cgmdvae_quality.py's). Sets
as cgmdvae_clusters.py loads them. Run from the repository root::

    python benchmarks/cgmdvae_epochs.py --sets pbmc --seeds 0 1 2 --out epochs.json
    python benchmarks/cgmdvae_epochs.py --sets kang --seeds 0 --epochs 200
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, quiet, save_json  # noqa: E402
from _env import announce  # noqa: E402
from cgmdvae_clusters import TRAIN, load_set  # noqa: E402


def _snapshots(epochs: list[int]):
    from lightning.pytorch.callbacks import Callback

    class Snapshots(Callback):
        """Copies of the module's parameters at the validation of ``epochs``."""

        def __init__(self):
            self.states: dict[int, dict] = {}

        def on_validation_epoch_end(self, trainer, pl_module):
            if trainer.sanity_checking or trainer.current_epoch not in epochs:
                return
            state = pl_module.module.state_dict()
            self.states[trainer.current_epoch] = {k: v.detach().clone() for k, v in state.items()}

    return Snapshots()


def _measure(model, truth, condition) -> dict:
    import deltavae as dv

    labels = model.predict_clusters()
    out = {"ari": dv.metrics.ari(truth, labels), "nmi": dv.metrics.nmi(truth, labels)}
    out["elbo_heldout"] = -float(model.get_elbo(indices=model.validation_indices))
    if condition is not None:
        from cgmdvae_quality import _mixing

        mixing = _mixing(model.get_latent_representation(), condition, truth)
        out.update(ilisi=mixing["ilisi"], batch_asw=mixing["batch_asw"])
    return out


def run(name: str, seed: int, epochs: int | None, data_dir, stop: bool | str = False) -> dict:
    import scvi
    from scvi.model._utils import get_max_epochs_heuristic

    import deltavae as dv

    adata, label, covariate = load_set(name, data_dir)
    truth = adata.obs[label].to_numpy()
    condition = adata.obs[covariate].to_numpy() if name.startswith("kang") else None
    n = epochs or get_max_epochs_heuristic(adata.n_obs, epochs_cap=400)
    copied = sorted({n // 2, n // 2 + n // 8, 3 * n // 4, n - n // 8, n - 1})
    snaps = _snapshots(copied)
    scvi.settings.seed = seed
    dv.model.CGMDVAE.setup_anndata(adata, condition_key=covariate)
    model = dv.model.CGMDVAE(adata, n_clusters=adata.obs[label].nunique())
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.train(max_epochs=epochs, callbacks=[snaps], early_stopping=stop, **TRAIN)
    seconds = time.perf_counter() - start
    history = {
        key: model.history[key][key].astype(float).round(3).tolist()
        for key in ("elbo_train", "elbo_validation", "validation_loss", "kl_weight")
    }
    out = {
        "set": name,
        "seed": seed,
        "max_epochs": n,
        "seconds": seconds,
        "early_stopping": stop,
        "kept": model.best_epoch_,
        "warnings": sorted({f"{w.category.__name__}: {str(w.message)[:160]}" for w in caught}),
        "history": history,
        "default": _measure(model, truth, condition),
        "epochs": {},
    }
    for epoch, state in snaps.states.items():
        model.module.load_state_dict(state)
        scvi.settings.seed = seed  # the refit's clustering seed, as after train
        model._refit_mixture("leiden")
        out["epochs"][epoch] = _measure(model, truth, condition)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", nargs="+", default=["pbmc"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--early-stopping",
        default="false",
        choices=["false", "auto"],
        help="false (default here): every epoch, to see the ones after the best; auto: the model's",
    )
    args = parser.parse_args(argv)
    announce("cgmdvae_epochs.py")  # its header: the versions it ran on
    import torch

    torch.set_num_threads(1)
    quiet()
    results = {"runs": [], "load": [load_average()]}
    for seed in args.seeds:
        for name in args.sets:
            stop = False if args.early_stopping == "false" else "auto"
            r = run(name, seed, args.epochs, args.data_dir, stop)
            results["runs"].append(r)
            results["load"].append(load_average())
            elbo_v = r["history"]["elbo_validation"]
            elbo_t = r["history"]["elbo_train"]
            print(
                f"{name} seed {seed} ({r['max_epochs']} epochs, {r['seconds']:.0f} s): kept "
                f"{r['kept']}; default {r['default']}",
                flush=True,
            )
            for epoch, m in sorted(r["epochs"].items()):
                print(
                    f"  epoch {epoch}: train {elbo_t[epoch]:.2f} val {elbo_v[epoch]:.2f} {m}",
                    flush=True,
                )
            for w in r["warnings"]:
                print("  warning:", w, flush=True)
            save_json(results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
