"""Wheels to run deltavae (and ``gpu_check.py``) on a GPU machine that cannot reach a package
index, as many cluster GPU nodes cannot: deltavae's dependencies at this environment's
versions, less those the target already has, for the target's Python.

    python benchmarks/gpu_wheels.py --have torch lightning numpy scipy pandas --out .whl
    # on the GPU machine, from the repository root:
    python3 -m pip install --no-index --no-deps --target /tmp/site .whl/*.whl
    PYTHONPATH=/tmp/site:$PWD/src python3 benchmarks/gpu_check.py --out gpu_check.json

``--have-file`` reads the names the target has from a file (comma- or line-separated; e.g.
``pip list --format=freeze`` run there). torch is never downloaded (the target's CUDA build
is the one to use). Packages published without a wheel are built here (pure Python).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

#: What gpu_check.py needs beyond deltavae's dependencies.
EXTRA = ("scikit-misc",)
NEVER = {"torch", "deltavae"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_closure(roots) -> dict[str, str]:
    """Every distribution ``roots`` need (extras left out), with its installed version."""
    found: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = normalise(todo.pop())
        if name in found:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--have", nargs="*", default=[], help="packages the target already has")
    p.add_argument("--have-file", type=Path, help="file listing the packages the target has")
    p.add_argument("--python", default="3.12", help="the target's Python version (default 3.12)")
    p.add_argument("--out", type=Path, default=Path(".whl"))
    args = p.parse_args(argv)
    have = {normalise(n) for n in args.have}
    if args.have_file:
        text = args.have_file.read_text()
        have |= {
            normalise(re.split(r"[=<>~ ]", n.strip())[0])
            for n in re.split(r"[,\n]", text)
            if n.strip()
        }
    need = {
        name: version
        for name, version in installed_closure(["deltavae", *EXTRA]).items()
        if name not in have and name not in NEVER
    }
    args.out.mkdir(parents=True, exist_ok=True)
    platforms = [a for plat in PLATFORMS for a in ("--platform", plat)]
    built = []
    for name, version in sorted(need.items()):
        spec = f"{name}=={version}"
        binary = [
            sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
            "--python-version", args.python, "--implementation", "cp", *platforms,
            "--platform", "any", "-d", str(args.out), spec,
        ]  # fmt: skip
        if subprocess.run(binary, capture_output=True).returncode != 0:
            wheel = [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--no-deps",
                "-w",
                str(args.out),
                spec,
            ]
            subprocess.run(wheel, check=True)
            built.append(spec)
    print(
        f"{len(need)} packages in {args.out}"
        + (f"; built here: {', '.join(built)}" if built else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
