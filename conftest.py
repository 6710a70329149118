"""The whole run's settings, and what the docstring examples (``--doctest-modules`` over
src/deltavae) need to run.

Where pytest-xdist is installed (the ``test`` extra) and ``-n`` is not given, the run spreads
its tests over the machine's cores, a file's tests in one process (:func:`pytest_cmdline_main`);
without it, or with ``-n 0``, ``--pdb``, ``-p no:xdist`` or ``--collect-only``, it runs in this
process.

The examples of the real-data loaders read the shared data folder (see
:func:`deltavae.datasets.kang_ifnb_8donors`); where it is absent they are skipped, as
tests/test_datasets.py skips its own checks of those loaders.
"""

import matplotlib
import pytest
from _pytest.doctest import DoctestItem

# Examples that draw must not open windows.
matplotlib.use("Agg")

#: The most test processes: each trains with one thread; more than 4 gain little on tests of
#: about a second each and cost a torch import (and its memory) each.
MAX_PROCESSES = 4


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """``-n auto --maxprocesses 4 --dist loadfile`` where pytest-xdist is installed and none of
    ``-n``, ``--pdb`` (which xdist refuses) or ``--collect-only`` was given: 2 cores run the
    default tests in about half the time. Set here rather than in ``addopts``, where a run
    without pytest-xdist (a plain ``pip install pytest``, ``-p no:xdist``) stopped on
    "unrecognized arguments: -n"."""
    option = config.option
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    if option.numprocesses is not None or option.usepdb or option.collectonly:
        return
    option.numprocesses, option.dist = "auto", "loadfile"
    option.maxprocesses = option.maxprocesses or MAX_PROCESSES


_SHARED_DATA_LOADERS = {
    "kang_ifnb_8donors": "kang2018_ifnb_muscat",
    "kang_scgen": "kang2018_ifnb_scgen",
    "kang_harmony": "kang2018_ifnb_harmony",
    "mesc": "mesc_kolodziejczyk2015",
    "mob_spatial": "mob_stahl2016_spatial",
    "spatial_reference_pair": "rctd_spatial_reference_pairs",
    "mnist": "mnist_t10k",
}


def _has_shared_folder(folder: str) -> bool:
    from deltavae.datasets._data_files import _search_roots

    return any((root / folder).is_dir() for root in _search_roots())


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not isinstance(item, DoctestItem):
            continue
        module, _, name = item.name.rpartition(".")
        folder = _SHARED_DATA_LOADERS.get(name)
        if module == "deltavae.datasets._real" and folder and not _has_shared_folder(folder):
            item.add_marker(pytest.mark.skip(reason=f"shared data folder {folder!r} not found"))
