"""Agents: the Agent contract and the built-in agents (long, short, single, skip).

Write your own by subclassing ``Agent`` and decorating it with ``@register_agent("name")``; a recipe
then uses it as ``agents.<role>.type: name``.
"""
from agents.base import SEPARATOR, Agent, FormatResult, View, register_agent, vocab_key
from agents.long_short import LongThoughtAgent, ShortThoughtAgent
from agents.single import SingleAgent
from agents.skip import SkipAgent

__all__ = ["Agent", "FormatResult", "View", "SEPARATOR", "register_agent", "vocab_key",
           "LongThoughtAgent", "ShortThoughtAgent", "SingleAgent", "SkipAgent"]
