"""Every tutorial notebook runs top to bottom (small setting) and is committed with outputs."""

import os
import re
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the tutorials test needs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the tutorials test needs nbclient")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
EXPECTED = {
    "01_quickstart_zinbvae.ipynb",
    "02_clustering_conditions_cgmdvae.ipynb",
    "03_deconvolution.ipynb",
    "04_transfer_perturbation.ipynb",
}


def test_all_tutorials_present():
    if not TUTORIALS.is_dir():
        pytest.skip("tutorials/ is not next to the tests (installed package)")
    assert {p.name for p in NOTEBOOKS} == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_with_outputs(path):
    """The committed notebook was executed in order, without errors, and shows its figures."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert None not in counts, "a code cell was never executed"
    assert counts == sorted(counts), "cells were executed out of order"
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
    # The real settings, not the small ones, produced the committed outputs.
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "DELTAVAE_TUTORIAL_SMALL" in nb.cells[0].source + code[0].source
    assert "small run: True" not in text


# About 100 s for the four: in the slow stage (python -m pytest -m slow), which CI also runs.
@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    """Run a copy with DELTAVAE_TUTORIAL_SMALL=1; any failing cell raises CellExecutionError."""
    if shutil.which("jupyter") is None:
        pytest.skip("no Jupyter installation to start a kernel")
    copy = tmp_path / path.name
    shutil.copy2(path, copy)
    nb = nbformat.read(copy, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    monkeypatch.setenv("DELTAVAE_TUTORIAL_SMALL", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # The kernel draws with the inline backend, so that figures become outputs.
    monkeypatch.delenv("MPLBACKEND", raising=False)
    # Keep the shared data folder reachable from the temporary working directory.
    data = Path(__file__).resolve().parents[2] / "shared" / "data"
    if "DELTAVAE_DATA" not in os.environ and data.is_dir():
        monkeypatch.setenv("DELTAVAE_DATA", str(data))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count is not None for c in code)
    outputs = [o for c in code for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)


def test_markdown_names_the_js_score_a_distance():
    """``dv.metrics.jsd`` and the ``jsd`` columns are the Jensen-Shannon distance (the square
    root of the divergence): the tutorials' text must not call them a divergence."""
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        text = " ".join(c.source for c in nb.cells if c.cell_type == "markdown")
        text = " ".join(text.split()).replace("–", "-")
        assert "Jensen-Shannon divergence" not in text, path.name


def _printed(nb) -> str:
    """The text a notebook's code cells printed or returned (not its figures)."""
    return "\n".join(
        o.get("text", "") if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    )


def _shown(number: str, printed: str) -> bool:
    """``number`` ("0.62", "0.34%") is in ``printed``, as written or rounded from a longer one
    (a percentage from a percentage)."""
    value, percent = number.removesuffix("%"), number.endswith("%")
    digits = len(value.partition(".")[2])
    return any(
        f"{float(m):.{digits}f}" == value
        for m in re.findall(r"(?<![\w.])\d+\.\d+" + ("(?=%)" if percent else ""), printed)
    )


def _sections(readme: str, source: str) -> str:
    """The parts of benchmarks/README.md a markdown cell names in quotes ("Rounded counts"):
    from the heading or bold title that starts with the name to the next ``##`` heading."""
    lines, parts = readme.splitlines(), []
    for name in re.findall(r'"([^"]+)"', source):
        for i, line in enumerate(lines):
            if line.startswith(("#", "**")) and line.lstrip("#* ").startswith(name):
                end = next(
                    (j for j in range(i + 1, len(lines)) if lines[j].startswith("## ")), None
                )
                parts.append("\n".join(lines[i:end]))
                break
    return "\n".join(parts)


def test_markdown_numbers_are_the_outputs():
    """A decimal the text quotes ("ARI 0.62", "0.34% per 10 epochs") is one its notebook
    prints, or, in a cell that cites another tutorial or the benchmarks, one that tutorial
    prints or benchmarks/README.md holds. Re-executed notebooks whose numbers moved leave the
    text behind: 03 said "0.14% per 10 epochs" beside a warning of 0.12%. Backticked values
    are settings, not results."""
    benchmarks = TUTORIALS.parent / "benchmarks" / "README.md"
    if not benchmarks.is_file():
        pytest.skip("benchmarks/ is not next to the tests (installed package)")
    notebooks = {p.name: nbformat.read(p, as_version=4) for p in NOTEBOOKS}
    cited = "\n".join(_printed(nb) for nb in notebooks.values()) + benchmarks.read_text()
    stale = []
    for name, nb in notebooks.items():
        own = _printed(nb)
        for cell in nb.cells:
            if cell.cell_type != "markdown":
                continue
            sources = cited if re.search(r"benchmark|\.ipynb", cell.source) else own
            # A cell naming its section of the benchmarks is read against that section (the
            # whole file's 2,000 lines hold nearly any decimal: 04's "0.511" of an older run
            # passed against an unrelated table).
            named = (
                _sections(benchmarks.read_text(), cell.source)
                if "benchmarks/" in cell.source
                else ""
            )
            if named and not re.search(r"\.ipynb", cell.source):
                sources = own + "\n" + named
            text = re.sub(r"`[^`]*`", "", cell.source)
            for number in re.findall(r"(?<![\w.])\d*\.\d+%?(?!\w|\.\d)", text):
                if not _shown(number, sources):
                    stale.append(f"{name}: {number}")
    assert not stale, f"numbers in the text that no output prints: {stale}"
