"""An encoder from a spot's counts to per-spot quantities (amortised inference for spot models).

Per-spot parameters (one proportion vector per spot) grow with the number of spots and
cannot map a spot that was not in training. An encoder replaces them by one function of the
spot's counts: memory is the network's, whatever the number of spots, and a new spot maps by
a forward pass.
"""

from __future__ import annotations

import torch
from scvi.nn import FCLayers
from torch import nn

_CP10K = 1e4


def log_cp10k(x: torch.Tensor) -> torch.Tensor:
    """``log1p`` of counts per 10,000 of each row (a row without counts stays at 0).

    Examples
    --------
    >>> log_cp10k(torch.tensor([[1.0, 3.0], [0.0, 0.0]])).expm1().round()
    tensor([[2500., 7500.],
            [   0.,    0.]])
    """
    return torch.log1p(x * (_CP10K / x.sum(dim=-1, keepdim=True).clamp_min(1.0)))


class SpotEncoder(nn.Module):
    """log1p of counts per 10,000 -> fully connected layers -> ``n_output`` unconstrained values.

    Layer norm, not batch norm: a spot's output then depends on that spot alone, the same in
    any minibatch (backed or in memory, training or inference).

    Parameters
    ----------
    n_input
        Genes the encoder reads.
    n_output
        Values per spot (e.g. the logits of cell-type proportions).
    n_hidden, n_layers
        Units per hidden layer and hidden layers.
    dropout_rate
        Dropout of the hidden layers while training.

    Examples
    --------
    >>> enc = SpotEncoder(30, 4, n_hidden=16)
    >>> enc(torch.poisson(torch.full((5, 30), 3.0))).shape
    torch.Size([5, 4])
    """

    def __init__(
        self,
        n_input: int,
        n_output: int,
        n_hidden: int = 128,
        n_layers: int = 1,
        dropout_rate: float = 0.0,
    ):
        super().__init__()
        self.trunk = FCLayers(
            n_in=n_input,
            n_out=n_hidden,
            n_layers=n_layers,
            n_hidden=n_hidden,
            dropout_rate=dropout_rate,
            use_batch_norm=False,
            use_layer_norm=True,
        )
        self.head = nn.Linear(n_hidden, n_output)
        # A zero head starts every spot at the same output (uniform proportions).
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Spots x ``n_output`` from spots x genes counts."""
        return self.head(self.trunk(log_cp10k(x)))
