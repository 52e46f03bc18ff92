"""benchmarks/throughput.py: the products' operation count per env step that its grid table reports."""

import torch

from agents.run import factory
from agents.run.config import load_config
from benchmarks.throughput import flop_per_step, product_rate, product_weights
from policies import kernels


def _policy(*overrides: str):
    cfg = load_config("minigrid", "MiniGrid-MemoryS7-v0", ["n_envs=2", *overrides])
    return factory.build_model(cfg, factory.make_training_env(cfg)).policy


def test_product_weights_counts_the_core_and_heads_by_hand_and_skips_the_bag():
    # core: input projection 4H x F and recurrent 4H x H; heads: actor 128->64->64->3, critic 128->64->64->1
    heads = (128 * 64 + 64 * 64 + 64 * 3) + (128 * 64 + 64 * 64 + 64 * 1)
    assert product_weights(_policy()) == 512 * 128 + 512 * 128 + heads
    small = _policy("policy_kwargs.lstm_hidden_size=64", "policy_kwargs.features_extractor_kwargs.features_dim=32")
    heads = (64 * 64 + 64 * 64 + 64 * 3) + (64 * 64 + 64 * 64 + 64 * 1)
    assert product_weights(small) == 256 * 32 + 256 * 64 + heads


def test_presence_rows_are_a_product():
    plain = product_weights(_policy())
    with_presence = product_weights(_policy("policy_kwargs.features_extractor_kwargs.presence=true"))
    extractor = _policy("policy_kwargs.features_extractor_kwargs.presence=true").features_extractor
    assert with_presence - plain == extractor.n_triples * 128


def test_flop_per_step_and_product_rate():
    assert flop_per_step(10, n_epochs=4) == 2 * 10 + 4 * 6 * 10
    torch.set_num_threads(1)
    assert 0.1 < product_rate(64, 32, 64, seconds=0.05) < 1e4
    assert 0.1 < product_rate(64, 32, 64, seconds=0.05, product=kernels.matmul) < 1e4
