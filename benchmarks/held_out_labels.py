"""Labels of a cell type held out of one condition: readings of the cluster head compared.

Kang IFN-beta (muscat's example: 1,556 cells x 1,267 genes, five types, ctrl/stim). For a
held-out type T, one count CGMDVAE (``likelihood="nb"``, labels ``cell_type``, condition
``condition``) is trained on every cell but T's stimulated ones, which are then labelled.
``T="none"`` trains on every cell (supervised, or with ``--semi`` 80% of the labels hidden)
to show what the readings do where no label is missing. Readings, from the same model:

- ``own``: q(y | z, c) under the cell's own condition (``predict_labels`` before 2026-12-07);
- ``mean_all``: the mean of q(y | z, c') over every condition c';
- ``label_vote``: each label's mean of q(y | z, c') over the conditions its labelled training
  cells carried (``label_conditions_``), renormalised, for every cell;
- ``shipped``: ``predict_labels`` now: ``label_vote`` for the cells of a condition whose
  labelled training cells lacked a label, ``own`` elsewhere;
- ``complete``: for those cells, the mean of q(y | z, c') over the conditions where every
  label trained;
- ``knn15``: the majority of the 15 nearest labelled training cells in z.

Printed per reading: the held-out cells' accuracy, every training cell's (and the worst change
of a type x condition group against ``own``), and the macro F1 over all cells.

Run from the repository root::

    python benchmarks/held_out_labels.py --seeds 0 1 2 --held "CD4 T cells" none \
        --data-dir ../shared/data
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scvi  # noqa: E402
import torch  # noqa: E402
from _env import announce  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

import deltavae as dv  # noqa: E402

KANG = "kang2018_ifnb_muscat/kang_ctrl_stim_muscat_example.h5ad"
QUIET = {"enable_progress_bar": False, "enable_model_summary": False}


def readings(model, adata) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each reading's probabilities (cells x clusters) of ``adata``'s cells, and their z."""
    conds = [str(v) for v in model._cat_state().mappings["condition"]]
    trained: dict[str, set[int]] = {}
    for (label, cond), n in model.label_conditions_.items():
        if n > 0:
            trained.setdefault(label, set()).add(conds.index(cond))
    z = model.get_latent_representation(adata)
    own = np.array([conds.index(v) for v in adata.obs["condition"].astype(str)])
    with torch.inference_mode():
        zt = torch.as_tensor(z, dtype=torch.float32, device=model.device)
        per = []
        for c in range(len(conds)):
            codes = torch.full((len(z), 1), c, dtype=torch.long, device=model.device)
            per.append(torch.softmax(model.module.cluster_posterior(zt, codes)[0], -1))
        probs = torch.stack(per).cpu().numpy()  # conditions x cells x clusters
    every = set(range(len(conds)))
    sets = [sorted(trained.get(name, every)) for name in model.cluster_names]
    vote = np.stack([probs[s, :, k].mean(0) for k, s in enumerate(sets)], 1)
    vote /= vote.sum(1, keepdims=True)
    lacking = [c for c in every if any(c not in s for s in sets)]
    complete = [c for c in every if c not in lacking]
    hit = np.isin(own, lacking)[:, None]
    mine = probs[own, np.arange(len(z))]
    out = {
        "own": mine,
        "mean_all": probs.mean(0),
        "label_vote": vote,
        "shipped": model.predict_labels(adata, soft=True).to_numpy(),
        "complete": np.where(hit, probs[complete].mean(0), mine) if complete else mine,
    }
    return out, z


def run(data: ad.AnnData, held: str, seed: int, epochs: int, semi: bool) -> dict:
    scvi.settings.seed = seed
    out = (data.obs["cell_type"] == held).to_numpy() & (data.obs["condition"] == "stim").to_numpy()
    train, test = data[~out].copy(), data[out].copy()
    truth_train, truth_test = train.obs["cell_type"].to_numpy(), test.obs["cell_type"].to_numpy()
    given = truth_train.copy()
    if semi:
        given[np.random.default_rng(seed).random(len(given)) < 0.8] = "Unknown"
    train.obs["label"], test.obs["label"] = given, "Unknown"
    dv.model.CGMDVAE.setup_anndata(
        train, condition_key="condition", labels_key="label", unlabeled_category="Unknown"
    )
    model = dv.model.CGMDVAE(train, likelihood="nb")
    model.train(max_epochs=epochs, **QUIET)
    names = np.asarray(model.cluster_names, dtype=object)
    read_train, z_train = readings(model, train)
    read_test, z_test = readings(model, test) if test.n_obs else ({}, None)
    labelled = given != "Unknown"
    knn = KNeighborsClassifier(15).fit(z_train[labelled], given[labelled])
    stim = (train.obs["condition"] == "stim").to_numpy()
    result, own_groups = {"held": held, "seed": seed, "semi": semi}, None
    for name in ("own", "mean_all", "label_vote", "shipped", "complete", "knn15"):
        if name == "knn15":
            p_train = knn.predict(z_train)
            p_test = knn.predict(z_test) if test.n_obs else np.array([], dtype=object)
        else:
            p_train = names[read_train[name].argmax(1)]
            p_test = names[read_test[name].argmax(1)] if test.n_obs else p_train[:0]
        groups = {
            (t, c): float((p_train[sel] == t).mean())
            for t in sorted(set(truth_train))
            for c, mask in (("ctrl", ~stim), ("stim", stim))
            if (sel := (truth_train == t) & mask).any()
        }
        own_groups = groups if own_groups is None else own_groups
        result[name] = {
            "held": round(float((p_test == truth_test).mean()), 3) if test.n_obs else None,
            "train": round(float((p_train == truth_train).mean()), 3),
            "worst_group_change": round(min(groups[g] - own_groups[g] for g in groups), 3),
            "macro_f1": round(
                float(
                    f1_score(
                        np.r_[truth_train, truth_test],
                        np.r_[p_train, p_test].astype(str),
                        average="macro",
                    )
                ),
                3,
            ),
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--held", nargs="+", default=["CD4 T cells", "none"])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--semi", action="store_true", help="hide 80%% of the labels")
    parser.add_argument("--data-dir", default="../shared/data")
    args = parser.parse_args()
    announce("held_out_labels.py", json_lines=True)  # its header: the versions it ran on
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    data = ad.read_h5ad(Path(args.data_dir) / KANG)
    for column in ("cell_type", "condition"):
        data.obs[column] = data.obs[column].astype(str)
    for seed in args.seeds:
        for held in args.held:
            print(json.dumps(run(data, held, seed, args.epochs, args.semi)), flush=True)


if __name__ == "__main__":
    main()
