"""The tables of benchmarks/zinbvae_vs_scvi.py: PBMC (time, memory, held-out NLL, leiden scores
against SCVI, with the targets) and scaling with the number of cells."""

from __future__ import annotations

from _common import fmt_mean_sd, markdown_table, mean_sd, mib

LABELS = {"ours": "deltavae ZINBVAE", "scvi": "scvi-tools SCVI"}

# Targets for ours relative to SCVI.
TARGET_TIME_RATIO = 1.0

TARGET_NLL_REL = 0.01

TARGET_ARI_DIFF = 0.02


def _values(runs, kind, key):
    return [r[key] for r in runs if r["model"] == kind]


def pbmc_table(result: dict) -> str:
    runs = result["runs"]
    rows = []

    def verdict(ok: bool) -> str:
        return "yes" if ok else "**no**"

    t_ours, t_scvi = (
        mean_sd(_values(runs, "ours", "sec_per_epoch"))[0],
        mean_sd(_values(runs, "scvi", "sec_per_epoch"))[0],
    )
    ratio = t_ours / t_scvi
    rows.append(
        [
            "seconds / epoch",
            fmt_mean_sd(_values(runs, "ours", "sec_per_epoch"), 3),
            fmt_mean_sd(_values(runs, "scvi", "sec_per_epoch"), 3),
            f"{ratio:.2f}x",
            f"<= {TARGET_TIME_RATIO:.1f}x SCVI",
            verdict(ratio <= TARGET_TIME_RATIO),
        ]
    )
    c_ours = mean_sd(_values(runs, "ours", "cpu_sec_per_epoch"))[0]
    c_scvi = mean_sd(_values(runs, "scvi", "cpu_sec_per_epoch"))[0]
    rows.append(
        [
            "CPU seconds / epoch (all threads)",
            fmt_mean_sd(_values(runs, "ours", "cpu_sec_per_epoch"), 3),
            fmt_mean_sd(_values(runs, "scvi", "cpu_sec_per_epoch"), 3),
            f"{c_ours / c_scvi:.2f}x",
            "(reported)",
            "",
        ]
    )
    mem = result["memory_fresh_process"]
    m_ours, m_scvi = mem["ours"]["rss_delta_mib"], mem["scvi"]["rss_delta_mib"]
    rows.append(
        [
            f"peak RSS growth in train, fresh process, {result['memory_epochs']} epochs (MiB)",
            f"{m_ours:.0f} (peak {mem['ours']['rss_peak_mib']:.0f})",
            f"{m_scvi:.0f} (peak {mem['scvi']['rss_peak_mib']:.0f})",
            f"{m_ours - m_scvi:+.0f} MiB",
            "(reported)",
            "",
        ]
    )
    n_ours = mean_sd(_values(runs, "ours", "test_nll"))[0]
    n_scvi = mean_sd(_values(runs, "scvi", "test_nll"))[0]
    rel = (n_ours - n_scvi) / abs(n_scvi)
    rows.append(
        [
            "held-out NLL / cell (lower better)",
            fmt_mean_sd(_values(runs, "ours", "test_nll"), 2),
            fmt_mean_sd(_values(runs, "scvi", "test_nll"), 2),
            f"{rel:+.2%}",
            f"<= +{TARGET_NLL_REL:.0%} vs SCVI",
            verdict(rel <= TARGET_NLL_REL),
        ]
    )
    for key, name in (("ari", "ARI (leiden vs cell_type)"), ("nmi", "NMI (leiden vs cell_type)")):
        a_ours = mean_sd(_values(runs, "ours", key))[0]
        a_scvi = mean_sd(_values(runs, "scvi", key))[0]
        target = f">= SCVI - {TARGET_ARI_DIFF}" if key == "ari" else "(reported)"
        ok = verdict(a_ours >= a_scvi - TARGET_ARI_DIFF) if key == "ari" else ""
        rows.append(
            [
                name,
                fmt_mean_sd(_values(runs, "ours", key), 3),
                fmt_mean_sd(_values(runs, "scvi", key), 3),
                f"{a_ours - a_scvi:+.3f}",
                target,
                ok,
            ]
        )
    rows.append(
        [
            "leiden clusters",
            fmt_mean_sd(_values(runs, "ours", "n_leiden_clusters"), 1),
            fmt_mean_sd(_values(runs, "scvi", "n_leiden_clusters"), 1),
            "",
            "",
            "",
        ]
    )
    headers = ["metric", LABELS["ours"], LABELS["scvi"], "ours vs SCVI", "target", "met"]
    return markdown_table(headers, rows)


def scaling_table(result: dict, sizes) -> str:
    runs = {(r["model"], r["n_cells"]): r for r in result["runs"]}
    data = {int(k): v for k, v in result["datasets"].items()}
    rows = []
    for n in sizes:
        o, s = runs[("ours", n)], runs[("scvi", n)]
        rows.append(
            [
                f"{n:,}",
                f"{mib(data[n]['x_bytes']):.1f}",
                f"{o['rss_peak_mib']:.0f}",
                f"+{o['rss_delta_mib']:.0f}",
                f"{s['rss_peak_mib']:.0f}",
                f"+{s['rss_delta_mib']:.0f}",
                f"{o['train_seconds']:.1f}",
                f"{s['train_seconds']:.1f}",
            ]
        )
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]

        def growth(a: float, b: float) -> str:
            return f"{b / a:.2f}x" if a > 0 else "n/a"

        rows.append(
            [
                f"growth {lo:,} -> {hi:,}",
                growth(data[lo]["x_bytes"], data[hi]["x_bytes"]),
                growth(runs[("ours", lo)]["rss_peak_mib"], runs[("ours", hi)]["rss_peak_mib"]),
                growth(runs[("ours", lo)]["rss_delta_mib"], runs[("ours", hi)]["rss_delta_mib"]),
                growth(runs[("scvi", lo)]["rss_peak_mib"], runs[("scvi", hi)]["rss_peak_mib"]),
                growth(runs[("scvi", lo)]["rss_delta_mib"], runs[("scvi", hi)]["rss_delta_mib"]),
                growth(runs[("ours", lo)]["train_seconds"], runs[("ours", hi)]["train_seconds"]),
                growth(runs[("scvi", lo)]["train_seconds"], runs[("scvi", hi)]["train_seconds"]),
            ]
        )
    headers = [
        "cells",
        "AnnData X (MiB)",
        "ours peak RSS (MiB)",
        "ours train ΔRSS",
        "SCVI peak RSS (MiB)",
        "SCVI train ΔRSS",
        "ours 1 epoch (s)",
        "SCVI 1 epoch (s)",
    ]
    return markdown_table(headers, rows)
