"""scvi-tools' ``freeze_batchnorm_decoder`` of ``load_query_data``, read against the
reference's networks.

Its default, False, lets the decoder's BatchNorm weights learn in scvi-tools' query training.
A count model's decoder here (scvi-tools' ``DecoderSCVI`` with its defaults) has no
BatchNorm layer, so False changes nothing there and a
ported call runs; a CGMDVAE of a normal or Bernoulli likelihood decodes through layers with
BatchNorm, which a query model keeps frozen with every other reference weight: False is
refused for it. True (frozen) is what a query model does anyway.
"""

from __future__ import annotations

import torch

#: The module whose BatchNorm layers ``freeze_batchnorm_decoder`` is about.
_DECODER = "decoder."


def _decoder_has_batch_norm(cls, reference) -> bool | None:
    """Whether ``reference`` (a model of ``cls`` or the folder it was saved to) decodes
    through BatchNorm layers; None where it cannot be read (``load_query_data`` names why)."""
    module = getattr(reference, "module", None)
    if isinstance(reference, cls) and module is not None:
        return any(
            name.startswith(_DECODER) and isinstance(part, torch.nn.BatchNorm1d)
            for name, part in module.named_modules()
        )
    from ._query import _reference_state

    try:
        _, _, state = _reference_state(cls, reference)
    except Exception:  # a wrong reference: load_query_data refuses it with its own words
        return None
    return any(key.startswith(_DECODER) and key.endswith(".running_mean") for key in state)


def refuse_learning_decoder_norms(cls, args: tuple, kwargs: dict) -> None:
    """Refuse ``freeze_batchnorm_decoder=False`` in ``load_query_data``'s ``kwargs`` (``args``:
    its positional arguments after the class) where the reference's decoder has BatchNorm
    layers, whose weights it would let learn; elsewhere it is dropped as a no-op."""
    if kwargs.get("freeze_batchnorm_decoder") is not False:
        return
    reference = kwargs.get("reference_model", args[1] if len(args) > 1 else None)
    if _decoder_has_batch_norm(cls, reference):
        raise ValueError(
            f"{cls.__name__}.load_query_data(freeze_batchnorm_decoder=False) lets the decoder's "
            "BatchNorm weights learn (scvi-tools' default); this reference's decoder (a "
            "likelihood other than counts) has BatchNorm layers, which a query model here "
            "keeps frozen with every other reference weight: the new categories' columns "
            "learn. Pass freeze_batchnorm_decoder=True, or leave it out."
        )
