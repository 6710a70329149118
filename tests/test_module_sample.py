"""Every public Pyro module's ``sample``: posterior-predictive draws of the counts its
likelihood reads, as scvi-tools' modules give them."""

import pytest
import torch
from scvi import REGISTRY_KEYS

from deltavae import module as modules

X, IDX = REGISTRY_KEYS.X_KEY, REGISTRY_KEYS.INDICES_KEY
CELLS, GENES = 6, 5


def _built(name: str):
    """A small module of each public kind, and a minibatch of ``CELLS`` as its loader gives
    it (counts of ``GENES`` features and the rows' indices)."""
    visible = torch.tensor([0, 2, 3, 5, 7])
    signatures = torch.rand(3, GENES) + 0.1
    built = {
        "ZINBVAEModule": lambda: modules.ZINBVAEModule(GENES, n_hidden=8, n_latent=2),
        "CGMDVAEModule": lambda: modules.CGMDVAEModule(GENES, 2, n_hidden=8, n_latent=2),
        "ArchetypesModule": lambda: modules.ArchetypesModule(
            torch.rand(4, GENES) * 5 + 1, torch.full((2, 4), 0.25), n_hidden=8
        ),
        "NMFDeconvModule": lambda: modules.NMFDeconvModule(CELLS, GENES, signatures, None, None),
        "NMFDeconvModule/per_spot": lambda: modules.NMFDeconvModule(
            CELLS,
            GENES,
            signatures,
            torch.full((CELLS, 3), 1 / 3),
            torch.full((CELLS,), 20.0),
            inference="per_spot",
        ),
        "ImputerDeconvolutionModule": lambda: modules.ImputerDeconvolutionModule(
            CELLS, torch.rand(3, 8) * 5 + 1, visible
        ),
        "ImputerLatentModule": lambda: modules.ImputerLatentModule(
            CELLS, torch.poisson(torch.rand(30, 8) * 5), visible, n_hidden=8
        ),
    }[name]()
    tensors = {
        X: torch.poisson(torch.rand(CELLS, GENES) * 8) + 1,
        IDX: torch.arange(CELLS).view(-1, 1),
        REGISTRY_KEYS.BATCH_KEY: torch.zeros(CELLS, 1),
    }
    return built.eval(), tensors


KINDS = [
    "ZINBVAEModule",
    "CGMDVAEModule",
    "ArchetypesModule",
    "NMFDeconvModule",
    "NMFDeconvModule/per_spot",
    "ImputerDeconvolutionModule",
    "ImputerLatentModule",
]


def test_every_public_module_is_drawn_from():
    assert {kind.split("/")[0] for kind in KINDS} == set(modules.__all__)


@pytest.mark.parametrize("kind", KINDS)
def test_module_sample_draws_counts_of_its_features(kind):
    """The spot modules' ``sample`` raised TypeError: ``predictive_draws`` passed
    ``n_samples`` to an ``inference`` that did not take it (NMFDeconv and both imputer
    designs). Every module now draws ``(cells, features)`` counts, and a last axis of
    ``n_samples`` draws that differ."""
    torch.manual_seed(0)
    module, tensors = _built(kind)
    one = module.sample(tensors)
    assert one.shape == (CELLS, GENES)
    many = module.sample(tensors, n_samples=300)
    assert many.shape == (CELLS, GENES, 300)
    assert torch.isfinite(many).all() and (many >= 0).all()
    assert torch.equal(many, many.round())  # counts
    assert (many.std(-1) > 0).any()
    torch.manual_seed(3)
    first = module.sample(tensors, n_samples=2)
    torch.manual_seed(3)
    torch.testing.assert_close(module.sample(tensors, n_samples=2), first)


@pytest.mark.parametrize("kind", ["NMFDeconvModule", "ImputerDeconvolutionModule"])
def test_spot_module_draws_centre_on_the_fitted_mean(kind):
    """A spot's expected counts are linear in its proportions: the mean of many
    posterior-predictive draws is the likelihood's mean at the posterior mean (NMFDeconv's
    point estimates; the imputer's q(p_s) drawn from, whose mean it is)."""
    torch.manual_seed(1)
    module, tensors = _built(kind)
    with torch.no_grad():
        inferred = module.inference(**module._get_inference_input(tensors))
        gen = module.generative(**module._get_generative_input(tensors, inferred))
    drawn = module.sample(tensors, n_samples=4000).mean(-1)
    torch.testing.assert_close(drawn.sum(0), gen["px"].mu.sum(0), rtol=0.1, atol=0.5)


def test_imputer_draws_its_spots_proportions():
    """The imputer's q(p_s) is a Dirichlet: its draws spread wider than the counts' noise
    around the posterior mean alone would."""
    torch.manual_seed(2)
    module, tensors = _built("ImputerDeconvolutionModule")
    profiles = torch.full((3, 8), 0.1)
    profiles[[0, 1, 2], module.visible[:3]] = 10.0  # each state its own visible gene
    with torch.no_grad():  # and spots of many cells
        module.log_profiles.copy_(torch.log(profiles))
        module.log_abundance.fill_(3.0)
    drawn = module.sample(tensors, n_samples=3000).var(-1)
    with torch.no_grad():
        inferred = module.inference(**module._get_inference_input(tensors))
        px = module.generative(**module._get_generative_input(tensors, inferred))["px"]
    noise_only = px.mu + px.mu**2 / px.theta  # NB variance at the posterior mean
    assert (drawn[:, :3] > 2 * noise_only[:, :3]).all()
    torch.testing.assert_close(drawn[:, 3:], noise_only[:, 3:], rtol=0.2, atol=0.1)
