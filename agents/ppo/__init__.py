"""The algorithm: ``FastRecurrentPPO`` (sb3-contrib's RecurrentPPO trained on whole, unpadded sequences), its
sequence rollout buffers (``buffers``) and rollout sizes from the env's episode length (``horizon``)."""

from .fast_ppo import FastRecurrentPPO

__all__ = ["FastRecurrentPPO"]
