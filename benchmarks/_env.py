"""The versions a benchmark's numbers came from: Python, the packages the models, metrics and
clustering run on, deltavae and the git commit of this checkout.

Runs of one commit drifted (the semi-supervised table of benchmarks/README.md moved between two
runs of the same code) because packages had changed underneath; every script prints
:func:`versions_line` in its header and puts :func:`versions` in the JSON it writes
(:func:`with_versions`), so that two runs that differ can be told apart.

Imports nothing heavy (no torch: ``_common`` sets the OpenMP wait policy before torch loads).
"""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

#: The distributions whose versions are recorded (names as pip knows them), after Python.
PACKAGES = (
    "deltavae",
    "torch",
    "pyro-ppl",
    "scvi-tools",
    "lightning",
    "scanpy",
    "anndata",
    "numpy",
    "scipy",
    "scikit-learn",
    "igraph",
    "leidenalg",
    "umap-learn",
    "pynndescent",
    "numba",
)


def git_commit(folder) -> str | None:
    """The commit checked out where ``folder`` lies, with ``+dirty`` when tracked files have
    uncommitted changes (None outside a git checkout or without git)."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(folder), *args]
        run = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
        return run.stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def versions() -> dict:
    """``{"python": ..., <each of PACKAGES>: its version or None where not installed,
    "commit": the commit of the checkout these benchmarks lie in}``."""
    env: dict = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            env[package] = version(package)
        except PackageNotFoundError:
            env[package] = None
    env["commit"] = git_commit(Path(__file__).resolve().parent)
    return env


def versions_line(env: dict | None = None) -> str:
    """:func:`versions` (``env``, default read now) on one line, for a report's header."""
    env = versions() if env is None else env
    named = [f"python {env['python']}"]
    named += [f"{package} {env.get(package) or '-'}" for package in PACKAGES]
    return "versions: " + ", ".join(named) + f"; commit {env.get('commit') or '-'}"


def announce(script: str, json_lines: bool = False) -> dict:
    """Print the header line of ``script`` (its name and :func:`versions_line`) and return
    the versions, for the JSON the script writes. ``json_lines``: a script whose stdout is
    one JSON object per line prints the header as one too (``{"script": ..., "versions":
    ...}``), so that every line of it still parses."""
    env = versions()
    if json_lines:
        import json

        print(json.dumps({"script": script, "versions": env}), flush=True)
    else:
        print(f"# {script}; {versions_line(env)}", flush=True)
    return env


def with_versions(result, env: dict | None = None):
    """``result`` as written to JSON with the versions: a dict gets a ``"versions"`` key (kept
    as it is where it has one, or an ``"environment"``, ``_common.environment``, which holds
    them), anything else (a list of rows) becomes ``{"versions": ..., "results": result}``."""
    if isinstance(result, dict) and ("versions" in result or "environment" in result):
        return result
    env = versions() if env is None else env
    if isinstance(result, dict):
        return {**result, "versions": env}
    return {"versions": env, "results": result}
