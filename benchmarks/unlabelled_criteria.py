"""The candidate checks for a type without labelled cells, offline, on the runs that
``unlabelled_types.py --save DIR`` recorded: per run, the groups each check names over Leiden
seeds 0-4 (the first attempt, z alone; the second, z with the data's sign; both
``deltavae.model._unlabelled_types.unlabelled_groups``), with the true types of their cells,
and the data's sign of every group z alone names. A run whose labelled cells cover every type
is a negative: any group named is a false alarm (``pairs_*``: its truth is the six natural
groups).

    python benchmarks/unlabelled_criteria.py /tmp/unlabelled_runs
"""

from __future__ import annotations

import argparse
import glob
import os

from _env import announce


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--leiden-seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    args = parser.parse_args()
    announce("unlabelled_criteria.py")  # its header: the versions it ran on

    import numpy as np
    import pandas as pd

    from deltavae.model._unlabelled_types import labelled_neighbours, unlabelled_groups

    totals = {}
    for path in sorted(glob.glob(os.path.join(args.folder, "*.npz"))):
        run = np.load(path)
        name = os.path.basename(path)[:-4]
        z, pcs, labelled, truth = run["z"], run["pcs"], run["labelled"], run["truth"]
        predicted, n_labels = run["probs"].argmax(1), int(run["n_labels"])
        conditions = run["conditions"] if "conditions" in run.files else None
        if name.startswith("pairs"):  # every natural group holds labelled cells
            missing = set()
        else:
            missing = set(truth) - set(truth[labelled])
        kind = "positive" if missing else "negative"
        line = []
        for check in ("z alone", "z + data"):
            named = []
            for seed in args.leiden_seeds:
                data = None if check == "z alone" else pcs
                groups = unlabelled_groups(z, data, predicted, labelled, n_labels, seed, conditions)
                # A positive is caught where a named group is mostly of the unlabelled types.
                caught = any(
                    np.isin(truth[cells], list(missing)).mean() >= 0.5 for _, cells in groups
                )
                named.append(caught if missing else bool(groups))
                if seed == args.leiden_seeds[0]:
                    first = groups
            totals.setdefault((check, kind), []).extend(named)
            described = "; ".join(
                f"{len(cells)} given {str(run['names'][label])!r} (sign "
                f"{labelled_neighbours(pcs, labelled, cells, conditions):.2f}: "
                + ", ".join(
                    f"{t} {n}" for t, n in pd.Series(truth[cells]).value_counts().head(3).items()
                )
                + ")"
                for label, cells in first
            )
            line.append(f"{check}: {sum(named)}/{len(named)} [{described or '-'}]")
        unlabelled = sorted(map(str, missing)) or "none"
        print(f"{name} ({kind}, no label: {unlabelled}): " + " | ".join(line))
    for (check, kind), named in sorted(totals.items()):
        what = "caught" if kind == "positive" else "false alarms"
        print(f"{check}, {kind} runs x Leiden seeds: {what} {sum(named)} of {len(named)}")


if __name__ == "__main__":
    main()
