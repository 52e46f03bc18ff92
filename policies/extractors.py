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
from .extensions import CompiledExtension
from .kernels import kernel_disabled, warn_fallback

# Table sizes of MiniGrid's symbolic encoding (11 object types, 6 colours, states 0..3), used when the observation
# space does not state tighter bounds (a raw MiniGrid space declares [0, 255]).
DEFAULT_INDEX_SIZES = (11, 6, 4)

# Rows of the one-hot count matrix formed at a time in ``BagSum``'s plain backward (a 1024 x 1033 block is 4 MB).
BAG_BACKWARD_CHUNK = 1024
# The compiled weight gradient of ``BagSum`` (csrc/bag.cpp), built on first use like the recurrent kernels.
BAG = CompiledExtension("bag", ["bag.cpp"], description="embedding-bag gradient CPU kernel")
BAG_FALLBACK = "SymbolicGridBagExtractor's weight gradient runs the slower one-hot product"


def bag_sum_weight_grad(indices: torch.Tensor, grad: torch.Tensor, n_rows: int) -> torch.Tensor:
    """The plain definition of an embedding-bag sum's weight gradient: ``counts^T @ grad``, where ``counts[b, i]``
    is how often row ``i`` occurs in bag ``b`` (the sum is ``counts @ weight``), formed ``BAG_BACKWARD_CHUNK`` bags
    at a time as a dense matrix and multiplied in one product per block.

    :param indices: (B, L) int64 rows of each bag
    :param grad: (B, D) gradient of the bag sums
    :param n_rows: rows of the weight
    :return: (n_rows, D) gradient of the weight
    """
    grad_weight = grad.new_zeros(n_rows, grad.shape[1])
    ones = grad.new_ones(()).expand(min(BAG_BACKWARD_CHUNK, len(indices)), indices.shape[1])
    for start in range(0, len(indices), BAG_BACKWARD_CHUNK):
        block = indices[start : start + BAG_BACKWARD_CHUNK]
        counts = grad.new_zeros(len(block), n_rows).scatter_add_(1, block, ones[: len(block)])
        grad_weight.addmm_(counts.t(), grad[start : start + BAG_BACKWARD_CHUNK])
    return grad_weight


class BagSum(torch.autograd.Function):
    """``F.embedding_bag(indices, weight, mode="sum")`` with a faster weight gradient on a CPU.

    The forward pass is torch's. The weight gradient is the compiled loop of ``csrc/bag.cpp`` for CPU float32/64
    tensors where the extension builds (unless ``URGATE_DISABLE_KERNEL=1``), else ``bag_sum_weight_grad``'s
    one-hot product. torch's own CPU backward sorts all ``B * L`` indices and adds rows one at a time; for the grid
    extractor's bags (148 indices into about a thousand rows) the one-hot product is 2-4x faster than it and the
    compiled loop faster still (``benchmarks/throughput.py --tasks extractor``). All three give the same gradient up
    to float rounding (``tests/test_extractors.py``); no gradient reaches the indices, and no second derivative is
    defined.
    """

    @staticmethod
    def forward(ctx, indices: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(indices)
        ctx.n_rows = weight.shape[0]
        return F.embedding_bag(indices, weight, mode="sum")

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor | None]:
        if not ctx.needs_input_grad[1]:
            return None, None
        (indices,) = ctx.saved_tensors
        if grad.device.type == "cpu" and grad.dtype in (torch.float32, torch.float64) and not kernel_disabled():
            if BAG.load():
                return None, torch.ops.urgate.bag_sum_backward(indices, grad, ctx.n_rows)
            warn_fallback(BAG_FALLBACK, f"the compiled kernel is unavailable: {BAG.error}")
        return None, bag_sum_weight_grad(indices, grad, ctx.n_rows)


class _SymbolicGridInput(BaseFeaturesExtractor):
    """What the symbolic-grid extractors share: checking the space, and reading the observation as integer indices.

    See ``SymbolicGridExtractor`` for the observation format and why a channels-first or /255 image is accepted.

    ``presence=True`` adds position-free features: a learned row ``presence[t]`` for every (object, colour, state)
    triple ``t``, summed over the triples anywhere in view (however often) into the last layer's output before its
    ReLU. What the layers learn about an object at one place in view then carries to every other place: the hidden
    cue of Active Visual Match turns up at any cell, and without presence features the one-hot extractor never
    learned its colour (docs/experiments/visual-match.md).
    """

    normalize_images = False  # what the policy should be built with (read by agents.run.factory)

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int,
        image_key: str,
        direction_key: str | None,
        presence: bool = False,
    ) -> None:
        name = type(self).__name__
        if not isinstance(presence, bool):
            raise PolicyConfigError(f"{name} presence must be true or false, got {presence!r}")
        if not isinstance(observation_space, spaces.Dict) or image_key not in observation_space.spaces:
            raise PolicyConfigError(
                f"{name} needs a Dict observation space with an {image_key!r} key, got {observation_space}"
            )
        image = observation_space[image_key]
        if not isinstance(image, spaces.Box) or len(image.shape) != 3 or 3 not in (image.shape[0], image.shape[-1]):
            raise PolicyConfigError(f"{name} needs an (H, W, 3) or (3, H, W) image, got {image}")
        if direction_key is not None and not isinstance(observation_space.spaces.get(direction_key), spaces.Discrete):
            raise PolicyConfigError(
                f"{name} needs a Discrete {direction_key!r} entry (or direction_key=None), got "
                f"{observation_space.spaces.get(direction_key)}"
            )
        super().__init__(observation_space, features_dim)
        self.image_key, self.direction_key = image_key, direction_key
        self.channels_first = image.shape[-1] != 3
        high = image.high if not self.channels_first else image.high.transpose(1, 2, 0)
        self.height, self.width = high.shape[:2]
        self.index_sizes = [
            int(high[..., c].max()) + 1 if high[..., c].max() < 255 else DEFAULT_INDEX_SIZES[c] for c in range(3)
        ]
        self.n_directions = int(observation_space[direction_key].n) if direction_key is not None else 0
        self.presence = None
        if presence:
            sizes = self.index_sizes
            # the triple (object, colour, state) is number object * C * S + colour * S + state
            self.register_buffer("triple_strides", torch.tensor([sizes[1] * sizes[2], sizes[2], 1]), persistent=False)
            self.n_triples = sizes[0] * sizes[1] * sizes[2]
            self.presence = nn.Parameter(torch.empty(self.n_triples, features_dim))

    def present(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, n_triples) floats: 1 where the (object, colour, state) triple is anywhere in the view, else 0."""
        return self._present(self._index_image(observations))

    def _present(self, image: torch.Tensor) -> torch.Tensor:
        """``present`` of a (B, H, W, 3) index image (``_index_image`` or ``_indices``)."""
        triples = (image * self.triple_strides.to(image.dtype)).sum(dim=-1).reshape(image.shape[0], -1).long()
        return self.presence.new_zeros(image.shape[0], self.n_triples).scatter_(1, triples, 1.0)

    def _activate(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """ReLU of the last layer's output ``features``, plus ``present @ presence`` where presence is on (``image``:
        the view's indices)."""
        if self.presence is not None:
            features = torch.addmm(features, self._present(image), self.presence)
        return F.relu(features)

    def _index_image(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The view as (B, H, W, 3) indices, in the observation's dtype (a /255 image scaled back)."""
        image = observations[self.image_key]
        if self.channels_first:
            image = image.permute(0, 2, 3, 1)
        if not image.is_floating_point() or torch.equal(image, torch.floor(image)):  # raw indices: the usual case
            return image
        return torch.where(image == torch.floor(image), image, image * 255.0).round()

    def _indices(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """The view as (B, H, W, 3) int64 indices."""
        return self._index_image(observations).long()

    def _direction(self, observations: dict[str, torch.Tensor], batch: int) -> torch.Tensor:
        """The direction as (B, n_directions) one-hot floats."""
        direction = observations[self.direction_key]
        if direction.dim() == 1 or direction.shape[-1] != self.n_directions:  # an index, not SB3's one-hot
            direction = F.one_hot(direction.reshape(batch).long(), self.n_directions).float()
        # SB3 one-hots a buffered (N, 1) index to (N, 1, n): flatten to (N, n)
        return direction.reshape(batch, -1).float()


class SymbolicGridExtractor(_SymbolicGridInput):
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
    :param presence: add which (object, colour, state) triples are anywhere in view (``_SymbolicGridInput``)
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 128,
        embedding_dim: int = 8,
        image_key: str = "image",
        direction_key: str | None = "direction",
        channels: tuple[int, int, int] | list[int] = (32, 64, 32),
        presence: bool = False,
    ) -> None:
        if len(channels) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels):
            raise PolicyConfigError(f"SymbolicGridExtractor channels must be three positive integers, got {channels!r}")
        super().__init__(observation_space, features_dim, image_key, direction_key, presence)
        sizes = self.index_sizes
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
        self.linear = nn.Sequential(
            nn.Linear(channels[2] * self.height * self.width + self.n_directions, features_dim), nn.ReLU()
        )
        if self.presence is not None:  # initialised as a row of the linear layer's weight
            bound = 1.0 / self.linear[0].in_features ** 0.5
            nn.init.uniform_(self.presence, -bound, bound)

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self._indices(observations)
        batch, height, width, _ = image.shape
        cells = self.embedding(image + self.offsets).reshape(batch, height, width, -1)  # (B, H, W, 3E)
        features = self.conv(cells.permute(0, 3, 1, 2))
        if self.n_directions:
            features = torch.cat([features, self._direction(observations, batch)], dim=1)
        return self._activate(self.linear[0](features), image)


class SymbolicGridBagExtractor(_SymbolicGridInput):
    """A linear layer over the one-hot encoding of a symbolic grid view, then ReLU: a cheap alternative to
    ``SymbolicGridExtractor``'s convs for the same observations.

    ``relu(W @ onehot(view, direction) + b)``, where the one-hot has a slot for every (cell, channel, index) and every
    direction. A view sets exactly one slot per (cell, channel), so the product is computed as one
    embedding-bag sum over H * W * 3 + 1 looked-up rows of W instead of a matrix product over the one-hot, with
    ``BagSum``'s weight gradient (``tests/test_extractors.py`` checks both against the explicit product). On a CPU it costs a small fraction of the
    conv net (``benchmarks/throughput.py --tasks extractor``), and MiniGrid's Memory tasks are learned with it
    (configs/minigrid.yaml uses it; docs/experiments/minigrid.md). Elsewhere:
    ``--set policy_kwargs.features_extractor_class=SymbolicGridBagExtractor``.

    Every slot belongs to one cell, so what the layer learns about an object at one place in view says nothing about
    the same object elsewhere. ``presence=True`` adds ``P @ present`` before the ReLU, ``present`` marking the
    (object, colour, state) triples anywhere in view (``_SymbolicGridInput``): the hidden cue of Active Visual Match
    is then read by one row of ``P`` wherever it turns up, instead of one row per cell.

    :param observation_space: Dict space with the image and direction keys
    :param features_dim: size of the output features
    :param image_key: key of the symbolic view
    :param direction_key: key of the agent's direction (Discrete), or None to ignore it
    :param presence: add which (object, colour, state) triples are anywhere in view
    """

    def __init__(
        self,
        observation_space: spaces.Dict,
        features_dim: int = 128,
        image_key: str = "image",
        direction_key: str | None = "direction",
        presence: bool = False,
    ) -> None:
        super().__init__(observation_space, features_dim, image_key, direction_key, presence)
        sizes = self.index_sizes
        per_cell = sum(sizes)
        cell = torch.arange(self.height * self.width).reshape(self.height, self.width, 1) * per_cell
        channel = torch.tensor([0, sizes[0], sizes[0] + sizes[1]])
        # (H, W, 3) offsets: the one-hot slot of (cell, channel, index) is offsets[cell, channel] + index
        self.register_buffer("offsets", cell + channel, persistent=False)
        self.n_slots = self.height * self.width * per_cell
        self.bag = nn.EmbeddingBag(self.n_slots + self.n_directions, features_dim, mode="sum")
        self.bias = nn.Parameter(torch.zeros(features_dim))
        if self.presence is not None:  # initialised as the bag's rows, N(0, 1): a present triple weighs as a slot
            nn.init.normal_(self.presence)

    def one_hot_slots(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H * W * 3 [+ 1]) indices of the one-hot slots a batch of observations sets."""
        return self._slots(self._index_image(observations), observations)

    def _slots(self, image: torch.Tensor, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        batch, n_image = image.shape[0], self.offsets.numel()
        slots = torch.empty(batch, n_image + bool(self.n_directions), dtype=torch.long, device=image.device)
        # one pass in the image's dtype (small integers: exact in float32), one converting pass into the slots
        slots[:, :n_image].view(batch, *self.offsets.shape).copy_(image + self.offsets)
        if self.n_directions:
            slots[:, n_image] = self.n_slots + self._direction(observations, batch).argmax(dim=1)
        return slots

    def forward(self, observations: dict[str, torch.Tensor]) -> torch.Tensor:
        image = self._index_image(observations)
        return self._activate(BagSum.apply(self._slots(image, observations), self.bag.weight) + self.bias, image)


EXTRACTORS: dict[str, type[BaseFeaturesExtractor]] = {
    "SymbolicGridExtractor": SymbolicGridExtractor,
    "SymbolicGridBagExtractor": SymbolicGridBagExtractor,
}
