"""Training plan: Pyro ELBO as a differentiable loss under Lightning, with a validation ELBO."""

from ._mixture_init import MixtureInitialization
from ._plan import DeltaTrainingPlan

__all__ = ["DeltaTrainingPlan", "MixtureInitialization"]
