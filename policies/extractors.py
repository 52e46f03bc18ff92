"""Features extractors for observations SB3's defaults handle badly.

``EXTRACTORS`` maps the names that ``envs.EnvFamily.features_extractor`` uses to classes, so that ``agents/`` can
build the suggested extractor without importing any environment.
"""

from __future__ import annotations

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn
from torch.nn import functional as F

from .errors import PolicyConfigError

# Table sizes of MiniGrid's symbolic encoding (11 object types, 6 colours, states 0..3), used when the observation
# space does not state tighter bounds (a raw MiniGrid space declares [0, 255]).
DEFAULT_INDEX_SIZES = (11, 6, 4)


class SymbolicGridExtractor(BaseFeaturesExtractor):
    """Features of a symbolic grid view: ``Dict(image: (H, W, 3) uint8 indices (object, colour, state),
    direction: Discrete(4))``, as MiniGrid and our Visual Match tasks give.

    Each index is looked up in a learned embedding (one table per channel), the three embeddings of a cell are
    concatenated, a small conv net reads the grid, and the one-hot direction is appended before the last layer.

    It must receive the raw indices: build the policy with ``normalize_images=False``. The ``envs`` wrappers declare
    the image's true bounds (not [0, 255]), so SB3 does not treat it as an image and never divides it by 255 or
    transposes it anyway. For robustness with a raw MiniGrid space (bounds [0, 255]) the extractor also accepts a
    channels-first (3, H, W) image (SB3's ``VecTransposeImage``) and undoes a division by 255: the indices are small
    integers, so a non-integer input value can only be ``index / 255``.

    :param observation_space: Dict space with the image and direction keys
    :param features_dim: size of the output features
    :param embedding_dim: embedding size per channel (object, colour, state)
    :param image_key: key of the symbolic view
    :param direction_key: key of the agent's direction (Discrete), or None to ignore it
    :param channels: output channels of the three conv layers (3x3, 3x3, 1x1); the convs take most of a training
        step's time on a CPU (their cost grows with the product of neighbouring sizes)
    """

    normalize_images = False  # what the policy should be built with (read by agents.run.factory)

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 128,
        embedding_dim: int = 8,
        image_key: str = "image",
        direction_key: str | None = "direction",
        channels: tuple[int, int, int] | list[int] = (32, 64, 32),
    ) -> None:
        if not isinstance(observation_space, spaces.Dict) or image_key not in observation_space.spaces:
            raise PolicyConfigError(
                f"SymbolicGridExtractor needs a Dict observation space with an {image_key!r} key, got {observation_space}"
            )
        image = observation_space[image_key]
        if not isinstance(image, spaces.Box) or len(image.shape) != 3 or 3 not in (image.shape[0], image.shape[-1]):
            raise PolicyConfigError(f"SymbolicGridExtractor needs an (H, W, 3) or (3, H, W) image, got {image}")
        if direction_key is not None and not isinstance(observation_space.spaces.get(direction_key), spaces.Discrete):
            raise PolicyConfigError(
                f"SymbolicGridExtractor needs a Discrete {direction_key!r} entry (or direction_key=None), got "
                f"{observation_space.spaces.get(direction_key)}"
            )
        if len(channels) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
            raise PolicyConfigError(f"SymbolicGridExtractor channels must be three positive integers, got {channels!r}")
        super().__init__(observation_space, features_dim)
        self.image_key, self.direction_key = image_key, direction_key
        self.channels_first = image.shape[-1] != 3
        high = image.high if not self.channels_first else image.high.transpose(1, 2, 0)
        height, width = high.shape[:2]
        sizes = [int(high[..., c].max()) + 1 if high[..., c].max() < 255 else DEFAULT_INDEX_SIZES[c] for c in range(3)]
        # One table for all three channels: channel c's index i looks up row offsets[c] + i.
        self.register_buffer("offsets", torch.tensor([0, sizes[0], sizes[0] + sizes[1]]), persistent=False)
        self.embedding = nn.Embedding(sum(sizes), embedding_dim)
        self.conv = nn.Sequential(
            nn.Conv2d(3 * embedding_dim, channels[0], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels[0], channels[1], kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels[1], channels[2], kernel_size=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        self.n_directions = int(observation_space[direction_key].n) if direction_key is not None else 0
        self.linear = nn.Sequential(
            nn.Linear(channels[2] * height * width + self.n_directions, features_dim), nn.ReLU()
        )

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        image = observations[self.image_key]
        if self.channels_first:
            image = image.permute(0, 2, 3, 1)
        image = torch.where(image == torch.floor(image), image, image * 255.0).round().long()
        batch, height, width, _ = image.shape
        cells = self.embedding(image + self.offsets).reshape(batch, height, width, -1)  # (B, H, W, 3E)
        features = self.conv(cells.permute(0, 3, 1, 2))
        if self.n_directions:
            direction = observations[self.direction_key]
            if direction.dim() == 1 or direction.shape[-1] != self.n_directions:  # an index, not SB3's one-hot
                direction = F.one_hot(direction.reshape(batch).long(), self.n_directions).float()
            # SB3 one-hots a buffered (N, 1) index to (N, 1, n): flatten to (N, n)
            features = torch.cat([features, direction.reshape(batch, -1).float()], dim=1)
        return self.linear(features)


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {"SymbolicGridExtractor": SymbolicGridExtractor}
