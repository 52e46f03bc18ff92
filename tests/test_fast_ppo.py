"""agents.FastRecurrentPPO and agents.ppo.buffers: stock RecurrentPPO's maths and save format on whole sequences."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RecurrentRolloutBufferSamples, RNNStates
from stable_baselines3.common.logger import configure

from agents import FastRecurrentPPO
from agents.errors import UrgateError
from agents.ppo.buffers import SequenceDictRolloutBuffer, SequenceRolloutBuffer, SequenceSamples, plan_sequences
from policies import CORE_NAMES, MlpGatedPolicy, MultiInputGatedPolicy
from tests.recurrent_envs import DICT_SPACE, play, toy_vec_env

TINY = dict(lstm_hidden_size=8, net_arch=dict(pi=[8], vf=[8]))


def fast_model(core: str | None = "ur", policy=MlpGatedPolicy, env=None, seed: int = 0, **kwargs) -> FastRecurrentPPO:
    policy_kwargs = dict(TINY, **kwargs.pop("policy_kwargs", {}))
    if core is not None:
        policy_kwargs["core"] = core
    else:
        policy = "MlpLstmPolicy"
    kwargs = dict(dict(n_steps=8, batch_size=8, n_epochs=2), **kwargs)
    return FastRecurrentPPO(policy, env or toy_vec_env(), seed=seed, policy_kwargs=policy_kwargs, **kwargs)


def deterministic_rollout(model, n_steps: int = 12):
    env = toy_vec_env(n_envs=2, seed=3)
    obs, state, start = env.reset(), None, np.ones(2, dtype=bool)
    actions = []
    for _ in range(n_steps):
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        actions.append(action)
        obs, _, start, _ = env.step(action)
    return np.stack(actions), state


def assert_same_rollout(a, b):
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1][0], b[1][0])
    np.testing.assert_array_equal(a[1][1], b[1][1])


# --- training, saving, loading ---------------------------------------------------------------------------------


@pytest.mark.parametrize("core", CORE_NAMES)
def test_fast_trains_and_its_zip_loads_with_fast_and_stock(core, tmp_path):
    model = fast_model(core)
    model.learn(32)
    expected = deterministic_rollout(model)
    model.save(tmp_path / "fast.zip")
    for algo in (FastRecurrentPPO, RecurrentPPO):
        loaded = algo.load(tmp_path / "fast.zip")
        assert type(loaded) is algo
        assert loaded.policy.lstm_actor.core_name == core
        assert_same_rollout(expected, deterministic_rollout(loaded))


@pytest.mark.parametrize("core_kwargs", [{}, {"refine_bias": "neg_forget"}])
def test_the_zip_names_every_core_option_as_built(core_kwargs, tmp_path):
    model = fast_model("ur", policy_kwargs=dict(core_kwargs=core_kwargs))
    built = {"refine_bias": core_kwargs.get("refine_bias", "zero"), "freeze_ugi": False}
    assert model.policy.lstm_actor.refine_bias == built["refine_bias"]
    assert model.policy_kwargs["core_kwargs"] == model.policy.core_kwargs == built
    assert model.policy._get_constructor_parameters()["core_kwargs"] == built
    model.save(tmp_path / "fast.zip")
    loaded = FastRecurrentPPO.load(tmp_path / "fast.zip")
    assert loaded.policy.lstm_actor.refine_bias == built["refine_bias"]
    assert loaded.policy_kwargs["core_kwargs"] == built


@pytest.mark.parametrize("core", ["ur", "urgru"])
def test_a_zip_saved_before_refine_bias_defaulted_to_zero_loads_as_neg_forget(core, tmp_path):
    # Such a zip named no refine_bias (the policy kwargs as given): it was built with b_r = -b_f.
    model = fast_model(core, policy_kwargs=dict(core_kwargs=dict(refine_bias="neg_forget")))
    model.learn(16)
    expected = deterministic_rollout(model)
    model.policy_kwargs = {**model.policy_kwargs, "core_kwargs": {}}
    model.save(tmp_path / "old.zip")
    with open(tmp_path / "old.zip", "rb") as stream:  # a path or an open file, as stock's load
        for source in (tmp_path / "old.zip", stream):
            loaded = FastRecurrentPPO.load(source)
            assert loaded.policy.lstm_actor.refine_bias == "neg_forget"
            assert loaded.policy_kwargs["core_kwargs"] == {"refine_bias": "neg_forget", "freeze_ugi": False}
            assert_same_rollout(expected, deterministic_rollout(loaded))
    # the same zip with core "chrono" (no default changed) loads with the options it names
    model = fast_model("chrono")
    model.policy_kwargs = {**model.policy_kwargs, "core_kwargs": {}}
    model.save(tmp_path / "chrono.zip")
    assert FastRecurrentPPO.load(tmp_path / "chrono.zip").policy.core_kwargs == {"t_max": 500}


def test_a_stock_zip_loads_into_fast_and_keeps_training(tmp_path):
    stock = RecurrentPPO(MlpGatedPolicy, toy_vec_env(), n_steps=8, batch_size=8, policy_kwargs=dict(TINY, core="u"))
    stock.learn(16)
    stock.save(tmp_path / "stock.zip")
    fast = FastRecurrentPPO.load(tmp_path / "stock.zip", env=toy_vec_env())
    assert_same_rollout(deterministic_rollout(stock), deterministic_rollout(fast))
    before = fast.policy.lstm_actor.weight_hh_l0.clone()
    fast.learn(16, reset_num_timesteps=False)
    assert not th.equal(before, fast.policy.lstm_actor.weight_hh_l0)


def test_fast_trains_the_stock_lstm_policy_and_stock_loads_it(tmp_path):
    model = fast_model(None)
    assert type(model.policy) is RecurrentActorCriticPolicy  # sb3-contrib's own policy, untouched
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(16)
    trained = model.policy.state_dict()
    assert {k for k in before if not th.equal(before[k], trained[k])} >= {
        "lstm_actor.weight_hh_l0",
        "lstm_critic.weight_hh_l0",
    }
    model.save(tmp_path / "fast.zip")
    assert_same_rollout(deterministic_rollout(model), deterministic_rollout(RecurrentPPO.load(tmp_path / "fast.zip")))


@pytest.mark.parametrize("core", ["lstm", "ur", "gru", "urgru"])
def test_two_seeded_fast_runs_are_bit_identical(core):
    runs = []
    for _ in range(2):
        model = fast_model(core, seed=11)
        model.learn(24)
        runs.append(play(model, model.get_env(), 20, deterministic=False)[:2])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("sequence_length", [0, 3, 2.0, True])
def test_bad_sequence_length_is_a_clear_error(sequence_length):
    with pytest.raises(UrgateError, match="sequence_length"):
        fast_model("lstm", sequence_length=sequence_length)


def count_optimizer_steps_per_epoch(algo, n_envs: int, n_steps: int, batch_size: int, **kwargs) -> int:
    model = algo(
        MlpGatedPolicy,
        toy_vec_env(n_envs=n_envs),
        n_steps=n_steps,
        batch_size=batch_size,
        n_epochs=1,
        target_kl=None,
        policy_kwargs=dict(TINY, core="lstm"),
        seed=0,
        **kwargs,
    )
    optimizer, steps = model.policy.optimizer, []
    step = optimizer.step
    optimizer.step = lambda *a, **k: (steps.append(1), step(*a, **k))[1]
    model.learn(n_steps * n_envs)
    return len(steps)


# The issue's two combinations, the shipped configs' (8 x 128, batch 256) and one where batch_size divides nothing.
@pytest.mark.parametrize("n_envs,n_steps,batch_size", [(4, 1024, 256), (1, 2048, 64), (8, 128, 256), (3, 100, 64)])
def test_an_epoch_makes_as_many_optimizer_steps_as_stock(n_envs, n_steps, batch_size):
    stock = count_optimizer_steps_per_epoch(RecurrentPPO, n_envs, n_steps, batch_size)
    assert stock == -(-n_envs * n_steps // batch_size)
    assert count_optimizer_steps_per_epoch(FastRecurrentPPO, n_envs, n_steps, batch_size) == stock


@pytest.mark.parametrize(
    "n_envs,n_steps,batch_size,expected",
    [(4, 1024, 256, 256), (1, 2048, 64, 64), (8, 128, 256, 128), (3, 100, 64, 50), (64, 256, 4096, 256)],
)
def test_the_default_sequence_is_the_longest_that_keeps_the_minibatch_count(n_envs, n_steps, batch_size, expected):
    assert plan_sequences(n_steps, n_envs, batch_size) == expected
    model = fast_model("lstm", env=toy_vec_env(n_envs=n_envs), n_steps=n_steps, batch_size=batch_size)
    assert model.rollout_buffer.sequence_length == expected


def test_a_sequence_length_that_cannot_honour_batch_size_fails_at_construction_saying_what_works():
    # 2 envs x 8 steps in minibatches of 4 transitions is 4 minibatches, but 8-step sequences make only 2.
    with pytest.raises(UrgateError, match=r"2 sequences, fewer than the 4 minibatches.*sequence_length <= 4"):
        fast_model("lstm", n_steps=8, batch_size=4, sequence_length=8)
    assert fast_model("lstm", n_steps=8, batch_size=4, sequence_length=4).rollout_buffer.sequence_length == 4


# --- the buffer ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dict_obs", [False, True])
def test_reset_zeroes_the_previous_rollouts_arrays_in_place(dict_obs):
    """reset() leaves what stock's leaves (every array zero, same shapes and dtypes as a fresh buffer), written into
    the previous rollout's arrays instead of new ones; arrays that stock get() flattened are replaced."""
    n_steps, n_envs, hidden = 4, 2, 3
    box = spaces.Box(-1e3, 1e3, (2,), np.float32)
    space = spaces.Dict({"a": box, "b": spaces.Discrete(3)}) if dict_obs else box
    cls = SequenceDictRolloutBuffer if dict_obs else SequenceRolloutBuffer
    args = (n_steps, space, spaces.Discrete(2), (n_steps, 1, n_envs, hidden), "cpu")

    def arrays(buffer):
        out = {}
        for name, value in vars(buffer).items():
            for key, array in value.items() if isinstance(value, dict) else [(None, value)]:
                if isinstance(array, np.ndarray):
                    out[(name, key)] = array
        return out

    def fill(buffer):
        for _ in range(n_steps):
            obs = {"a": np.ones((n_envs, 2)), "b": np.full(n_envs, 2)} if dict_obs else np.ones((n_envs, 2))
            state = th.ones(1, n_envs, hidden)
            buffer.add(
                obs,
                np.ones((n_envs, 1)),
                np.ones(n_envs),
                np.ones(n_envs),
                th.ones(n_envs),
                th.ones(n_envs),
                lstm_states=RNNStates((state, state), (state, state)),
            )
        buffer.compute_returns_and_advantage(last_values=th.ones(n_envs), dones=np.zeros(n_envs))

    buf = cls(*args, n_envs=n_envs)
    fresh = arrays(cls(*args, n_envs=n_envs))
    fill(buf)
    before = arrays(buf)
    assert all(np.any(a != 0) for k, a in before.items() if k[0] != "advantages")  # every array was written
    buf.reset()
    after = arrays(buf)
    assert after.keys() == fresh.keys()
    for key, array in after.items():
        assert array is before[key], key  # kept
        assert array.shape == fresh[key].shape and array.dtype == fresh[key].dtype, key
        assert not np.any(array), key
    fill(buf)
    list(buf.get(batch_size=n_envs))  # stock's get flattens the arrays in place
    buf.reset()
    after = arrays(buf)
    for key, expected in fresh.items():
        assert after[key].shape == expected.shape and after[key].dtype == expected.dtype, key
        assert not np.any(after[key]), key


@pytest.mark.parametrize("sequence_length", [None, 3, 1])
def test_sequence_minibatches_cut_each_env_rollout_into_whole_chunks(sequence_length):
    n_steps, n_envs, hidden = 6, 3, 4
    buf = SequenceRolloutBuffer(
        n_steps,
        spaces.Box(-1e3, 1e3, (2,), np.float32),
        spaces.Discrete(2),
        (n_steps, 1, n_envs, hidden),
        "cpu",
        n_envs=n_envs,
        sequence_length=sequence_length,
    )
    rng = np.random.default_rng(0)
    starts = rng.random((n_steps, n_envs)) < 0.3
    for t in range(n_steps):
        tag = np.array([100.0 * t + e for e in range(n_envs)], dtype=np.float32)  # identifies (t, env)
        state = th.as_tensor(tag).view(1, n_envs, 1).expand(1, n_envs, hidden)
        buf.add(
            np.stack([tag, -tag], axis=1),
            np.zeros((n_envs, 1)),
            np.zeros(n_envs),
            starts[t],
            th.as_tensor(tag),
            th.as_tensor(-tag),
            lstm_states=RNNStates((state, state + 0.5), (-state, -state - 0.5)),
        )
    buf.compute_returns_and_advantage(last_values=th.zeros(n_envs), dones=np.zeros(n_envs))
    length = sequence_length or n_steps
    seen = []
    for batch in buf.sequence_minibatches(batch_size=2 * length):
        assert isinstance(batch, SequenceSamples)
        n_seq = batch.lstm_states.pi[0].shape[1]
        assert n_seq <= 2 and batch.observations.shape == (n_seq * length, 2)
        tags = batch.observations[:, 0].view(n_seq, length)
        for i in range(n_seq):
            t0, env = divmod(int(tags[i, 0]), 100)
            assert t0 % length == 0
            np.testing.assert_array_equal(tags[i].numpy(), 100.0 * np.arange(t0, t0 + length) + env)  # consecutive
            np.testing.assert_array_equal(
                batch.episode_starts.view(n_seq, length)[i].numpy(), starts[t0 : t0 + length, env]
            )
            np.testing.assert_array_equal(batch.old_values.view(n_seq, length)[i].numpy(), tags[i].numpy())
            np.testing.assert_array_equal(batch.old_log_prob.view(n_seq, length)[i].numpy(), -tags[i].numpy())
            # the stored state of the chunk's first step, as stock starts its sequences
            assert th.all(batch.lstm_states.pi[0][0, i] == tags[i, 0])
            assert th.all(batch.lstm_states.pi[1][0, i] == tags[i, 0] + 0.5)
            assert th.all(batch.lstm_states.vf[0][0, i] == -tags[i, 0])
            assert th.all(batch.lstm_states.vf[1][0, i] == -tags[i, 0] - 0.5)
            seen.extend(tags[i].tolist())
    assert sorted(seen) == sorted(100.0 * t + e for t in range(n_steps) for e in range(n_envs))


# --- PPO maths: FastRecurrentPPO.train against RecurrentPPO.train on one fixed batch --------------------------


def batch_of(space: spaces.Space, n: int, seed: int) -> th.Tensor | dict[str, th.Tensor]:
    """``n`` samples of ``space`` laid out as the rollout buffer stores them (float, (n, *obs shape))."""
    if isinstance(space, spaces.Dict):
        return {key: batch_of(sub, n, seed + i) for i, (key, sub) in enumerate(space.spaces.items())}
    space.seed(seed)
    return th.as_tensor(np.stack([np.asarray(space.sample(), dtype=np.float32) for _ in range(n)]).reshape(n, -1))


def fixed_batch(policy, n_seq: int = 3, length: int = 5, noise: float = 0.3):
    """A minibatch of whole sequences with episode starts at position 0 and inside, old log-probs near current."""
    gen = th.Generator().manual_seed(0)
    n = n_seq * length
    obs = batch_of(policy.observation_space, n, seed=1)
    if not isinstance(obs, dict):
        obs = obs.reshape(n, *policy.observation_space.shape)
    actions = batch_of(policy.action_space, n, seed=2)
    starts = th.zeros(n_seq, length)
    starts[0, 0], starts[1, 2], starts[2, 0], starts[2, 3] = 1, 1, 1, 1
    starts = starts.flatten()
    hidden = policy.lstm_actor.hidden_size
    states = RNNStates(
        tuple(th.randn(1, n_seq, hidden, generator=gen) for _ in range(2)),
        tuple(th.randn(1, n_seq, hidden, generator=gen) for _ in range(2)),
    )
    with th.no_grad():
        flat = actions.long().flatten() if isinstance(policy.action_space, spaces.Discrete) else actions
        values, log_prob, _ = policy.evaluate_actions(obs, flat, states, starts)
    old_log_prob = log_prob + noise * th.randn(log_prob.shape, generator=gen)
    old_values = values.flatten() + 0.5 * th.randn(values.shape[0], generator=gen)
    advantages = th.randn(n, generator=gen)
    returns = old_values + advantages
    fast = SequenceSamples(obs, actions, old_values, old_log_prob, advantages, returns, states, starts)
    stock = RecurrentRolloutBufferSamples(*fast, mask=th.ones(n))
    return fast, stock


def assert_fast_train_equals_stock_train(core, options, policy=MlpGatedPolicy, env_kwargs=None, noise=0.3):
    """Same parameters, same batch: one train() call moves every parameter the same and logs the same losses."""
    env_kwargs = env_kwargs or {}
    fast = fast_model(core, policy=policy, env=toy_vec_env(**env_kwargs), **options)
    initial = {k: v.clone() for k, v in fast.policy.state_dict().items()}
    stock_options = dict(dict(n_epochs=2), **options)
    stock = RecurrentPPO(
        fast.policy_class,
        toy_vec_env(**env_kwargs),
        n_steps=8,
        batch_size=8,
        policy_kwargs=fast.policy_kwargs,
        **stock_options,
    )
    stock.policy.load_state_dict(initial)
    fast_batch, stock_batch = fixed_batch(fast.policy, noise=noise)
    fast.rollout_buffer.sequence_minibatches = lambda batch_size: iter([fast_batch])
    stock.rollout_buffer.get = lambda batch_size: iter([stock_batch])
    for m in (fast, stock):
        m.set_logger(configure(None, [""]))
        m.train()
    for (name, a), b in zip(stock.policy.state_dict().items(), fast.policy.state_dict().values(), strict=True):
        th.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=name)
    assert fast._n_updates == stock._n_updates
    for key in ("entropy_loss", "policy_gradient_loss", "value_loss", "approx_kl", "clip_fraction", "loss"):
        a, b = stock.logger.name_to_value[f"train/{key}"], fast.logger.name_to_value[f"train/{key}"]
        assert b == pytest.approx(a, rel=1e-5, abs=1e-7), key
    assert any(not th.equal(v, initial[k]) for k, v in fast.policy.state_dict().items())
    return stock


@pytest.mark.parametrize(
    "core", [None, "lstm", "ur", "gru", "urgru"], ids=["stock_policy", "lstm", "ur", "gru", "urgru"]
)
@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(clip_range_vf=0.1, ent_coef=0.01, normalize_advantage=False),
        dict(target_kl=1e-6, n_epochs=3, learning_rate=0.05),
    ],
    ids=["plain", "vf_clip_entropy", "target_kl"],
)
def test_fast_train_equals_stock_train_on_a_fixed_batch(core, options):
    stock = assert_fast_train_equals_stock_train(core, options, noise=0.0 if "target_kl" in options else 0.3)
    if "target_kl" in options:
        assert stock._n_updates == 2  # stepped in epoch 0, stopped in epoch 1


BOX_2X2 = spaces.Box(-1.0, 1.0, (2, 2), np.float32)


@pytest.mark.parametrize(
    "core,options,policy,env_kwargs",
    [
        ("ur", {}, MultiInputGatedPolicy, dict(observation_space=DICT_SPACE)),
        ("lstm", {}, MlpGatedPolicy, dict(action_space=BOX_2X2)),
        ("chrono", {}, MlpGatedPolicy, dict(action_space=spaces.MultiDiscrete([2, 3]))),
        ("r", dict(use_sde=True, clip_range_vf=0.2), MlpGatedPolicy, dict(action_space=BOX_2X2)),
    ],
    ids=["dict_obs", "box2x2", "multidiscrete", "gsde_value_clipping"],
)
@pytest.mark.parametrize("other_core", [None, "gru", "urgru"], ids=["case_core", "gru", "urgru"])
def test_fast_train_equals_stock_train_on_every_space_and_option(core, options, policy, env_kwargs, other_core):
    assert_fast_train_equals_stock_train(other_core or core, options, policy=policy, env_kwargs=env_kwargs)


def test_a_one_transition_minibatch_is_not_normalised():
    # The std of one advantage is NaN: normalising it made the loss, then every parameter, NaN.
    model = fast_model("ur")
    batch, _ = fixed_batch(model.policy, n_seq=3)
    one = SequenceSamples(
        *(t[:1] for t in batch[:2]),
        *(t[:1] for t in batch[2:6]),
        RNNStates(*(tuple(s[:, :1] for s in pair) for pair in batch.lstm_states)),
        batch.episode_starts[:1],
    )
    normalised, _ = model._minibatch_loss(one, clip_range=0.2, clip_range_vf=None)
    model.normalize_advantage = False
    plain, _ = model._minibatch_loss(one, clip_range=0.2, clip_range_vf=None)
    assert th.isfinite(normalised) and normalised == plain
    model.normalize_advantage = True
    model.rollout_buffer.sequence_minibatches = lambda batch_size: iter([one])
    model.set_logger(configure(None, [""]))
    model.train()
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_default_adam_runs_fused_and_a_users_choice_is_kept(tmp_path):
    model = fast_model("ur")
    optimizer = model.policy.optimizer
    assert isinstance(optimizer, th.optim.Adam) and optimizer.defaults["fused"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.policy.parameters()}
    assert optimizer.defaults["eps"] == 1e-5  # stock's Adam keywords kept
    model.learn(16)
    model.save(tmp_path / "fast.zip")
    stock = RecurrentPPO.load(tmp_path / "fast.zip", env=toy_vec_env())
    stock.learn(16, reset_num_timesteps=False)  # the saved optimizer state trains under stock too
    chosen = fast_model("ur", policy_kwargs=dict(optimizer_kwargs=dict(eps=1e-5, foreach=False)))
    assert not chosen.policy.optimizer.defaults["fused"] and chosen.policy.optimizer.defaults["foreach"] is False


def test_without_a_fused_cpu_adam_the_policys_own_adam_trains(monkeypatch):
    # torch 2.3 (which pyproject allows) has no fused Adam on CPU: its constructor raises this RuntimeError.
    real_init = th.optim.Adam.__init__

    def torch_2_3_init(self, params, *args, fused=None, **kwargs):
        if fused:
            raise RuntimeError(
                "`fused=True` requires all the params to be floating point Tensors of supported devices: ['cuda']."
            )
        real_init(self, params, *args, fused=fused, **kwargs)

    monkeypatch.setattr(th.optim.Adam, "__init__", torch_2_3_init)
    model = fast_model("ur")
    optimizer = model.policy.optimizer
    assert isinstance(optimizer, th.optim.Adam) and not optimizer.defaults["fused"]
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.policy.parameters()}
    before = model.policy.lstm_actor.weight_hh_l0.clone()
    model.learn(16)
    assert not th.equal(before, model.policy.lstm_actor.weight_hh_l0)


def test_divisors_are_every_divisor_in_order_and_fast_for_huge_rollouts():
    from agents.ppo.buffers import _divisors

    for n in range(1, 500):
        assert _divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
    assert plan_sequences(200_000_064, 64, 200_000_064 * 8) == 200_000_064  # trial division to the square root
