"""policies.recurrent: the gated policies inside stock sb3-contrib RecurrentPPO, and the one-call sequence path."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import RecurrentActorCriticPolicy
from sb3_contrib.common.recurrent.type_aliases import RNNStates
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from policies import (
    CORE_NAMES,
    CnnGatedPolicy,
    GatedGRU,
    MlpGatedPolicy,
    MultiInputGatedPolicy,
    PolicyConfigError,
    RefineGRU,
    make_core,
    recurrent,
)
from policies.cores import GatedLSTM, RefineLSTM
from policies.kernels import DISABLE_ENV
from policies.recurrent import _runs_torch_kernel
from tests.recurrent_envs import DICT_SPACE, IMAGE_SPACE, play, toy_vec_env

OBS = spaces.Box(-1.0, 1.0, (3,), np.float32)
ACT = spaces.Discrete(2)
TINY = dict(lstm_hidden_size=8, net_arch=dict(pi=[8], vf=[8]))


def lr(_progress: float) -> float:
    return 1e-3


def tiny_model(core: str, policy=MlpGatedPolicy, env=None, algo=RecurrentPPO, seed: int = 0, **kwargs) -> RecurrentPPO:
    policy_kwargs = dict(TINY, core=core, **kwargs.pop("policy_kwargs", {}))
    env = env if env is not None else toy_vec_env()
    return algo(policy, env, n_steps=8, batch_size=8, n_epochs=1, seed=seed, policy_kwargs=policy_kwargs, **kwargs)


def rollout_predictions(model, n_steps: int = 12, seed: int = 3):
    """Deterministic actions and final states of ``model.predict`` carried over a toy episode stream."""
    actions, _, state = play(model, toy_vec_env(n_envs=2, seed=seed), n_steps)
    return actions, state


# --- stock RecurrentPPO with every core ------------------------------------------------------------------------


@pytest.mark.parametrize("core", CORE_NAMES)
def test_stock_recurrent_ppo_trains_predicts_saves_and_loads(core, tmp_path):
    model = tiny_model(core)
    model.learn(16)
    assert model.policy.lstm_actor.core_name == core
    actions, state = rollout_predictions(model)
    model.save(tmp_path / "agent.zip")
    loaded = RecurrentPPO.load(tmp_path / "agent.zip")
    assert type(loaded.policy.lstm_actor) is type(model.policy.lstm_actor)
    assert loaded.policy.lstm_actor.core_name == core
    actions2, state2 = rollout_predictions(loaded)
    np.testing.assert_array_equal(actions, actions2)
    np.testing.assert_array_equal(state[0], state2[0])
    np.testing.assert_array_equal(state[1], state2[1])


def test_lstm_core_reproduces_stock_mlp_lstm_policy_exactly():
    """Same seed and kwargs: core="lstm" builds MlpLstmPolicy's parameters and leaves the random stream alike."""
    kwargs = dict(TINY, n_lstm_layers=2, enable_critic_lstm=True)
    stock = RecurrentPPO("MlpLstmPolicy", toy_vec_env(), seed=5, policy_kwargs=kwargs)
    draw_stock = th.rand(3)
    ours = RecurrentPPO(MlpGatedPolicy, toy_vec_env(), seed=5, policy_kwargs=dict(kwargs, core="lstm"))
    draw_ours = th.rand(3)
    a, b = stock.policy.state_dict(), ours.policy.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert th.equal(a[k], b[k]), k
    assert th.equal(draw_stock, draw_ours)


# --- every stock keyword keeps its meaning ---------------------------------------------------------------------


class TinyExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space, features_dim: int = 5):
        super().__init__(observation_space, features_dim)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(observation_space.shape)), features_dim))

    def forward(self, obs):
        return self.net(obs)


KEYWORD_CASES = {
    "shared_lstm": dict(shared_lstm=True, enable_critic_lstm=False),
    "two_layers_dropout": dict(
        enable_critic_lstm=True, lstm_hidden_size=4, n_lstm_layers=2, lstm_kwargs=dict(dropout=0.5)
    ),
    "separate_extractors": dict(enable_critic_lstm=False, lstm_hidden_size=4, share_features_extractor=False),
    "arch_activation_ortho": dict(net_arch=dict(pi=[7, 5], vf=[6]), activation_fn=nn.ReLU, ortho_init=False),
    "extractor": dict(features_extractor_class=TinyExtractor, features_extractor_kwargs=dict(features_dim=5)),
    "sde": dict(use_sde=True, log_std_init=-1.0, full_std=False),
}


@pytest.mark.parametrize("case", KEYWORD_CASES)
def test_stock_keywords_build_the_same_policy_as_stock(case):
    """With core="lstm" every keyword gives stock's policy, parameter for parameter; other cores share its layout
    outside the core (the core's own layout is tested in tests/test_cores.py and tests/test_gru.py)."""
    kwargs = KEYWORD_CASES[case]
    action_space = spaces.Box(-1.0, 1.0, (2,), np.float32) if kwargs.get("use_sde") else ACT
    th.manual_seed(0)
    stock = RecurrentActorCriticPolicy(OBS, action_space, lr, **kwargs)
    for core in CORE_NAMES:
        th.manual_seed(0)
        ours = MlpGatedPolicy(OBS, action_space, lr, core=core, **kwargs)
        a, b = stock.state_dict(), ours.state_dict()
        assert list(a) == list(b)

        def shapes(d):
            return {k: v.shape for k, v in d.items() if not k.startswith(("lstm_actor.", "lstm_critic."))}

        assert shapes(a) == shapes(b)
        if core == "lstm":
            for k in a:
                assert th.equal(a[k], b[k]), k
        assert ours.lstm_actor.num_layers == kwargs.get("n_lstm_layers", 1)
        assert ours.lstm_actor.hidden_size == kwargs.get("lstm_hidden_size", 256)
        assert (ours.lstm_critic is not None) == kwargs.get("enable_critic_lstm", True)
        assert ours.shared_lstm == kwargs.get("shared_lstm", False)
        assert ours.lstm_actor.input_size == ours.features_dim
        assert [type(m) for m in ours.mlp_extractor.policy_net] == [type(m) for m in stock.mlp_extractor.policy_net]
        assert [type(m) for m in ours.mlp_extractor.value_net] == [type(m) for m in stock.mlp_extractor.value_net]
        if "lstm_kwargs" in kwargs:
            assert ours.lstm_actor.dropout == 0.5


def test_stock_assertion_shared_and_critic_lstm_still_fires():
    with pytest.raises(AssertionError):
        MlpGatedPolicy(OBS, ACT, lr, shared_lstm=True, enable_critic_lstm=True)
    with pytest.raises(AssertionError):
        MlpGatedPolicy(OBS, ACT, lr, shared_lstm=True, enable_critic_lstm=False, share_features_extractor=False)


def test_dropout_between_layers_is_active_in_training_mode_only():
    policy = MlpGatedPolicy(
        OBS, ACT, lr, core="ur", lstm_hidden_size=16, n_lstm_layers=2, lstm_kwargs=dict(dropout=0.5)
    )
    x, starts = th.randn(12, 3), th.zeros(12)
    z = th.zeros(2, 2, 16)
    policy.set_training_mode(False)
    a = policy._process_sequence(x, (z, z), starts, policy.lstm_actor)[0]
    assert th.equal(a, policy._process_sequence(x, (z, z), starts, policy.lstm_actor)[0])
    policy.set_training_mode(True)
    assert not th.equal(a, policy._process_sequence(x, (z, z), starts, policy.lstm_actor)[0])


@pytest.mark.parametrize(
    "kwargs, words",
    [
        (dict(core="gruu"), "unknown core 'gruu' \\(did you mean 'gru'\\?\\)"),
        (dict(core="ur", core_kwargs=dict(t_max=10)), "t_max"),
        (dict(core="chrono", core_kwargs=[("t_max", 10)]), "core_kwargs must be a dict"),
        (dict(lstm_kwargs=dict(batch_first=True)), "batch_first"),
        (dict(lstm_kwargs=dict(bidirectional=True)), "lstm_kwargs"),
        (dict(lstm_kwargs="dropout"), "lstm_kwargs must be a dict"),
    ],
)
def test_bad_policy_keywords_raise_one_clear_error(kwargs, words):
    with pytest.raises(PolicyConfigError, match=words):
        MlpGatedPolicy(OBS, ACT, lr, **kwargs)


def test_core_kwargs_reach_the_core_and_survive_save(tmp_path):
    policy = MlpGatedPolicy(OBS, ACT, lr, core="chrono", core_kwargs=dict(t_max=40), lstm_hidden_size=6)
    assert policy.lstm_actor.t_max == 40
    policy.save(tmp_path / "p.pt")
    assert MlpGatedPolicy.load(tmp_path / "p.pt").lstm_critic.t_max == 40


def test_normalize_images_keeps_its_meaning():
    channel_first = spaces.Box(0, 255, (3, 40, 40), np.uint8)  # as RecurrentPPO's VecTransposeImage hands it over
    image_obs = th.full((1, 3, 40, 40), 255.0)
    for normalize in (True, False):
        policy = CnnGatedPolicy(channel_first, ACT, lr, core="u", normalize_images=normalize, lstm_hidden_size=4)
        assert policy.normalize_images is normalize
        assert policy._get_constructor_parameters()["normalize_images"] is normalize
        seen = {}
        policy.features_extractor.register_forward_pre_hook(lambda _m, args, seen=seen: seen.update(x=args[0]))
        policy.extract_features(image_obs)
        assert seen["x"].max().item() == (1.0 if normalize else 255.0)


# --- the optimizer trains the core -----------------------------------------------------------------------------


@pytest.mark.parametrize("core", CORE_NAMES)
def test_a_gradient_step_changes_the_core_parameters(core):
    model = tiny_model(core)
    policy = model.policy
    in_optimizer = {id(p) for g in policy.optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(p) for p in policy.parameters()}
    before = {k: v.clone() for k, v in policy.state_dict().items() if k.startswith(("lstm_actor", "lstm_critic"))}
    model.learn(8)
    after = policy.state_dict()
    for k, v in before.items():
        assert not th.equal(v, after[k]), f"{k} did not change"


# --- spaces, gSDE, truncation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "action_space",
    [
        spaces.Discrete(3),
        spaces.MultiDiscrete([2, 3]),
        spaces.Box(-1.0, 1.0, (2, 2), np.float32),
    ],
    ids=["discrete", "multidiscrete", "box2x2"],
)
def test_action_spaces(action_space):
    """Each action space gets its distribution, training reaches its action head, and a greedy action is the mode
    of the policy's distribution at the state carried so far (clipped to a Box's bounds, as SB3 does)."""
    from stable_baselines3.common.distributions import (
        CategoricalDistribution,
        DiagGaussianDistribution,
        MultiCategoricalDistribution,
    )

    model = tiny_model("ur", env=toy_vec_env(action_space=action_space))
    head = model.policy.action_net.weight.detach().clone()
    model.learn(16)
    assert not th.equal(head, model.policy.action_net.weight)
    kinds = {
        spaces.Discrete: CategoricalDistribution,
        spaces.MultiDiscrete: MultiCategoricalDistribution,
        spaces.Box: DiagGaussianDistribution,
    }
    assert isinstance(model.policy.action_dist, kinds[type(action_space)])
    env = toy_vec_env(action_space=action_space, seed=1)
    obs, starts = env.reset(), np.ones(2, dtype=bool)
    layers, _, hidden = model.policy.lstm_hidden_state_shape
    state = (np.zeros((layers, 2, hidden), np.float32),) * 2
    for _ in range(5):
        actions, new_state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        with th.no_grad():
            dist, _ = model.policy.get_distribution(
                model.policy.obs_to_tensor(obs)[0],
                tuple(th.as_tensor(s) for s in state),
                th.as_tensor(starts, dtype=th.float32),
            )
            mode = dist.get_actions(deterministic=True).numpy().reshape(actions.shape)
        if isinstance(action_space, spaces.Box):
            mode = np.clip(mode, action_space.low, action_space.high)
        np.testing.assert_allclose(actions, mode, rtol=1e-5, atol=1e-6)
        assert actions.shape == (2, *action_space.shape) and all(action_space.contains(a) for a in actions)
        obs, _, starts, _ = env.step(actions)
        state = new_state


def rollout_predictions_in(model, env, n_steps: int = 5):
    actions, _, state = play(model, env, n_steps)
    return actions, state


def test_gsde_with_value_clipping():
    box = spaces.Box(-1.0, 1.0, (2,), np.float32)
    model = tiny_model("lstm", env=toy_vec_env(action_space=box), use_sde=True, clip_range_vf=0.2, sde_sample_freq=4)
    policy = model.policy
    log_std = policy.log_std.detach().clone()
    model.learn(16)
    assert isinstance(policy.action_dist, StateDependentNoiseDistribution)
    assert policy.log_std.shape == (TINY["net_arch"]["pi"][-1], 2) and not th.equal(log_std, policy.log_std)
    assert model.logger.name_to_value["train/clip_range_vf"] == 0.2
    # gSDE's exploration is a function of the state, fixed until the noise is resampled.
    obs, state, starts = toy_vec_env(action_space=box, seed=4).reset(), None, np.ones(2, dtype=bool)
    policy.reset_noise()
    a1, _ = model.predict(obs, state=state, episode_start=starts, deterministic=False)
    a2, _ = model.predict(obs, state=state, episode_start=starts, deterministic=False)
    mean, _ = model.predict(obs, state=state, episode_start=starts, deterministic=True)
    policy.reset_noise()
    a3, _ = model.predict(obs, state=state, episode_start=starts, deterministic=False)
    np.testing.assert_array_equal(a1, a2)
    assert not np.allclose(a1, mean) and not np.allclose(a1, a3)


def test_dict_observations_with_evaluate_policy():
    """evaluate_policy on Dict observations returns the episodes a state-carrying rollout of the policy plays."""
    model = tiny_model("ur", policy=MultiInputGatedPolicy, env=toy_vec_env(observation_space=DICT_SPACE))
    model.learn(16)
    returns, lengths = evaluate_policy(
        model,
        toy_vec_env(n_envs=1, observation_space=DICT_SPACE, seed=2),
        n_eval_episodes=3,
        return_episode_rewards=True,
    )
    env = toy_vec_env(n_envs=1, observation_space=DICT_SPACE, seed=2)
    obs, state, start = env.reset(), None, np.ones(1, dtype=bool)
    episodes = []
    while len(episodes) < 3:
        action, state = model.predict(obs, state=state, episode_start=start, deterministic=True)
        obs, _, start, infos = env.step(action)
        if start[0]:
            episodes.append((infos[0]["episode"]["r"], infos[0]["episode"]["l"]))
    assert returns == pytest.approx([r for r, _ in episodes]) and lengths == [n for _, n in episodes]
    assert sum(lengths) > 3  # episodes longer than one step: the state was carried within them


def test_cnn_policy_on_40x40x3_images():
    env = toy_vec_env(observation_space=IMAGE_SPACE)
    model = tiny_model(
        "chrono", policy=CnnGatedPolicy, env=env, policy_kwargs=dict(features_extractor_kwargs=dict(features_dim=16))
    )
    convs = [m for m in model.policy.features_extractor.modules() if isinstance(m, nn.Conv2d)]
    before = [c.weight.detach().clone() for c in convs]
    model.learn(16)
    assert model.policy.lstm_actor.input_size == 16
    assert convs and all(
        not th.equal(b, c.weight) for b, c in zip(before, convs, strict=True)
    )  # trained through the core
    obs = env.reset()
    features = model.policy.extract_features(model.policy.obs_to_tensor(obs)[0], model.policy.features_extractor)
    assert features.shape == (2, 16)
    bright = model.policy.extract_features(
        model.policy.obs_to_tensor(np.full_like(obs, 255))[0], model.policy.features_extractor
    )
    assert not th.allclose(features, bright)  # the image reaches the features
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (2,)


def test_truncated_episodes_bootstrap_from_the_critic():
    """At a truncation, RecurrentPPO adds gamma * V(terminal observation) to the reward, V from the critic core
    carrying the episode's state."""
    model = tiny_model("ur", env=toy_vec_env(max_steps=3, terminate_prob=0.0), learning_rate=0.0)
    policy = model.policy
    bootstraps = []  # (terminal obs, value the rollout used, value recomputed through the critic core)
    original = policy.predict_values

    def recording(obs, lstm_states, episode_starts):
        value = original(obs, lstm_states, episode_starts)
        if obs.shape[0] == 1:  # the rollout's per-env call for a truncated episode
            assert not episode_starts.any() and all(s.abs().sum() > 0 for s in lstm_states)  # the episode's state
            out, _ = policy.lstm_critic(policy.extract_features(obs, policy.vf_features_extractor)[None], lstm_states)
            bootstraps.append(
                (obs.clone(), value.item(), policy.value_net(policy.mlp_extractor.forward_critic(out[0])))
            )
        return value

    class RawRewards(BaseCallback):
        def _on_step(self):
            raw.append(
                (self.locals["rewards"].copy(), [i.get("TimeLimit.truncated", False) for i in self.locals["infos"]])
            )
            terminal.append([i.get("terminal_observation") for i in self.locals["infos"]])
            return True

    raw, terminal = [], []
    policy.predict_values = recording
    model.learn(16, callback=RawRewards())  # one rollout: 8 steps x 2 envs, each env truncated at steps 3 and 6
    truncations = [(t, e) for t, (_, flags) in enumerate(raw) for e, flag in enumerate(flags) if flag]
    assert len(truncations) == 4 and len(bootstraps) == 4
    for (t, e), (obs, used, recomputed) in zip(truncations, bootstraps, strict=True):
        np.testing.assert_array_equal(obs.numpy()[0], terminal[t][e])
        assert used == pytest.approx(recomputed.item(), abs=1e-6)
        assert model.rollout_buffer.rewards[t, e] == pytest.approx(raw[t][0][e] + model.gamma * used, abs=1e-5)
    untouched = [(t, e) for t in range(8) for e in range(2) if (t, e) not in truncations]
    assert all(model.rollout_buffer.rewards[t, e] == pytest.approx(raw[t][0][e]) for t, e in untouched)


# --- saving, determinism, state handling -----------------------------------------------------------------------


def test_standalone_policy_save_and_load(tmp_path):
    kwargs = dict(
        core="chrono",
        core_kwargs=dict(t_max=30),
        lstm_hidden_size=6,
        n_lstm_layers=2,
        lstm_kwargs=dict(dropout=0.25),
        enable_critic_lstm=False,
        share_features_extractor=False,
        net_arch=dict(pi=[5], vf=[4]),
        activation_fn=nn.ReLU,
    )
    policy = MlpGatedPolicy(OBS, ACT, lr, **kwargs)
    policy.save(tmp_path / "policy.pt")
    loaded = MlpGatedPolicy.load(tmp_path / "policy.pt")
    a, b = policy.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(th.equal(a[k], b[k]) for k in a)
    obs = np.random.default_rng(0).uniform(-1, 1, (4, 3)).astype(np.float32)
    act1, st1 = policy.predict(obs, deterministic=True)
    act2, st2 = loaded.predict(obs, deterministic=True)
    np.testing.assert_array_equal(act1, act2)
    np.testing.assert_array_equal(st1[0], st2[0])


@pytest.mark.parametrize("core", ["lstm", "ur", "gru", "urgru"])
def test_two_seeded_runs_are_bit_identical(core):
    runs = []
    for _ in range(2):
        model = tiny_model(core, seed=7)
        model.learn(24)
        runs.append(play(model, model.get_env(), 20, deterministic=False)[:2])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("core", CORE_NAMES)
def test_predict_carries_and_resets_state_as_stock(core):
    th.manual_seed(0)
    policy = MlpGatedPolicy(OBS, ACT, lr, core=core, lstm_hidden_size=8, n_lstm_layers=2)
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (6, 2, 3)).astype(np.float32)
    starts = np.zeros((6, 2), dtype=bool)
    starts[0] = True
    starts[3, 1] = True
    state = None
    stepped = []
    for t in range(6):
        _, state = policy.predict(obs[t], state=state, episode_start=starts[t])
        stepped.append(state[0][-1].copy())
    # a reset with a carried state equals starting from no state
    _, fresh = policy.predict(obs[0], state=None)
    _, reset = policy.predict(obs[0], state=state, episode_start=np.ones(2, dtype=bool))
    np.testing.assert_array_equal(fresh[0], reset[0])
    # a carried state changes the next step
    _, carried = policy.predict(obs[0], state=state, episode_start=np.zeros(2, dtype=bool))
    assert not np.allclose(carried[0], fresh[0])
    # stepping with carried states equals one call over the whole sequence (stock's per-step semantics)
    z = th.zeros(2, 2, 8)
    with th.no_grad():
        feats = th.as_tensor(obs).swapaxes(0, 1).reshape(12, 3)
        out, _ = policy._process_sequence(
            feats, (z, z), th.as_tensor(starts.T.reshape(-1), dtype=th.float32), policy.lstm_actor
        )
    np.testing.assert_allclose(out.view(2, 6, 8).swapaxes(0, 1).numpy(), np.stack(stepped), atol=1e-6)


# --- the one-call sequence path against stock's per-step loop --------------------------------------------------


@pytest.mark.parametrize(
    "core,kernel", [(c, "on") for c in CORE_NAMES] + [("gru", "off"), ("ugru", "off")]
)  # kernel off: gru/ugru run nn.GRU's own forward, as on CUDA
@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("in_training", [False, True], ids=["core_resets", "training_reset_steps"])
def test_one_call_sequence_path_equals_stock_per_step(core, kernel, num_layers, in_training, monkeypatch):
    """Outputs equal and gradients within 1e-5 of stock's per-step loop, with starts at position 0 and inside.

    ``in_training`` runs it as evaluate_actions does (cores on torch's nn.LSTM/GRU kernel then run with inserted
    reset steps; gru/ugru take that path with the kernel disabled);
    otherwise the core's own ``episode_starts`` path runs and the final states are compared too.
    """
    if kernel == "off":
        monkeypatch.setenv(DISABLE_ENV, "1")
    th.manual_seed(1)
    policy = MlpGatedPolicy(OBS, ACT, lr, core=core, lstm_hidden_size=7, n_lstm_layers=num_layers)
    core_module = policy.lstm_actor
    n_seq, T = 4, 9
    features = th.randn(n_seq * T, 3, requires_grad=True)
    starts = th.zeros(n_seq, T)
    starts[0, 0] = 1  # starts an episode
    starts[1, 4] = 1  # reset inside
    starts[2, 0], starts[2, 2], starts[2, 8] = 1, 1, 1  # several, one at the last step
    starts = starts.flatten()
    hx = (th.randn(num_layers, n_seq, 7, requires_grad=True), th.randn(num_layers, n_seq, 7, requires_grad=True))
    params = [features, *hx, *core_module.parameters()]

    ref, ref_states = RecurrentActorCriticPolicy._process_sequence(features, hx, starts, core_module)
    out, states = policy._process_sequence(features, hx, starts, core_module, final_states_unused=in_training)
    th.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    weights = th.randn_like(ref)
    # A GRU core ignores c: nothing flows to it, on either path.
    g_ref = th.autograd.grad((ref * weights).sum(), params, allow_unused=True)
    g_out = th.autograd.grad((out * weights).sum(), params, allow_unused=True)
    for a, b, p in zip(g_ref, g_out, params, strict=True):
        assert (a is None) == (b is None) == (p is hx[1] and core in ("gru", "ugru", "urgru"))
        if a is not None:
            th.testing.assert_close(b, a, rtol=0, atol=1e-5)
    if in_training and _runs_torch_kernel(core_module, features):
        assert states is None
    else:
        for a, b in zip(ref_states, states, strict=True):
            th.testing.assert_close(b, a, rtol=0, atol=1e-6)


def test_evaluate_actions_on_sequences_with_resets_matches_stock_semantics():
    """The whole training forward (both cores) agrees with stock's per-step processing."""
    th.manual_seed(2)
    policy = MlpGatedPolicy(OBS, ACT, lr, core="lstm", lstm_hidden_size=5)
    n_seq, T = 3, 6
    obs = th.randn(n_seq * T, 3)
    actions = th.randint(0, 2, (n_seq * T,))
    starts = th.zeros(n_seq * T)
    starts[[0, 4, 9, 10]] = 1
    z = th.randn(1, n_seq, 5)
    states = RNNStates((z, z), (z, -z))
    values, log_prob, entropy = policy.evaluate_actions(obs, actions, states, starts)
    stock_step = RecurrentActorCriticPolicy._process_sequence
    policy._process_sequence = stock_step  # stock's evaluate_actions and per-step loop on the same cores
    v2, lp2, e2 = RecurrentActorCriticPolicy.evaluate_actions(policy, obs, actions, states, starts)
    th.testing.assert_close(values, v2, rtol=0, atol=1e-6)
    th.testing.assert_close(log_prob, lp2, rtol=0, atol=1e-6)
    th.testing.assert_close(entropy, e2, rtol=0, atol=1e-6)


def test_reset_step_path_drops_out_between_layers_in_training_only(monkeypatch):
    """The reset-step path applies the core's dropout to the second layer's inputs, as nn.LSTM does between
    layers, only in training; checked against layer-by-layer stepping with a deterministic stand-in for dropout."""
    th.manual_seed(3)
    core = make_core("lstm", 3, 6, num_layers=2, dropout=0.4)
    T, B = 7, 3
    x = th.randn(T, B, 3)
    starts = th.zeros(T, B)
    starts[2, 0], starts[4, 1], starts[1, 2], starts[5, 2] = 1, 1, 1, 1
    hx = (th.randn(2, B, 6), th.randn(2, B, 6))
    calls = []

    def dropout(inp, p, training):  # keeps the positive entries, scaled as dropout scales what it keeps
        calls.append((p, training))
        return th.where(inp > 0, inp / (1 - p), th.zeros_like(inp))

    def layer(k):
        single = nn.LSTM(6 if k else 3, 6)
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(single, f"{name}_l0").data.copy_(getattr(core, f"{name}_l{k}"))
        return single

    def stepped(inp, k):
        h, c, outs = hx[0][k : k + 1], hx[1][k : k + 1], []
        for t in range(T):
            keep = (1 - starts[t]).view(1, B, 1) if t else th.ones(1, B, 1)
            out, (h, c) = layer(k)(inp[t : t + 1], (h * keep, c * keep))
            outs.append(out[0])
        return th.stack(outs)

    monkeypatch.setattr(recurrent, "F", SimpleNamespace(dropout=dropout))
    with th.no_grad():
        for training, between in ((True, dropout), (False, lambda inp, p, training: inp)):
            core.train(training)
            calls.clear()
            got = recurrent._outputs_with_reset_steps(core, x, hx, starts)
            assert calls == ([(0.4, True)] if training else [])
            want = stepped(between(stepped(x, 0), 0.4, True), 1)
            th.testing.assert_close(got, want.transpose(0, 1).reshape(B * T, 6), rtol=0, atol=1e-6)


def test_cores_are_the_registry_classes():
    assert isinstance(MlpGatedPolicy(OBS, ACT, lr, core="u", lstm_hidden_size=4).lstm_actor, GatedLSTM)
    assert isinstance(MlpGatedPolicy(OBS, ACT, lr, lstm_hidden_size=4).lstm_actor, RefineLSTM)  # default core "ur"
    assert isinstance(MlpGatedPolicy(OBS, ACT, lr, core="ugru", lstm_hidden_size=4).lstm_actor, GatedGRU)
    assert isinstance(MlpGatedPolicy(OBS, ACT, lr, core="urgru", lstm_hidden_size=4).lstm_actor, RefineGRU)


@pytest.mark.parametrize("value_grad", [False, True])
def test_shared_lstm_value_grad_decides_whether_the_value_loss_trains_the_shared_core(value_grad):
    """With shared_lstm, stock stops the value gradient at the core's output; shared_lstm_value_grad lets it through
    (the value is the same number either way)."""
    th.manual_seed(4)
    kwargs = dict(core="ur", shared_lstm=True, enable_critic_lstm=False, lstm_hidden_size=6)
    policy = MlpGatedPolicy(OBS, ACT, lr, shared_lstm_value_grad=value_grad, **kwargs)
    n_seq, T = 2, 5
    obs, actions, starts = th.randn(n_seq * T, 3), th.randint(0, 2, (n_seq * T,)), th.zeros(n_seq * T)
    z = th.zeros(1, n_seq, 6)
    states = RNNStates((z, z), (z, z))
    values, _, _ = policy.evaluate_actions(obs, actions, states, starts)
    values.sum().backward()
    core_grads = [p.grad for p in policy.lstm_actor.parameters()]
    if value_grad:
        assert all(g is not None and g.abs().sum() > 0 for g in core_grads)
    else:
        assert all(g is None or g.abs().sum() == 0 for g in core_grads)
    assert policy.value_net.weight.grad.abs().sum() > 0
    th.manual_seed(4)
    stock_values, _, _ = MlpGatedPolicy(OBS, ACT, lr, **kwargs).evaluate_actions(obs, actions, states, starts)
    th.testing.assert_close(values, stock_values)
    assert policy._get_constructor_parameters()["shared_lstm_value_grad"] is value_grad


def test_shared_lstm_value_grad_needs_shared_lstm():
    with pytest.raises(PolicyConfigError, match="shared_lstm_value_grad=True needs shared_lstm=True"):
        MlpGatedPolicy(OBS, ACT, lr, shared_lstm_value_grad=True)


@pytest.mark.parametrize(
    "case",
    [
        dict(),
        dict(shared_lstm=True, enable_critic_lstm=False),
        dict(shared_lstm=True, enable_critic_lstm=False, shared_lstm_value_grad=True),
        dict(enable_critic_lstm=False),
    ],
    ids=["critic_core", "shared", "shared_value_grad", "mlp_critic"],
)
@pytest.mark.parametrize("n_actions", [2, 5])
def test_forward_samples_the_same_actions_as_stock_from_the_same_random_stream(case, n_actions):
    """The categorical fast path of ``forward`` against stock's (a Categorical distribution per call)."""
    policy = MlpGatedPolicy(OBS, spaces.Discrete(n_actions), lr, core="ur", **dict(TINY, **case))
    obs = th.randn(64, 3) * 3
    starts = (th.rand(64) < 0.3).float()
    states = RNNStates((th.randn(1, 64, 8), th.randn(1, 64, 8)), (th.randn(1, 64, 8), th.randn(1, 64, 8)))
    for deterministic in (False, True):
        outs, after = [], []
        for forward in (lambda *a, **k: RecurrentActorCriticPolicy.forward(policy, *a, **k), policy.forward):
            th.manual_seed(11)
            with th.no_grad():
                outs.append(forward(obs, states, starts, deterministic=deterministic))
            after.append(th.rand(4))
        (a_stock, v_stock, lp_stock, s_stock), (a_ours, v_ours, lp_ours, s_ours) = outs
        assert a_stock.dtype == a_ours.dtype and a_stock.shape == a_ours.shape == (64,)
        assert th.equal(a_stock, a_ours) and th.equal(v_stock, v_ours) and th.equal(lp_stock, lp_ours)
        for x, y in zip((*s_stock.pi, *s_stock.vf), (*s_ours.pi, *s_ours.vf), strict=True):
            assert th.equal(x, y)
        assert th.equal(after[0], after[1])  # the same draws were taken from the random stream
    assert len(set(a_ours.tolist())) > 1  # the sampled actions are not all one


def test_forward_keeps_stock_for_continuous_actions(monkeypatch):
    policy = MlpGatedPolicy(OBS, spaces.Box(-1, 1, (2,), np.float32), lr, core="ur", **TINY)
    called = []
    original = RecurrentActorCriticPolicy.forward
    monkeypatch.setattr(RecurrentActorCriticPolicy, "forward", lambda *a, **k: called.append(1) or original(*a, **k))
    states = RNNStates((th.zeros(1, 4, 8), th.zeros(1, 4, 8)), (th.zeros(1, 4, 8), th.zeros(1, 4, 8)))
    actions, _, _, _ = policy(th.zeros(4, 3), states, th.zeros(4))
    assert called and actions.shape == (4, 2)
