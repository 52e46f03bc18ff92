"""``FastRecurrentPPO``: sb3-contrib's RecurrentPPO with the same maths, trained on whole unpadded sequences.

What differs from stock, and only this:

- the minibatch composition: each env's rollout is cut into chunks of ``sequence_length`` steps (default: the
  longest divisor of ``n_steps`` that keeps stock's minibatch count) that keep episode resets inside them, and an
  epoch is stock's ``ceil(n_steps * n_envs / batch_size)`` minibatches, each a random set of whole chunks, built
  once per rollout (``agents.ppo.buffers``). Stock cuts a rotated slice of ``batch_size`` transitions into sequences
  at episode starts and pads them to the longest; both make the same number of gradient steps;
- with no padding there is no mask: every mean below is over real transitions, as stock's masked means are.

Also, the policy's Adam optimizer (unless ``optimizer_kwargs`` sets ``fused`` or ``foreach``) runs as torch's
fused implementation where this torch has one for the device (CPU: torch 2.4 on): the same update, in one op per
step instead of about ten per parameter tensor.

The losses are RecurrentPPO's: clipped surrogate, advantages normalised per minibatch (not a minibatch of one
transition, whose std is NaN: SB3's PPO guards this, RecurrentPPO does not), optional value clipping,
entropy bonus (or ``-log_prob`` when the distribution has no entropy), gradient-norm clipping and the
``target_kl`` early stop before the step. Constructor, ``save`` format and ``load`` are stock's: a
FastRecurrentPPO zip loads with ``sb3_contrib.RecurrentPPO.load`` and the other way round.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.preprocessing import get_action_dim, get_obs_shape
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.utils import explained_variance

from policies import saved_core_kwargs

from .buffers import (
    SequenceDictRolloutBuffer,
    SequenceRolloutBuffer,
    SequenceSamples,
    check_rollout_fits,
    plan_sequences,
)


class LossStats(NamedTuple):
    """The detached statistics of one minibatch's loss, as sb3-contrib logs them."""

    policy_loss: th.Tensor
    value_loss: th.Tensor
    entropy_loss: th.Tensor
    clip_fraction: th.Tensor
    approx_kl_div: th.Tensor


class FastRecurrentPPO(RecurrentPPO):
    """sb3-contrib ``RecurrentPPO`` whose training pass runs whole, unpadded sequences (see the module docstring).

    Takes every argument of ``RecurrentPPO`` plus:

    :param sequence_length: steps per training sequence, a divisor of ``n_steps`` that gives at least one
        sequence per minibatch; ``None`` (default) takes the longest such divisor (``n_steps`` itself, each env's
        whole rollout, whenever ``n_envs`` sequences fill stock's minibatch count). Shorter sequences start from
        the recurrent state stored during the rollout (as stock's do).
    :raises UrgateError: at construction, for a ``sequence_length`` that cannot honour ``batch_size``
    """

    def __init__(self, *args: Any, sequence_length: int | None = None, **kwargs: Any) -> None:
        self.sequence_length = sequence_length
        super().__init__(*args, **kwargs)

    def _setup_model(self) -> None:
        # Checked before stock builds anything, so a combination that cannot be honoured fails at construction.
        sequence_length = plan_sequences(self.n_steps, self.n_envs, self.batch_size, self.sequence_length)
        self._check_rollout_fits()
        super()._setup_model()
        stock = self.rollout_buffer
        buffer_cls = (
            SequenceDictRolloutBuffer if isinstance(self.observation_space, spaces.Dict) else SequenceRolloutBuffer
        )
        self.rollout_buffer = buffer_cls(
            self.n_steps,
            self.observation_space,
            self.action_space,
            stock.hidden_state_shape,
            self.device,
            gamma=self.gamma,
            gae_lambda=self.gae_lambda,
            n_envs=self.n_envs,
            sequence_length=sequence_length,
        )
        self._use_fused_adam()
        # Saved in the zip: the core's every option as built (defaults resolved), so that a model still loads as
        # the core it was trained as after a default changes.
        core_kwargs = getattr(self.policy, "core_kwargs", None)
        if core_kwargs is not None:
            self.policy_kwargs = {**self.policy_kwargs, "core_kwargs": dict(core_kwargs)}

    @classmethod
    def load(cls, path, env=None, device="auto", custom_objects=None, **kwargs):
        """Stock's ``load``; a model saved before one of its core's defaults changed (its saved ``core_kwargs``
        lack the option) is rebuilt with the value it was trained with (``policies.saved_core_kwargs``)."""
        if not (custom_objects and "policy_kwargs" in custom_objects):
            start = path.tell() if isinstance(path, io.BufferedIOBase) else None
            data, _, _ = load_from_zip_file(path, custom_objects=custom_objects, device="cpu")
            if start is not None:
                path.seek(start)
            saved = (data or {}).get("policy_kwargs")
            if isinstance(saved, dict) and "core" in saved:
                core_kwargs = saved_core_kwargs(saved["core"], saved.get("core_kwargs"))
                if core_kwargs != (saved.get("core_kwargs") or {}):
                    custom_objects = {**(custom_objects or {}), "policy_kwargs": {**saved, "core_kwargs": core_kwargs}}
        return super().load(path, env, device, custom_objects, **kwargs)

    def _check_rollout_fits(self) -> None:
        """Fail with one line before stock allocates a rollout buffer larger than the machine's memory."""
        obs = get_obs_shape(self.observation_space)
        obs_size = sum(int(np.prod(v)) for v in obs.values()) if isinstance(obs, dict) else int(np.prod(obs))
        # RecurrentActorCriticPolicy's defaults where the policy keywords leave them out
        state_size = self.policy_kwargs.get("lstm_hidden_size", 256) * self.policy_kwargs.get("n_lstm_layers", 1)
        check_rollout_fits(self.n_steps, self.n_envs, obs_size, get_action_dim(self.action_space), state_size)

    def _use_fused_adam(self) -> None:
        """Run the default Adam as torch's fused kernel: the same update in one op instead of ~10 per tensor.

        Keeps the policy's own Adam where this torch has no fused Adam for the device (CPU before torch 2.4).
        """
        policy = self.policy
        kwargs = policy.optimizer_kwargs
        chosen = {"fused", "foreach"} & set(kwargs)
        if policy.optimizer_class is th.optim.Adam and not chosen and self.device.type in ("cpu", "cuda"):
            # Without one, torch raises "`fused=True` requires all the params to be ... of supported devices".
            with contextlib.suppress(RuntimeError):
                policy.optimizer = th.optim.Adam(policy.parameters(), lr=self.lr_schedule(1), fused=True, **kwargs)

    def _minibatch_loss(
        self, batch: SequenceSamples, clip_range: float, clip_range_vf: float | None
    ) -> tuple[th.Tensor, LossStats]:
        """RecurrentPPO's loss on one minibatch of whole sequences.

        :return: the loss to minimise and its detached statistics
        """
        actions = batch.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        values, log_prob, entropy = self.policy.evaluate_actions(
            batch.observations, actions, batch.lstm_states, batch.episode_starts
        )
        values = values.flatten()
        advantages = batch.advantages
        if self.normalize_advantage and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)

        log_ratio = log_prob - batch.old_log_prob
        ratio = th.exp(log_ratio)
        policy_loss = -th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - clip_range, 1 + clip_range)).mean()

        values_pred = values
        if clip_range_vf is not None:
            values_pred = batch.old_values + th.clamp(values - batch.old_values, -clip_range_vf, clip_range_vf)
        value_loss = ((batch.returns - values_pred) ** 2).mean()

        entropy_loss = log_prob.mean() if entropy is None else -entropy.mean()
        loss = policy_loss + self.ent_coef * entropy_loss + self.vf_coef * value_loss

        with th.no_grad():
            clip_fraction = ((ratio - 1).abs() > clip_range).float().mean()
            approx_kl_div = ((ratio - 1) - log_ratio).mean()
            stats = LossStats(
                policy_loss.detach(), value_loss.detach(), entropy_loss.detach(), clip_fraction, approx_kl_div
            )
        return loss, stats

    def train(self) -> None:
        """Update the policy from the rollout buffer: ``n_epochs`` passes over random minibatches of sequences."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        clip_range = self.clip_range(self._current_progress_remaining)
        clip_range_vf = None if self.clip_range_vf is None else self.clip_range_vf(self._current_progress_remaining)

        all_stats: list[LossStats] = []
        kl_epoch: list[th.Tensor] = []
        loss = th.zeros(())
        continue_training = True
        for epoch in range(self.n_epochs):
            kl_epoch = []
            for batch in self.rollout_buffer.sequence_minibatches(self.batch_size):
                loss, stats = self._minibatch_loss(batch, clip_range, clip_range_vf)
                all_stats.append(stats)
                kl_epoch.append(stats.approx_kl_div)
                approx_kl_div = stats.approx_kl_div.item()
                if self.target_kl is not None and approx_kl_div > 1.5 * self.target_kl:
                    continue_training = False
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to reaching max kl: {approx_kl_div:.2f}")
                    break
                self.policy.optimizer.zero_grad()
                loss.backward()
                th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
                self.policy.optimizer.step()
            self._n_updates += 1
            if not continue_training:
                break

        mean = LossStats(*th.stack([th.stack(s) for s in all_stats]).mean(dim=0).tolist())
        buf = self.rollout_buffer
        self.logger.record("train/entropy_loss", mean.entropy_loss)
        self.logger.record("train/policy_gradient_loss", mean.policy_loss)
        self.logger.record("train/value_loss", mean.value_loss)
        self.logger.record(
            "train/approx_kl", float(np.mean([k.item() for k in kl_epoch])) if kl_epoch else float("nan")
        )
        self.logger.record("train/clip_fraction", mean.clip_fraction)
        self.logger.record("train/loss", loss.item())
        self.logger.record("train/explained_variance", explained_variance(buf.values.flatten(), buf.returns.flatten()))
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/clip_range", clip_range)
        if clip_range_vf is not None:
            self.logger.record("train/clip_range_vf", clip_range_vf)
