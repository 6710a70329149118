"""Every model's write_to_adata writes into a backed file (model/_backed.py, writes_backed).

The writing itself is tested on a backed .h5ad in tests/test_scale.py; here, that no model
class misses the decorator.
"""

import pytest

import deltavae as dv


@pytest.mark.parametrize("name", dv.model.__all__)
def test_every_model_decorates_its_write_to_adata(name):
    cls = getattr(dv.model, name)
    assert "write_to_adata" in vars(cls), f"{name} has no write_to_adata of its own"
    assert hasattr(cls.write_to_adata, "__wrapped__"), f"{name}.write_to_adata lacks @writes_backed"
