"""agents package."""

from .fast_ppo import FastRecurrentPPO

__all__ = ["FastRecurrentPPO"]
