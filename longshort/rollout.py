"""The rollout runner: N problems x G samples through an env, every pending turn batched.

Each episode is a coroutine that loops "ask the env who acts, render that agent's view, await its
engine, hand the turn to the env". All episodes run at once on one event loop, so whenever several
episodes wait for the same engine, the engine decodes their turns in one batch: a rollout of 32
episodes costs about as many forward passes as one batch of 32 generations per turn.

The runner binds one engine to each agent. Agents that share a model share an engine (and its
batches); agents with different models each get their own. Finished episodes are graded with
``longshort.verify``, scored by the reward terms of the recipe, and returned as ``Episode`` records,
which convert to per-agent training samples.
"""
from __future__ import annotations

import asyncio
import dataclasses
import itertools
from typing import Callable, Mapping, Sequence

from agents.base import Agent, vocab_key
from envs.base import Env
from longshort.config import Config
from longshort.data import Problem
from longshort.engines import model_thread
from longshort.engines.base import Engine, SamplingParams, SessionEngine
from longshort.registry import AGENTS, ENVS
from longshort.episode import Episode, TrainingSample, Turn
from longshort.rewards import RewardContext, score_group
from longshort.verify import Verifier

ProgressCallback = Callable[[Episode], None]


class RolloutRunner:
    def __init__(self, env_factory: Callable[[], Env], agents: Mapping[str, Agent], engines: Mapping[str, Engine],
                 *, verifier: Verifier | None = None, reward_weights: Mapping[str, Mapping[str, float]] | None = None,
                 reward_context: RewardContext | None = None):
        missing = [role for role in agents if role not in engines]
        if missing:
            raise ValueError(f"no engine bound to agent(s) {', '.join(missing)}")
        self.env_factory = env_factory
        self.agents = dict(agents)
        self.engines = dict(engines)
        self.verifier = verifier or Verifier()
        self.reward_weights = reward_weights or {}
        self.reward_context = reward_context or RewardContext(agents=self.agents)
        self._sessions = itertools.count()  # episode numbers: one engine session per episode and agent

    # ------------------------------------------------------------------ rollouts
    def run(self, problems: Sequence[Problem], group_size: int = 1,
            on_episode: ProgressCallback | None = None) -> list[list[Episode]]:
        """Blocking entry point: one group of ``group_size`` episodes per problem, in problem order."""
        return model_thread.run(self.arun(problems, group_size, on_episode))

    async def arun(self, problems: Sequence[Problem], group_size: int = 1,
                   on_episode: ProgressCallback | None = None) -> list[list[Episode]]:
        async def one(problem: Problem, index: int) -> Episode:
            episode = await self.episode(problem, index)
            if on_episode is not None:
                on_episode(episode)
            return episode

        tasks = [one(problem, index) for problem in problems for index in range(group_size)]
        flat = await asyncio.gather(*tasks)
        groups = [list(flat[i: i + group_size]) for i in range(0, len(flat), group_size)]
        for group in groups:
            score_group(group, self.reward_weights, self.reward_context)
        return groups

    async def episode(self, problem: Problem, sample_index: int = 0) -> Episode:
        """Play one episode to the end and grade it (rewards need the whole group: see ``arun``)."""
        env = self.env_factory()
        role: str | None = env.reset(problem.prompt)
        sessions: dict[str, tuple] = {}  # role -> its session on its engine, for engines that keep one
        try:
            while role is not None:
                agent, engine = self.agents[role], self.engines[role]
                view = agent.view(problem.prompt, env.turns, engine.tokenizer)
                sampling = dataclasses.replace(agent.sampling, max_new_tokens=env.budget(role))
                if isinstance(engine, SessionEngine):
                    session = sessions.setdefault(role, (next(self._sessions), role))
                    generation = await engine.generate(view.ids, sampling, session=session)
                else:
                    generation = await engine.generate(view.ids, sampling)
                turn = Turn(role=role, prompt_ids=view.ids, action_ids=generation.token_ids,
                            logprobs=generation.logprobs, text=generation.text,
                            finish_reason=generation.finish_reason, vocab=vocab_key(engine.tokenizer))
                role = env.step(turn).next_role
        finally:  # the episode is over (or failed): its cached state is of no further use
            for role_, session in sessions.items():
                self.engines[role_].end_session(session)
        episode = Episode(problem_id=problem.id, sample_index=sample_index, prompt=problem.prompt,
                          gold=problem.answer, turns=env.turns, outcome=env.outcome)
        if episode.outcome.finished:
            verdict = await asyncio.to_thread(self.verifier.grade, episode.outcome.answer_text, problem.answer,
                                              choices=problem.meta.get("choices"))
            episode.outcome.set_verdict(verdict)
        return episode

    # ------------------------------------------------------------------ training data
    def training_samples(self, episodes: Sequence[Episode], role: str) -> list[TrainingSample]:
        """One masked sequence per episode in which ``role`` acted (its own tokens trained)."""
        agent, tokenizer = self.agents[role], self.engines[role].tokenizer
        samples = []
        for episode in episodes:
            sample = agent.training_sample(episode.prompt, episode.turns, tokenizer)
            if sample is not None:
                samples.append(sample)
        return samples


# ---------------------------------------------------------------------------------- from a config


def build_agents(config: Config) -> dict[str, Agent]:
    """One agent per ``agents.<role>``, of its registered type, with its sampling settings."""
    built = {}
    for role, spec in config.agents.items():
        sampling = SamplingParams(temperature=spec.sampling.temperature, top_p=spec.sampling.top_p,
                                  top_k=spec.sampling.top_k, max_new_tokens=spec.sampling.max_new_tokens)
        built[role] = AGENTS.get(spec.type)(role, sampling=sampling, system_prompt=spec.system_prompt)
    return built


def build_env_factory(config: Config, agents: Mapping[str, Agent]) -> Callable[[], Env]:
    env_cls = ENVS.get(config.env.name)
    env_cls(agents, max_turns=config.env.max_turns, max_total_tokens=config.env.max_total_tokens)  # fail early
    return lambda: env_cls(agents, max_turns=config.env.max_turns, max_total_tokens=config.env.max_total_tokens)


def build_engines(config: Config, *, share: bool = True) -> dict[str, Engine]:
    """An embedded engine per agent; agents with the same model config share one engine when ``share``.

    Sharing is right for inference (one model, bigger batches); RL with two trainable agents needs
    two independent copies (``share=False``) because each agent's weights move separately.
    """
    from longshort.engines.hf import HFEngine
    from longshort.models import load_configured, model_key

    if config.rollout.engine != "hf":
        raise ValueError(f"build_engines builds the embedded 'hf' engine; rollout.engine={config.rollout.engine} "
                         "engines are constructed by the launcher that owns their server")
    cache: dict[object, Engine] = {}
    engines = {}
    for role, spec in config.agents.items():
        key = model_key(spec.model) if share else role
        if key not in cache:
            model, tokenizer = load_configured(spec.model)
            cache[key] = HFEngine(model, tokenizer, max_batch_size=config.rollout.max_batch_size, seed=config.seed,
                                  kv_cache_budget=config.rollout.kv_cache_budget,
                                  pack_weights=config.rollout.pack_weights)
        engines[role] = cache[key]
    return engines


def build_runner(config: Config, engines: Mapping[str, Engine] | None = None) -> RolloutRunner:
    """The runner a recipe describes; pass ``engines`` to bind models you already hold."""
    built = build_agents(config)
    return RolloutRunner(build_env_factory(config, built), built, engines or build_engines(config),
                         verifier=Verifier(fallbacks=config.verify.fallbacks, timeout=config.verify.timeout),
                         reward_weights=config.rewards.weights,
                         reward_context=RewardContext.from_config(built, config.rewards))
