"""Training plan: Pyro ELBO as a differentiable loss under Lightning, with a validation ELBO."""

from ._convergence import NotConvergedWarning
from ._data import DeltaDataSplitter
from ._divergence import TrainingDivergedError
from ._mixture_init import MixtureInitialization, refit_mixture
from ._plan import DeltaTrainingPlan

__all__ = [
    "DeltaDataSplitter",
    "DeltaTrainingPlan",
    "MixtureInitialization",
    "NotConvergedWarning",
    "TrainingDivergedError",
    "refit_mixture",
]
