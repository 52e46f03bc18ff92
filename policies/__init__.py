"""Memory cores and SB3 policies. Knows torch and stable-baselines3, never an environment."""

from .cores import CORE_NAMES, CORES, GatedLSTM, RefineLSTM, make_core
from .errors import PolicyConfigError
from .recurrent import CnnGatedPolicy, MlpGatedPolicy, MultiInputGatedPolicy

__all__ = [
    "CORE_NAMES",
    "CORES",
    "CnnGatedPolicy",
    "GatedLSTM",
    "MlpGatedPolicy",
    "MultiInputGatedPolicy",
    "PolicyConfigError",
    "RefineLSTM",
    "make_core",
]
