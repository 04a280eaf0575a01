"""Agent registry: name -> (agent class, default config).

Every agent is an immutable pytree (`flax.struct.PyTreeNode`) with
    Agent.create(config, example_batch, key) -> agent
    agent.update(batch) -> (agent, info)          # info: dict of scalars to log
    agent.sample_actions(observations, key, deterministic=False) -> actions
and beside it a frozen dataclass config, `CONFIG_CLASS`, whose fields are declared with
`offrl.config.option(default, doc)` (the doc is what `scripts/train.py --help` prints), and
`DEFAULT_CONFIG = dataclasses.asdict(CONFIG_CLASS())`, the flat dict the rest of offrl reads
(its keys must not clash with the run settings). The training loop only ever calls
these, so it can `lax.scan` over updates and `vmap` over seeds for any agent.
Optional class attributes the loop reads:
    online: bool = False          # collects its own episodes instead of reading a dataset
    sample_batch(buffer, key, config) -> batch   # staticmethod; default uniform rows
    batchable_hparams: tuple[str, ...] = ()      # config keys held as arrays in the agent state
                                                 # (not static config), which --vmap may batch
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> (module, class name, config overrides applied on top of the module's DEFAULT_CONFIG)
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


def get_agent(name: str) -> tuple[type, dict[str, Any]]:
    """The agent class and its default config (a fresh dict the caller may modify)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown agent {name!r}; valid agents: {', '.join(agent_names())}")
    module_name, class_name, overrides = REGISTRY[name]
    module = importlib.import_module(module_name)
    config = dict(module.DEFAULT_CONFIG)
    config.update(overrides)
    return getattr(module, class_name), config


def agent_config_class(name: str) -> type:
    """The frozen dataclass that declares the agent's hyperparameters (types, defaults, docs)."""
    if name not in REGISTRY:
        raise ValueError(f"unknown agent {name!r}; valid agents: {', '.join(agent_names())}")
    return importlib.import_module(REGISTRY[name][0]).CONFIG_CLASS
