"""sb3-contrib recurrent policies whose memory is a core chosen by name (``policies.cores``).

``MlpGatedPolicy``, ``CnnGatedPolicy`` and ``MultiInputGatedPolicy`` subclass sb3-contrib's
``RecurrentActorCriticPolicy`` and its Cnn / MultiInput variants. They take every stock keyword plus ``core`` and
``core_kwargs``; the stock constructor runs unchanged (its assertions, critic layout and sizes), then the actor
and critic LSTMs are replaced by cores built with the same random numbers and the optimizer is rebuilt over the
new parameters. ``core="lstm"`` therefore reproduces ``MlpLstmPolicy``'s parameters exactly for the same seed.

A training minibatch makes one core call per network (``_process_sequence``) where stock loops over time steps:
the initial state of a sequence that begins an episode is zeroed, and a reset later in a sequence goes through the
core's ``episode_starts``. Inside ``evaluate_actions``, where the final states are not used (it says so with
``final_states_unused``), a core running torch's nn.LSTM or nn.GRU kernel (which cannot reset mid-call) instead gets
one inserted reset step per reset (``_outputs_with_reset_steps``).
Outputs equal stock's per-step loop; gradients agree to float rounding (tests/test_recurrent.py).
"""

from __future__ import annotations

from typing import Any

import torch as th
from sb3_contrib.common.recurrent.policies import (
    RecurrentActorCriticCnnPolicy,
    RecurrentActorCriticPolicy,
    RecurrentMultiInputActorCriticPolicy,
)
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.distributions import CategoricalDistribution
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.nn import functional as F

from .errors import PolicyConfigError
from .gates import GRU_GATE_ORDER, LSTM_GATE_ORDER, gate_block
from .gru import GatedGRU
from .registry import CORE_NAMES, core_options, make_core

DEFAULT_CORE = "ur"

# What stock passes to nn.LSTM through ``lstm_kwargs`` and what a core does with it.
_LSTM_KWARGS_HELP = "lstm_kwargs accepts only 'dropout' (between stacked layers); put core options in core_kwargs"


def _core_args_from_lstm_kwargs(lstm_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """Validate stock ``lstm_kwargs`` and return the keywords ``make_core`` takes from them."""
    if lstm_kwargs is None:
        return {}
    if not isinstance(lstm_kwargs, dict):
        raise PolicyConfigError(f"lstm_kwargs must be a dict such as {{'dropout': 0.5}}, got {lstm_kwargs!r}")
    out = {}
    for key, value in lstm_kwargs.items():
        if key == "dropout":
            out["dropout"] = value
        elif key == "batch_first":
            if value:
                raise PolicyConfigError(
                    "lstm_kwargs batch_first=True is not supported: recurrent policies feed the core "
                    "sequence-first (T, B, F); drop the key or set it to False"
                )
        else:
            raise PolicyConfigError(f"unknown lstm_kwargs key {key!r}: {_LSTM_KWARGS_HELP}")
    return out


class _GatedCoreMixin:
    """Swaps sb3-contrib's nn.LSTMs for a named core; shared by the three public policy classes."""

    lstm_actor: nn.Module
    lstm_critic: nn.Module | None

    def __init__(
        self,
        observation_space,
        action_space,
        lr_schedule: Schedule,
        *,
        core: str = DEFAULT_CORE,
        core_kwargs: dict[str, Any] | None = None,
        lstm_kwargs: dict[str, Any] | None = None,
        shared_lstm_value_grad: bool = False,
        **kwargs: Any,
    ) -> None:
        if core not in CORE_NAMES:
            make_core(core, 1, 2)  # raises the registry's "unknown core ... did you mean" error
        if core_kwargs is not None and not isinstance(core_kwargs, dict):
            raise PolicyConfigError(f"core_kwargs must be a dict such as {{'t_max': 500}}, got {core_kwargs!r}")
        from_lstm = _core_args_from_lstm_kwargs(lstm_kwargs)
        if not isinstance(shared_lstm_value_grad, bool):
            raise PolicyConfigError(f"shared_lstm_value_grad must be true or false, got {shared_lstm_value_grad!r}")
        if shared_lstm_value_grad and not kwargs.get("shared_lstm", False):
            raise PolicyConfigError(
                "shared_lstm_value_grad=True needs shared_lstm=True (and enable_critic_lstm=False): it lets the value "
                "loss train the core the critic shares with the actor"
            )
        self.shared_lstm_value_grad = shared_lstm_value_grad
        self.core_name = core
        self.core_kwargs = dict(core_kwargs or {})
        super().__init__(observation_space, action_space, lr_schedule, lstm_kwargs=lstm_kwargs, **kwargs)

        def build() -> nn.Module:
            return make_core(
                core,
                self.features_dim,
                self.lstm_output_dim,
                self.lstm_hidden_state_shape[0],
                **from_lstm,
                **self.core_kwargs,
            )

        # Build the cores from the random state stock used for its nn.LSTMs, then leave the global stream where
        # stock left it: same seed, same parameters and same rollouts as MlpLstmPolicy for core="lstm".
        with th.random.fork_rng(devices=[]):
            th.random.set_rng_state(self._rng_before_lstm)
            self.lstm_actor = build()
            if self.lstm_critic is not None:
                self.lstm_critic = build()
        del self._rng_before_lstm
        # Every option as built (defaults resolved), so a saved policy keeps its core if a default changes.
        self.core_kwargs = core_options(core, self.lstm_actor)
        self.lstm_actor.to(self.device)
        if self.lstm_critic is not None:
            self.lstm_critic.to(self.device)
        # Stock built its optimizer over the nn.LSTMs it made; without this the core would never train.
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        super()._build(lr_schedule)
        # Stock creates its nn.LSTMs right after this returns: remember the random state they start from.
        self._rng_before_lstm = th.random.get_rng_state()

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            share_features_extractor=self.share_features_extractor,
            lstm_hidden_size=self.lstm_output_dim,
            n_lstm_layers=self.lstm_hidden_state_shape[0],
            shared_lstm=self.shared_lstm,
            enable_critic_lstm=self.enable_critic_lstm,
            lstm_kwargs=dict(self.lstm_kwargs),
            core=self.core_name,
            core_kwargs=dict(self.core_kwargs),
            shared_lstm_value_grad=self.shared_lstm_value_grad,
        )
        return data

    def _latents(self, obs, lstm_states: RNNStates, episode_starts: th.Tensor, final_states_unused: bool = False):
        """Stock's path from observations to the heads' inputs: features, the cores (or the shared core), then the
        actor's and critic's MLPs.

        :return: ``(latent_pi, latent_vf, states)``; ``states`` is the cores' final ``RNNStates``, with None where
            ``final_states_unused`` let ``_process_sequence`` skip them
        """
        features = self.extract_features(obs)
        pi_features, vf_features = (features, features) if self.share_features_extractor else features
        latent_pi, states_pi = self._process_sequence(
            pi_features, lstm_states.pi, episode_starts, self.lstm_actor, final_states_unused=final_states_unused
        )
        if self.lstm_critic is not None:
            latent_vf, states_vf = self._process_sequence(
                vf_features, lstm_states.vf, episode_starts, self.lstm_critic, final_states_unused=final_states_unused
            )
        elif self.shared_lstm:
            latent_vf = latent_pi if self.shared_lstm_value_grad else latent_pi.detach()
            states_vf = None if states_pi is None else (states_pi[0].detach(), states_pi[1].detach())
        else:
            latent_vf, states_vf = self.critic(vf_features), states_pi
        latent_pi = self.mlp_extractor.forward_actor(latent_pi)
        latent_vf = self.mlp_extractor.forward_critic(latent_vf)
        return latent_pi, latent_vf, RNNStates(states_pi, states_vf)

    def forward(self, obs, lstm_states: RNNStates, episode_starts: th.Tensor, deterministic: bool = False):
        """Stock's ``forward`` (actions, values, log-probabilities and the new states, one step per env during
        rollouts). For discrete actions the categorical distribution is sampled without building torch's
        ``Categorical`` and checking its arguments each step: the same operations on the same random stream, so the
        same actions and log-probabilities (tests/test_recurrent.py compares it with stock's)."""
        if not isinstance(self.action_dist, CategoricalDistribution):
            return super().forward(obs, lstm_states, episode_starts, deterministic)
        latent_pi, latent_vf, states = self._latents(obs, lstm_states, episode_starts)
        actions, log_prob = _sample_categorical(self.action_net(latent_pi), deterministic)
        return actions, self.value_net(latent_vf), log_prob, states

    def evaluate_actions(self, obs, actions, lstm_states, episode_starts):
        """Stock's ``evaluate_actions``, telling ``_process_sequence`` that the cores' final states are unused
        (training discards them), which lets a core on torch's nn.LSTM/GRU kernel run with inserted reset steps instead of splitting its
        fused call at every reset (see ``_outputs_with_reset_steps``)."""
        latent_pi, latent_vf, _ = self._latents(obs, lstm_states, episode_starts, final_states_unused=True)
        distribution = self._get_action_dist_from_latent(latent_pi)
        return self.value_net(latent_vf), distribution.log_prob(actions), distribution.entropy()

    @staticmethod
    def _process_sequence(
        features: th.Tensor,
        lstm_states: tuple[th.Tensor, th.Tensor],
        episode_starts: th.Tensor,
        lstm: nn.Module,
        *,
        final_states_unused: bool = False,
    ) -> tuple[th.Tensor, tuple[th.Tensor, th.Tensor] | None]:
        """Run the core over a batch of sequences in one call (stock loops over steps when any episode starts).

        :param features: (n_seq * T, features_dim), sequence-major as the rollout buffer lays it out
        :param lstm_states: ``(h, c)`` at the start of each sequence, each (num_layers, n_seq, hidden)
        :param episode_starts: (n_seq * T,), 1 where the state is reset before that step
        :param lstm: the core
        :param final_states_unused: the caller discards the final states (``evaluate_actions``): a core on torch's
            nn.LSTM/GRU kernel may then run resets as inserted steps, and returns None for them
        :return: the core's output (n_seq * T, hidden) and the final states (None when ``final_states_unused``, the
            sequences hold resets and the core runs torch's nn.LSTM/GRU kernel)
        """
        n_seq = lstm_states[0].shape[1]
        if features.shape[0] == n_seq:  # one step per sequence (rollouts, predict): no reshaping needed
            keep = (1.0 - episode_starts).view(1, n_seq, 1)
            out, hx = lstm(features.unsqueeze(0), (lstm_states[0] * keep, lstm_states[1] * keep))
            return out[0], hx
        # Time-major and contiguous: the cores' input projection of a strided view runs ~1.45x slower (MKL), with
        # the same result.
        x = features.reshape((n_seq, -1, lstm.input_size)).swapaxes(0, 1).contiguous()
        starts = episode_starts.reshape((n_seq, -1)).swapaxes(0, 1)
        keep = (1.0 - starts[0]).view(1, n_seq, 1)
        hx = (lstm_states[0] * keep, lstm_states[1] * keep)
        if x.shape[0] > 1 and bool(starts[1:].any()):
            if final_states_unused and _runs_torch_kernel(lstm, x):
                return _outputs_with_reset_steps(lstm, x, hx, starts), None
            out, hx = lstm(x, hx, episode_starts=starts)
        else:
            out, hx = lstm(x, hx)
        return th.flatten(out.transpose(0, 1), start_dim=0, end_dim=1), hx


def _sample_categorical(logits: th.Tensor, deterministic: bool) -> tuple[th.Tensor, th.Tensor]:
    """What ``CategoricalDistribution.get_actions`` and ``log_prob`` return for ``logits`` (B, n): the operations of
    torch's ``Categorical(logits=...)`` (normalised logits, softmax, one ``multinomial`` draw per row, or the argmax),
    without the distribution object and its argument checks (a NaN still fails: ``multinomial`` refuses it).

    :return: actions (B,) int64 and their log-probabilities (B,)
    """
    log_pmf = logits - logits.logsumexp(dim=-1, keepdim=True)
    probs = F.softmax(log_pmf, dim=-1)
    if deterministic:
        actions = th.argmax(probs, dim=1)
    else:
        actions = th.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).T.reshape(probs.shape[:-1])
    return actions, log_pmf.gather(-1, actions.unsqueeze(-1)).squeeze(-1)


# Added to the pre-activations of the gates that must close at an inserted reset step: sigmoid saturates to exactly 0.
_RESET_DRIVE = -1.0e4


def _runs_torch_kernel(core: nn.Module, x: th.Tensor) -> bool:
    """Whether ``core`` runs torch's nn.LSTM / nn.GRU kernel on ``x``, which cannot reset mid-call (the GRU cores
    run the compiled kernel on CPU, which can)."""
    if isinstance(core, GatedGRU):
        return not core.uses_compiled_kernel(x)
    return isinstance(core, nn.LSTM | nn.GRU)


def _reset_drive(core: nn.Module, k: int) -> th.Tensor:
    """The weight column of the reset flag for layer k: at a flagged step every state of the cell becomes exactly 0.

    nn.LSTM (gate blocks i, f, g, o): i = f = 0, so ``c = f c' + i g = 0`` and ``h = o tanh(c) = 0``; nothing else
    depends on the step. nn.GRU (blocks r, z, n): r = z = 0, and the new gate's column is ``-b_in`` so that its
    pre-activation ``x_n + b_in + r (W_hn h + b_hn)`` is exactly 0: ``h = (1 - z) n + z h' = tanh(0) = 0``. Only the
    new gate's derivative is not 0 there; its gradient reaches ``b_in`` once through the bias and once, negated,
    through this column, and cancels (to rounding).
    """
    b_ih = getattr(core, f"bias_ih_l{k}")
    drive = b_ih.new_zeros(b_ih.shape[0], 1)
    gru = isinstance(core, nn.GRU)
    order, closed = (GRU_GATE_ORDER, ("reset", "update")) if gru else (LSTM_GATE_ORDER, ("input", "forget"))
    for gate in closed:
        gate_block(drive, gate, order).fill_(_RESET_DRIVE)
    if gru:  # differentiable: the column's gradient flows back to b_in
        gate_block(drive, "new", order).copy_(-gate_block(b_ih, "new", order).unsqueeze(1))
    return drive


def _outputs_with_reset_steps(
    core: nn.Module, x: th.Tensor, hx: tuple[th.Tensor, th.Tensor], starts: th.Tensor
) -> th.Tensor:
    """Outputs of an nn.LSTM or nn.GRU core over sequences with resets inside, one fused call per layer.

    torch's fused LSTM and GRU cannot zero their state mid-call, so before every reset inside a column one extra
    step is inserted whose only input is a reset flag, fed through an extra input column (``_reset_drive``) that
    makes the cell's new states exactly 0 and lets no gradient cross the step. Each column thus grows by its
    number of resets; shorter columns are padded at the end, which leaves their real steps untouched but makes the
    call's final states meaningless, hence none are returned.

    :param x: (T, B, F) inputs
    :param hx: states at step 0, each (num_layers, B, H) (already zeroed where ``starts[0]`` is set)
    :param starts: (T, B) episode starts
    :return: outputs (B * T, H), sequence-major
    """
    T, B = starts.shape
    inner = starts[1:] > 0
    shift = th.cat([inner.new_zeros((1, B), dtype=th.long), inner.long().cumsum(0)])
    row = th.arange(T, device=x.device).unsqueeze(1) + shift  # step t of column b moves to row t + resets so far
    n_rows = int(row[-1].max()) + 1
    dest = row * B + th.arange(B, device=x.device)  # (T, B) flat index in the (n_rows, B) layout
    n_in, H = x.shape[-1], core.hidden_size
    inp = x.new_zeros(n_rows * B, n_in).index_copy(0, dest.flatten(), x.reshape(T * B, n_in)).view(n_rows, B, n_in)
    flag = x.new_zeros(n_rows * B, 1)
    flag[dest[1:][inner] - B] = 1.0  # the inserted row just before each reset
    flag = flag.view(n_rows, B, 1)
    gru = isinstance(core, nn.GRU)
    for k in range(core.num_layers):
        if k > 0 and core.dropout > 0 and core.training:
            inp = F.dropout(inp, core.dropout, training=True)
        weights = [
            th.cat([getattr(core, f"weight_ih_l{k}"), _reset_drive(core, k)], dim=1),
            getattr(core, f"weight_hh_l{k}"),
            getattr(core, f"bias_ih_l{k}"),
            getattr(core, f"bias_hh_l{k}"),
        ]
        inp_k = th.cat([inp, flag], dim=-1)
        if gru:
            inp, _ = th.gru(inp_k, hx[0][k : k + 1], weights, True, 1, 0.0, core.training, False, False)
        else:
            state = (hx[0][k : k + 1], hx[1][k : k + 1])
            inp, _, _ = th.lstm(inp_k, state, weights, True, 1, 0.0, core.training, False, False)
    return inp.reshape(n_rows * B, H)[dest.t().flatten()]


_CORE_DOC = """

    On top of every keyword of the sb3-contrib parent (``lstm_hidden_size``, ``n_lstm_layers``, ``shared_lstm``,
    ``enable_critic_lstm``, ``lstm_kwargs``, ``net_arch``, ...; all but the first three passed by keyword) it takes:

    :param core: memory core name, one of ``policies.CORE_NAMES`` (``"lstm"``, ``"chrono"``, ``"u"``, ``"r"``,
        ``"ur"``, ``"gru"``, ``"ugru"``, ``"urgru"``, and the ordered-gate ``"o"``, ``"or"``, ``"om"``, ``"um"``); saved
        with the model, so loading rebuilds the same core
    :param core_kwargs: the core's own keywords, e.g. ``{"t_max": 500}`` for ``"chrono"``, ``{"refine_bias":
        "neg_forget"}`` for ``"ur"``, ``{"chunk_size": 8}`` for ``"om"``/``"um"``; the policy keeps (and saves)
        every option of its core with the value it was built with, defaults resolved
    :param lstm_kwargs: as stock, but only ``dropout`` (between stacked layers) has a meaning for a core
    :param shared_lstm_value_grad: with ``shared_lstm=True``, let the value loss train the shared core and the
        features extractor as well as the policy loss does (one network for both heads, as CleanRL's PPO-LSTM
        trains it); stock, and the default False, stops the value gradient at the core's output, so that only the
        policy loss shapes the memory and the features
    """


class MlpGatedPolicy(_GatedCoreMixin, RecurrentActorCriticPolicy):
    __doc__ = "Recurrent actor-critic policy (flat observations) with a selectable memory core." + _CORE_DOC


class CnnGatedPolicy(_GatedCoreMixin, RecurrentActorCriticCnnPolicy):
    __doc__ = (
        "Recurrent actor-critic policy for image observations (NatureCNN) with a selectable memory core." + _CORE_DOC
    )


class MultiInputGatedPolicy(_GatedCoreMixin, RecurrentMultiInputActorCriticPolicy):
    __doc__ = "Recurrent actor-critic policy for Dict observations with a selectable memory core." + _CORE_DOC
