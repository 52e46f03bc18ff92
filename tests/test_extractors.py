"""SymbolicGridExtractor: builds on the env's space, reads raw indices, survives SB3's image preprocessing."""

import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from stable_baselines3.common.preprocessing import preprocess_obs

from envs import FAMILIES, make_env
from policies.errors import PolicyConfigError
from policies.extractors import EXTRACTORS, SymbolicGridExtractor


def _batch(obs_list):
    return {k: torch.as_tensor(np.stack([np.asarray(o[k]) for o in obs_list])) for k in obs_list[0]}


def _observations(env_id, n=5):
    env = make_env(env_id, seed=0)
    obs, _ = env.reset()
    out = [obs]
    for _ in range(n - 1):
        obs, *_ = env.step(2)
        out.append(obs)
    return env.observation_space, out


def test_family_extractor_names_resolve_and_forward_on_the_env_space():
    for family in FAMILIES.values():
        if family.features_extractor is None:
            continue
        extractor_cls = EXTRACTORS[family.features_extractor]
        space, obs = _observations(family.ids[0])
        extractor = extractor_cls(space, **family.features_extractor_kwargs)
        features = extractor(preprocess_obs(_batch(obs), space, normalize_images=True))
        assert features.shape == (len(obs), extractor.features_dim)
        assert torch.isfinite(features).all()


def test_division_by_255_and_channels_first_give_the_same_features():
    space, obs = _observations("MiniGrid-MemoryS7-v0")
    batch = _batch(obs)
    extractor = SymbolicGridExtractor(space)
    raw = extractor(preprocess_obs(batch, space, normalize_images=False))
    # A raw MiniGrid space ([0, 255] bounds) is an "image" to SB3: divided by 255, possibly transposed.
    image_space = spaces.Box(0, 255, (7, 7, 3), np.uint8)
    naive = spaces.Dict({"image": image_space, "direction": space["direction"]})
    divided = preprocess_obs(batch, naive, normalize_images=True)
    assert divided["image"].max() < 1  # SB3 did crush the indices ...
    torch.testing.assert_close(extractor(divided), raw)  # ... and the extractor undid it
    transposed_space = spaces.Dict({"image": spaces.Box(0, 255, (3, 7, 7), np.uint8), "direction": space["direction"]})
    transposed = SymbolicGridExtractor(transposed_space)
    transposed.load_state_dict(extractor.state_dict())
    chw = dict(divided, image=divided["image"].permute(0, 3, 1, 2))
    torch.testing.assert_close(transposed(chw), raw)


def test_direction_changes_features_and_accepts_indices():
    space, obs = _observations("MiniGrid-MemoryS7-v0", n=1)
    extractor = SymbolicGridExtractor(space)
    batch = preprocess_obs(_batch(obs * 4), space)
    batch["direction"] = torch.eye(4)
    features = extractor(batch)
    assert not torch.allclose(features[0], features[1])
    torch.testing.assert_close(extractor(dict(batch, direction=torch.arange(4))), features)


def test_bad_spaces_are_config_errors():
    with pytest.raises(PolicyConfigError, match="Dict observation space"):
        SymbolicGridExtractor(spaces.Box(0, 1, (7, 7, 3)))
    with pytest.raises(PolicyConfigError, match="direction"):
        SymbolicGridExtractor(spaces.Dict({"image": spaces.Box(0, 10, (7, 7, 3), np.uint8)}))
    extractor = SymbolicGridExtractor(
        spaces.Dict({"image": spaces.Box(0, 10, (7, 7, 3), np.uint8)}), direction_key=None, features_dim=16
    )
    assert extractor({"image": torch.zeros(2, 7, 7, 3)}).shape == (2, 16)


def test_conv_channels_are_a_size_option():
    space, obs = _observations("MiniGrid-MemoryS7-v0")
    batch = preprocess_obs(_batch(obs), space, normalize_images=True)
    torch.manual_seed(0)
    default = SymbolicGridExtractor(space)
    torch.manual_seed(0)
    explicit = SymbolicGridExtractor(space, channels=[32, 64, 32])  # a YAML list works as well as a tuple
    torch.testing.assert_close(explicit(batch), default(batch), rtol=0, atol=0)
    small = SymbolicGridExtractor(space, channels=(16, 8, 4), features_dim=32)
    assert [m.out_channels for m in small.conv if isinstance(m, torch.nn.Conv2d)] == [16, 8, 4]
    assert small(batch).shape == (len(obs), 32)
    for bad in [(16, 32), (16, 0, 8), (16.0, 32, 16)]:
        with pytest.raises(PolicyConfigError, match=r"channels must be three positive integers, got"):
            SymbolicGridExtractor(space, channels=bad)


def _as_sb3_policy_sees_it(space):
    """SB3 wraps envs with channels-last image spaces in VecTransposeImage: the policy sees channels first."""
    from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
    from stable_baselines3.common.vec_env import VecTransposeImage

    def fix(sub):
        if is_image_space(sub) and not is_image_space_channels_first(sub):
            return VecTransposeImage.transpose_space(sub)
        return sub

    return spaces.Dict({k: fix(v) for k, v in space.spaces.items()}) if isinstance(space, spaces.Dict) else fix(space)


def test_every_family_space_fits_its_suggested_extractor():
    """Families without an extractor of ours get SB3's default for their policy kind: it must accept the space."""
    import importlib.util

    from stable_baselines3.common.torch_layers import CombinedExtractor, FlattenExtractor, NatureCNN

    sb3_default = {
        "MlpGatedPolicy": FlattenExtractor,
        "CnnGatedPolicy": NatureCNN,
        "MultiInputGatedPolicy": CombinedExtractor,
    }
    for family in FAMILIES.values():
        if family.requires is not None and importlib.util.find_spec(family.requires) is None:
            continue
        env = make_env(family.ids[0])  # building is cheap: Memory Maze builds its maze on the first reset only
        space = _as_sb3_policy_sees_it(env.observation_space)
        if family.features_extractor is None:
            extractor = sb3_default[family.policy](space, **family.features_extractor_kwargs)
        else:
            extractor = EXTRACTORS[family.features_extractor](space, **family.features_extractor_kwargs)
        space.seed(0)
        samples = [space.sample() for _ in range(3)]
        batch = _batch(samples) if isinstance(space, spaces.Dict) else torch.as_tensor(np.stack(samples))
        normalize = getattr(extractor, "normalize_images", True)
        features = extractor(preprocess_obs(batch, space, normalize_images=normalize))
        assert features.shape == (3, extractor.features_dim), family.name
        env.close()


def test_bag_extractor_is_a_linear_layer_over_the_one_hot_view():
    """SymbolicGridBagExtractor's EmbeddingBag sum equals relu(W @ one_hot + b) built slot by slot from the view."""
    from policies.extractors import SymbolicGridBagExtractor

    for env_id in ("MiniGrid-MemoryS7-v0", "urgate/PassiveVisualMatch-v0"):
        space, obs = _observations(env_id, n=6)
        extractor = SymbolicGridBagExtractor(space, features_dim=16)
        with torch.no_grad():
            extractor.bias.normal_()
        batch = preprocess_obs(_batch(obs), space, normalize_images=False)
        sizes = extractor.index_sizes
        height, width = space["image"].shape[:2]
        one_hot = torch.zeros(len(obs), extractor.n_slots + 4)
        for b, o in enumerate(obs):
            for x in range(height):
                for y in range(width):
                    for c in range(3):
                        slot = (x * width + y) * sum(sizes) + sum(sizes[:c]) + int(o["image"][x, y, c])
                        one_hot[b, slot] = 1.0
            one_hot[b, extractor.n_slots + int(o["direction"])] = 1.0
        expected = torch.relu(one_hot @ extractor.bag.weight + extractor.bias)
        torch.testing.assert_close(extractor(batch), expected)
        assert not torch.allclose(extractor(batch)[0], extractor(batch)[-1])  # the steps' views differ
        # the same features from a /255 image and from direction indices instead of SB3's one-hot
        assert batch["direction"].shape == (len(obs), 4)
        divided = dict(batch, image=batch["image"] / 255.0, direction=batch["direction"].argmax(dim=1))
        torch.testing.assert_close(extractor(divided), expected)


@pytest.mark.parametrize("name", ["SymbolicGridBagExtractor", "SymbolicGridExtractor"])
def test_presence_adds_which_triples_are_anywhere_in_view(name):
    """With presence=True the features are relu(last layer + P @ present), present[t] = 1 where the triple t =
    (object, colour, state) is at any cell of the view; an object moved to another cell sets the same presence; the
    gradient of P is present^T @ grad (through the ReLU)."""
    cls = EXTRACTORS[name]
    space, obs = _observations("urgate/ActiveVisualMatch-v0", n=6)
    extractor = cls(space, features_dim=16, presence=True)
    plain = cls(space, features_dim=16)
    plain.load_state_dict({k: v for k, v in extractor.state_dict().items() if k != "presence"})
    plain._activate = lambda features, image: features  # the last layer's output, before the ReLU
    batch = preprocess_obs(_batch(obs), space, normalize_images=False)
    sizes = extractor.index_sizes
    present = torch.zeros(len(obs), sizes[0] * sizes[1] * sizes[2])
    for b, o in enumerate(obs):
        for obj, colour, state in o["image"].reshape(-1, 3).tolist():
            present[b, (obj * sizes[1] + colour) * sizes[2] + state] = 1.0
    assert present.sum(dim=1).min() >= 2  # walls and floor at least
    torch.testing.assert_close(extractor.present(batch), present)
    with torch.no_grad():
        expected = torch.relu(plain(batch) + present @ extractor.presence)
    torch.testing.assert_close(extractor(batch), expected)
    grad_out = torch.randn(len(obs), 16)
    (grad_p,) = torch.autograd.grad(extractor(batch), extractor.presence, grad_out)
    torch.testing.assert_close(grad_p, present.t() @ (grad_out * (expected > 0)))

    # one box at two different cells of an otherwise equal view: the same presence, different cell slots
    image = torch.as_tensor(obs[0]["image"]).clone()
    image[:] = torch.tensor([1, 0, 0])  # empty floor
    moved = image.clone()
    image[1, 2] = moved[5, 6] = torch.tensor([7, 0, 0])  # a red box
    two = {"image": torch.stack([image, moved]).float(), "direction": torch.tensor([0, 0])}
    torch.testing.assert_close(extractor.present(two)[0], extractor.present(two)[1])
    assert not torch.equal(extractor.present(two)[0], extractor.present({**two, "image": two["image"] * 0 + 1})[0])
    with pytest.raises(PolicyConfigError, match=f"{name} presence must be true or false, got 'yes'"):
        cls(space, presence="yes")


@pytest.mark.parametrize("path", ["compiled", "one_hot"])
def test_bag_sum_gradient_equals_embedding_bag_and_the_one_hot_product(path, monkeypatch):
    """BagSum's weight gradient (the compiled loop, or the one-hot counts times the output gradient in row blocks)
    equals torch's EmbeddingBag gradient and the autograd of the explicit count product, with repeated indices in a
    bag and runs of bags with equal indices (what the compiled loop sums in registers)."""
    from policies import extractors
    from policies.extractors import BAG, BagSum
    from policies.kernels import DISABLE_ENV

    if path == "compiled":
        monkeypatch.delenv(DISABLE_ENV, raising=False)
        assert BAG.load(), f"compiled bag kernel is unavailable: {BAG.error}"
    else:
        monkeypatch.setenv(DISABLE_ENV, "1")
    torch.manual_seed(0)
    for dtype, n_bags, dim in ((torch.float64, 7, 6), (torch.float32, 2 * extractors.BAG_BACKWARD_CHUNK + 5, 77)):
        n_rows, bag = 40, 12
        indices = torch.randint(0, n_rows, (n_bags, bag))
        indices[0, :4] = 3  # one row four times in a bag
        indices[1:5, 5] = indices[0, 5]  # a run of five bags with the same index at one position
        weight = torch.randn(n_rows, dim, dtype=dtype, requires_grad=True)
        grad_out = torch.randn(n_bags, dim, dtype=dtype)
        out = BagSum.apply(indices, weight)
        (ours,) = torch.autograd.grad(out, weight, grad_out)

        reference = torch.nn.EmbeddingBag(n_rows, dim, mode="sum").to(dtype)
        with torch.no_grad():
            reference.weight.copy_(weight)
        torch.testing.assert_close(out, reference(indices))
        (stock,) = torch.autograd.grad(reference(indices), reference.weight, grad_out)
        counts = torch.zeros(n_bags, n_rows, dtype=dtype)
        for b in range(n_bags):
            for i in indices[b].tolist():
                counts[b, i] += 1.0
        explicit = counts @ weight
        (plain,) = torch.autograd.grad(explicit, weight, grad_out)
        torch.testing.assert_close(out, explicit)
        # float32 sums of ~600 terms in a different order: rounding of order 1e-5 on values of order 10
        tol = {} if dtype == torch.float64 else dict(rtol=1e-5, atol=5e-4)
        torch.testing.assert_close(ours, stock, **tol)
        torch.testing.assert_close(ours, plain, **tol)
        assert counts[0, 3] >= 4 and ours.abs().sum() > 0


def test_bag_kernel_rejects_out_of_range_indices():
    from policies.extractors import BAG

    assert BAG.load(), f"compiled bag kernel is unavailable: {BAG.error}"
    with pytest.raises(RuntimeError, match="index 5 out of range for 5 rows"):
        torch.ops.urgate.bag_sum_backward(torch.tensor([[0, 5]]), torch.ones(1, 3), 5)


def test_bag_extractor_gradients_equal_the_explicit_product():
    """The extractor's parameter gradients through BagSum equal those of relu(one_hot @ W + b) on real views."""
    from policies.extractors import SymbolicGridBagExtractor

    space, obs = _observations("MiniGrid-MemoryS7-v0", n=6)
    extractor = SymbolicGridBagExtractor(space, features_dim=16)
    with torch.no_grad():
        extractor.bias.normal_()
    batch = preprocess_obs(_batch(obs), space, normalize_images=False)
    slots = extractor.one_hot_slots(batch)
    one_hot = torch.zeros(len(obs), extractor.bag.weight.shape[0]).scatter_(1, slots, 1.0)
    assert one_hot.sum() == slots.numel()  # a view sets distinct slots
    grad_out = torch.randn(len(obs), 16)
    ours = torch.autograd.grad(extractor(batch), [extractor.bag.weight, extractor.bias], grad_out)
    expected = torch.relu(one_hot @ extractor.bag.weight + extractor.bias)
    plain = torch.autograd.grad(expected, [extractor.bag.weight, extractor.bias], grad_out)
    for a, b in zip(ours, plain, strict=True):
        torch.testing.assert_close(a, b)


def test_bag_sum_without_its_kernel_warns_once_and_takes_the_one_hot_product(monkeypatch, tmp_path):
    """A bag extension that does not build: one warning naming why, and the plain one-hot product's gradient."""
    from policies import extensions, extractors, kernels
    from policies.extractors import BagSum, bag_sum_weight_grad

    (tmp_path / "broken.cpp").write_text("this is not C++;\n")
    broken = extensions.CompiledExtension("broken", ["broken.cpp"], description="broken test", source_dir=tmp_path)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    monkeypatch.delenv(kernels.DISABLE_ENV, raising=False)
    monkeypatch.setattr(kernels, "_warned", set())
    monkeypatch.setattr(extractors, "BAG", broken)
    indices = torch.randint(0, 9, (5, 4))
    weight = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    grad_out = torch.randn(5, 3, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="one-hot product .*the build failed"):
        (ours,) = torch.autograd.grad(BagSum.apply(indices, weight), weight, grad_out)
    torch.testing.assert_close(ours, bag_sum_weight_grad(indices, grad_out, 9))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call is silent
        torch.autograd.grad(BagSum.apply(indices, weight), weight, grad_out)
