"""Agents, and the one contract the runner relies on (`Agent`).

An agent is one module here: an immutable pytree (`flax.struct.PyTreeNode`) and its config
class, whose fields are declared with `offrl.config.option(...)` (doc, range or choices, and
`batchable=True` for the numbers `--vmap` may batch) under `@offrl.config.config_class`.
The agent keeps that config as a pytree field, so a batched field is an array inside the
jitted update and a --vmap member's value reaches the code that reads `self.config.name`
with no other plumbing. Adding an agent is its module plus one line in `REGISTRY`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, ClassVar, Protocol

import jax


class Agent(Protocol):
    """What the runner calls. Optional class attributes it reads:
    `online = True` (collects its own episodes instead of reading a dataset) and
    `sample_batch(buffer, key, config) -> batch` (a staticmethod; default: `config.batch_size`
    uniform rows)."""

    config_class: ClassVar[type]
    config: Any

    @classmethod
    def create(cls, config: Any, example_batch: dict[str, jax.Array], key: jax.Array) -> Agent: ...

    def update(self, batch: dict[str, jax.Array]) -> tuple[Agent, dict[str, jax.Array]]: ...

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = False) -> jax.Array: ...


# name -> (module, class name, config overrides applied on top of the config class's defaults)
REGISTRY: dict[str, tuple[str, str, dict[str, Any]]] = {
    "iql-awr": ("offrl.agents.iql", "IQLAgent", {"extraction": "awr"}),
    "iql-ddpg": ("offrl.agents.iql", "IQLAgent", {"extraction": "ddpg"}),
    "iql-dawr": ("offrl.agents.iql", "IQLAgent", {"extraction": "dawr"}),
    "reinforce": ("offrl.agents.reinforce", "ReinforceAgent", {}),
    "sr": ("offrl.agents.sr", "SRAgent", {}),
    "fb": ("offrl.agents.fb", "FBAgent", {}),
    "td3bc": ("offrl.agents.td3bc", "TD3BCAgent", {}),
    "bc": ("offrl.agents.bc", "BCAgent", {}),
}


def agent_names() -> list[str]:
    return sorted(REGISTRY)


def agent_class(name: str) -> type[Agent]:
    if name not in REGISTRY:
        raise ValueError(f"unknown agent {name!r}; valid agents: {', '.join(agent_names())}")
    module_name, class_name, _ = REGISTRY[name]
    return getattr(importlib.import_module(module_name), class_name)


def get_agent(name: str) -> tuple[type[Agent], dict[str, Any]]:
    """The agent class and its default config as a flat dict (a fresh one the caller may modify)."""
    cls = agent_class(name)
    return cls, {**dataclasses.asdict(cls.config_class()), **REGISTRY[name][2]}


def agent_config_class(name: str) -> type:
    """The config class that declares the agent's hyperparameters (types, defaults, docs, ranges)."""
    return agent_class(name).config_class

