"""Environments: the Env contract and the built-ins (long_short, single_turn).

Write your own by subclassing ``Env`` and decorating it with ``@register_env("name")``; a recipe then
uses it as ``env.name: name``.
"""
from envs.base import Env, StepResult, register_env
from envs.long_short import LongShortEnv
from envs.single_turn import SingleTurnEnv

__all__ = ["Env", "StepResult", "register_env", "LongShortEnv", "SingleTurnEnv"]
