"""``FastRecurrentPPO``: sb3-contrib's RecurrentPPO with the same constructor, maths and save format."""

from __future__ import annotations

from sb3_contrib import RecurrentPPO


class FastRecurrentPPO(RecurrentPPO):
    """sb3-contrib ``RecurrentPPO``; a zip it saves loads with ``RecurrentPPO.load`` and vice versa."""
