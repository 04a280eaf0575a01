"""gymnasium-robotics, imported once and quietly, with its environments registered.

gymnasium-robotics 1.2.1-1.4.2 print a notice about Adroit reward changes to stderr on
import. No offrl environment is affected, and the line would bury offrl's own one-line
errors, so every offrl module imports gymnasium-robotics through here.
"""

import contextlib
import io

import gymnasium as gym

with contextlib.redirect_stderr(io.StringIO()):
    import gymnasium_robotics

gym.register_envs(gymnasium_robotics)

__all__ = ["gymnasium_robotics"]
