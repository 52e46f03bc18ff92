"""The registry of memory cores: each name maps to a builder, a one-line summary and the keywords it accepts.

``make_core`` is the one way the package builds a core by name (policies, benchmarks, the command line); adding a
core is one ``CoreSpec`` entry in ``CORES`` plus its tests.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from .cores import GatedLSTM, RefineLSTM
from .errors import PolicyConfigError
from .gru import GatedGRU, RefineGRU
from .ordered import MasterLSTM, OrderedLSTM, OrderedRefineLSTM


@dataclass(frozen=True)
class CoreSpec:
    """A registered core: how to build it, what it is, and which keyword arguments it accepts."""

    builder: Callable[..., nn.Module]
    summary: str
    fixed: dict[str, Any] = field(default_factory=dict)
    options: tuple[str, ...] = ()  # the builder's keywords that mean something for this core (e.g. t_max)

    def accepted_kwargs(self) -> tuple[str, ...]:
        """Keywords a user may pass through ``core_kwargs``."""
        return self.options


CORES: dict[str, CoreSpec] = {
    "lstm": CoreSpec(GatedLSTM, "standard LSTM, torch's default init (stock RecurrentPPO)", {"init": "default"}),
    "chrono": CoreSpec(
        GatedLSTM, "LSTM with chrono init of forget/input biases (t_max=500)", {"init": "chrono"}, ("t_max",)
    ),
    "u": CoreSpec(GatedLSTM, "LSTM with uniform gate init of the forget bias (U-LSTM)", {"init": "ugi"}),
    "r": CoreSpec(
        RefineLSTM,
        "refine-gate LSTM, input gate tied to 1-g, default init (R-LSTM)",
        {"init": "default"},
        ("refine_bias",),
    ),
    "ur": CoreSpec(
        RefineLSTM,
        "refine gate + uniform gate init: the paper's UR-LSTM",
        {"init": "ugi"},
        ("refine_bias", "freeze_ugi"),
    ),
    "gru": CoreSpec(
        GatedGRU,
        "standard GRU, torch's default init (this package's compiled kernel on CPU, nn.GRU's on CUDA)",
        {"init": "default"},
    ),
    "ugru": CoreSpec(GatedGRU, "GRU with uniform gate init of the update gate's bias (U-GRU)", {"init": "ugi"}),
    "urgru": CoreSpec(
        RefineGRU,
        "GRU with a refine gate on the update gate + uniform gate init (UR-GRU)",
        {"init": "ugi"},
        ("refine_bias", "freeze_ugi"),
    ),
    "o": CoreSpec(OrderedLSTM, "LSTM with an ordered (cumax) forget gate, torch's init (O-LSTM)"),
    "or": CoreSpec(
        OrderedRefineLSTM,
        "ordered (cumax) forget gate + refine gate, input tied to 1-g (OR-LSTM)",
        {"init": "default"},
        ("refine_bias",),
    ),
    "om": CoreSpec(
        MasterLSTM,
        "ON-LSTM: cumax master forget/input gates over the LSTM gates (OM-LSTM)",
        {"master": "cumax"},
        ("chunk_size",),
    ),
    "um": CoreSpec(
        MasterLSTM,
        "sigmoid master forget/input gates with uniform gate init (UM-LSTM)",
        {"master": "ugi"},
        ("chunk_size",),
    ),
}
CORE_NAMES: tuple[str, ...] = tuple(CORES)

# Options whose default changed, per core: the value a model saved before the change was built with. Such a model's
# saved ``core_kwargs`` lack the option (``FastRecurrentPPO`` saves every option's value since: ``core_options``),
# so ``saved_core_kwargs`` fills in the old value and the model loads as the core it was trained as.
DEFAULTS_BEFORE: dict[str, dict[str, Any]] = {
    "ur": {"refine_bias": "neg_forget"},
    "urgru": {"refine_bias": "neg_forget"},
}


def core_options(name: str, core: nn.Module) -> dict[str, Any]:
    """Every option of the core registered as ``name`` with the value ``core`` was built with (defaults resolved)."""
    return {key: getattr(core, key) for key in CORES[name].options}


def saved_core_kwargs(name: str, core_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The ``core_kwargs`` that rebuild a saved core ``name`` as it was trained: the saved ones, plus the old
    default of every option that a model saved before its default changed does not name (``DEFAULTS_BEFORE``)."""
    return {**DEFAULTS_BEFORE.get(name, {}), **(core_kwargs or {})}


def _unknown(kind: str, name: str, valid) -> PolicyConfigError:
    close = difflib.get_close_matches(str(name), list(valid), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return PolicyConfigError(f"unknown {kind} {name!r}{hint}; valid: {', '.join(valid) or '(none)'}")


def make_core(
    name: str, input_size: int, hidden_size: int, num_layers: int = 1, dropout: float = 0.0, **core_kwargs: Any
) -> nn.Module:
    """Build the memory core registered as ``name`` (one of ``CORE_NAMES``).

    :param name: core name, e.g. ``"ur"``
    :param input_size: features per step
    :param hidden_size: units per layer
    :param num_layers: stacked layers
    :param dropout: dropout between layers (training mode only), as nn.LSTM
    :param core_kwargs: the core's own keywords, e.g. ``t_max`` for ``"chrono"``
    """
    if name not in CORES:
        raise _unknown("core", name, CORE_NAMES)
    spec = CORES[name]
    accepted = spec.accepted_kwargs()
    for key in core_kwargs:
        if key not in accepted:
            raise _unknown(f"keyword for core '{name}':", key, accepted)
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise PolicyConfigError(f"core '{name}': {what} must be a positive integer, got {v!r}")
    if not 0.0 <= float(dropout) < 1.0:
        raise PolicyConfigError(f"core '{name}': dropout must be in [0, 1), got {dropout!r}")
    if "t_max" in core_kwargs:
        t_max = core_kwargs["t_max"]
        if isinstance(t_max, bool) or not isinstance(t_max, int | float) or not t_max > 2:
            raise PolicyConfigError(
                f"core '{name}': t_max must be a number > 2 (longest delay in steps), got {t_max!r}"
            )
    return spec.builder(input_size, hidden_size, num_layers, dropout, core_name=name, **spec.fixed, **core_kwargs)
