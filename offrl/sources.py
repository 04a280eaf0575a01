"""Data sources, the only thing that differs between agents: a fixed dataset on the device
(`DatasetSource`, offline agents) or episodes collected from a vector env between updates
(`offrl.online.EpisodeSource`, online). The runner calls `train` and never looks at the data."""

from __future__ import annotations

import sys
from typing import Any, Callable, Protocol

import jax
import jax.numpy as jnp
import numpy as np

from offrl import config as cfg
from offrl.buffer import ReplayBuffer, observation_statistics
from offrl.experiment import Experiment
from offrl.loop import LoopState, make_seeds_train_chunk, replicate
from offrl.online import EpisodeSource
from offrl.transitions import Transitions, normalize_observations


class DataSource(Protocol):
    description: str  # "on <data> (<size>)", for the run's first line
    example_batch: dict[str, np.ndarray]  # the rows agents are created from (their shapes go into checkpoints)
    updates_per_call: int  # updates between two returns to Python (the logging interval)
    reference_actions: np.ndarray | None  # data actions drawn beside the policy's at evaluation (2-D actions), or None

    def prepare(self, state: LoopState) -> LoopState:
        """A member's fresh state made ready for this data (e.g. the dataset's normalizer)."""

    def train(self, state: LoopState, length: int) -> tuple[LoopState, dict[str, jax.Array], list[dict[str, float]]]:
        """`length` updates of every member (leading seed axis of `state`): the new state, the
        updates' info ([members, length] per metric) and each member's extra metrics."""

    def summary(self, steps: int) -> dict[str, Any]:
        """What the source adds to a finished run's summary."""

    def close(self) -> None:
        """Release envs and other resources."""


def data_source(experiment: Experiment, transitions: Transitions | None = None) -> DataSource:
    """The experiment's data (see `offrl.experiment.load_data`) as a source of batches;
    `transitions` replace the dataset's rows."""
    if transitions is not None:
        check_replacement(experiment.transitions, transitions)
    if experiment.online:
        return EpisodeSource(experiment.config, experiment.spec, experiment.agent_cls)
    return DatasetSource(experiment, transitions)


def normalize_transitions(transitions: Transitions, mean: np.ndarray, std: np.ndarray) -> Transitions:
    return Transitions(
        **{
            **transitions.as_dict(),
            "observations": normalize_observations(transitions.observations, mean, std),
            "next_observations": normalize_observations(transitions.next_observations, mean, std),
        }
    )


class DatasetSource:
    """A fixed dataset on the device (`ReplayBuffer`, copied to every device): each chunk is
    one jitted `lax.scan` of updates over the seed axis, sampling its batches from it."""

    def __init__(self, experiment: Experiment, transitions: Transitions | None = None) -> None:
        config, spec = experiment.config, experiment.spec
        transitions = experiment.transitions if transitions is None else transitions
        if spec.env_factory is None:
            raise cfg.ConfigError(
                f"dataset {spec.name!r} has no known evaluation env; give one with --env ENV_ID (a gymnasium id, e.g. Hopper-v5)"
            )
        if config.get("reward_shift", 0.0):
            # Without terminals a constant shift moves every Q by shift / (1 - gamma) and leaves
            # the optimal policy alone; it changes where the critic starts relative to its targets.
            transitions = Transitions(**{**transitions.as_dict(), "rewards": transitions.rewards + config["reward_shift"]})
        self.normalizer: tuple[np.ndarray, np.ndarray] | None = None
        if config["normalize_observations"]:
            self.normalizer = observation_statistics(transitions.observations)
            transitions = normalize_transitions(transitions, *self.normalizer)
        rows = np.random.default_rng(config["seed"]).choice(
            len(transitions), size=min(len(transitions), config["example_batch_size"]), replace=False
        )
        self.example_batch = transitions[np.sort(rows)].as_dict()
        self.description = f"on {config['dataset']} ({len(transitions)} transitions)"
        if config["batch_size"] > len(transitions):  # allowed: `ReplayBuffer.sample` draws rows with replacement
            print(f"offrl: warning: batch_size {config['batch_size']} is larger than the {len(transitions)} rows of "
                  f"{config['dataset']}; batches sample rows with replacement, so each repeats rows", file=sys.stderr)
        self.updates_per_call = int(config["updates_per_call"])
        self.reference_actions = (
            transitions.actions[np.random.default_rng(0).choice(len(transitions), 2000)] if transitions.action_dim == 2 else None
        )
        self.buffer = replicate(ReplayBuffer.from_transitions(transitions))
        self.agent_cls = experiment.agent_cls
        self.chunks: dict[int, Callable] = {}  # one compiled chunk per length

    def prepare(self, state: LoopState) -> LoopState:
        if self.normalizer is None:
            return state
        return state.replace(obs_mean=jnp.asarray(self.normalizer[0]), obs_std=jnp.asarray(self.normalizer[1]))

    def train(self, state: LoopState, length: int) -> tuple[LoopState, dict[str, jax.Array], list[dict[str, float]]]:
        if length not in self.chunks:
            self.chunks[length] = make_seeds_train_chunk(self.agent_cls, length)
        state, info = self.chunks[length](state, self.buffer)
        return state, info, [{} for _ in range(int(state.step.shape[0]))]

    def summary(self, steps: int) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def check_replacement(dataset: Transitions | None, replacement: Transitions) -> None:
    if dataset is None:
        raise cfg.ConfigError("transitions replace an offline dataset's rows; this agent has no dataset")
    for name in ("observations", "actions"):
        if getattr(dataset, name).shape[1:] != getattr(replacement, name).shape[1:]:
            raise cfg.ConfigError(
                f"the given transitions' {name} have shape {getattr(replacement, name).shape[1:]} per row, but "
                f"the dataset has {getattr(dataset, name).shape[1:]}"
            )
