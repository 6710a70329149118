"""Docstring examples (``--doctest-modules`` over src/deltavae): what they need to run.

The examples of the real-data loaders read the shared data folder (see
:func:`deltavae.datasets.kang_ifnb_8donors`); where it is absent they are skipped, as
tests/test_datasets.py skips its own checks of those loaders.
"""

import matplotlib
import pytest
from _pytest.doctest import DoctestItem

# Examples that draw must not open windows.
matplotlib.use("Agg")

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
