"""Memory cores and SB3 policies. Knows torch and stable-baselines3, never an environment."""

from .cores import GatedLSTM, RefineLSTM
from .errors import PolicyConfigError
from .gru import GatedGRU, RefineGRU
from .recurrent import CnnGatedPolicy, MlpGatedPolicy, MultiInputGatedPolicy
from .registry import CORE_NAMES, CORES, core_options, make_core, saved_core_kwargs

__all__ = [
    "CORE_NAMES",
    "CORES",
    "CnnGatedPolicy",
    "GatedGRU",
    "GatedLSTM",
    "MlpGatedPolicy",
    "MultiInputGatedPolicy",
    "PolicyConfigError",
    "RefineGRU",
    "RefineLSTM",
    "core_options",
    "make_core",
    "saved_core_kwargs",
]
