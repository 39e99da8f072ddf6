"""Cold-start data: Long-Short transcripts built from gold step-by-step solutions.

The paper fine-tunes each agent on ~1k transcripts synthesised from a reasoning model's scored
thoughts; that is the ``synthesis`` builder (``longshort.analysis.coldstart_builder``), which the
7B/8B recipes use. The ``long_short`` builder here is the cheap alternative that needs no teacher:
transcripts from gold solution steps (``meta["steps"]``: the synthetic generator's step sentences,
GSM8K's solution lines; for a problem with only a written ``meta["solution"]``, as MATH has, its
paragraphs, or its sentences when it is one paragraph: ``solution_steps``), under these rules.

IMPL-CHOICE (documented, not the paper's):

- Front steps are the important thoughts (the paper finds that early "problem understanding"
  thoughts carry most of the accuracy), so the long agent writes the first steps **in full**:
  ``<think>\\n step sentence \\n ... \\n</think>``.
- The short agent writes the remaining steps **concisely**, as just their arithmetic (``a op b = c``,
  taken from the step sentence; a step without a recognisable equation is kept verbatim), and
  finishes with ``\\boxed{answer} </answer>``. With no steps left it writes only the boxed answer.
- Plans, drawn per problem from ``random.Random(f"...:{seed}:{problem.id}")`` (so a transcript depends
  only on the seed and its problem, not on list order or process):
  * ``direct``: long(steps[:k]) -> short(steps[k:], boxed), with k uniform in 1..ceil(n/2);
  * ``handback`` (problems with >= 3 steps, with probability ``handback_prob``): cut points
    1 <= a < b < c <= n, long(steps[:a]) -> short(steps[a:b]) ``</rethink>`` -> long(steps[b:c]) ->
    short(steps[c:], boxed). One hand-back at most, so a transcript has at most 4 turns and fits the
    tiny recipe's ``env.max_turns``.
- ``</overthink>`` is never produced: its meaning is unconfirmed and the agents' format checks do not
  accept it as a long-turn ending.
- Every turn is checked with the agents' own ``check_format``; a problem whose turns would fail
  (e.g. a step that contains a protocol tag) is skipped and counted in the log, never written.

A second builder, ``entropy_skip``, makes the step-entropy paper's SFT data instead (see
``entropy_skip_coldstart``). Recipes pick one with ``sft.coldstart``; register your own with
``@COLDSTART.register(name)`` (a callable ``(config, problems, out_dir) -> {role: jsonl path}``).

A transcript record is ``{"id", "question", "answer", "plan", "turns": [{"role", "text"}, ...]}``.
``write_coldstart`` writes one JSONL file per agent role (``long.jsonl``, ``short.jsonl``) holding
the transcripts in which that agent acts, each with a ``role`` field naming the agent that trains
on it; ``longshort.sft`` turns them into token sequences with the agent's own view.
"""
from __future__ import annotations

import json
import logging
import math
import random
import re
from pathlib import Path
from typing import Iterable, Sequence

from agents.long_short import LongThoughtAgent, ShortThoughtAgent
from longshort.errors import UserError
from longshort.jsonl import JsonlError, read_jsonl
from longshort.paths import write_atomically
from longshort.config import Config
from longshort.data import Problem
from longshort.registry import COLDSTART

logger = logging.getLogger(__name__)

ROLES = ("long", "short")  # default role names of the two agents (recipes: agents.long, agents.short)
DEFAULT_HANDBACK_PROB = 0.5

_NUM = r"\$?\d[\d,]*(?:\.\d+)?%?"
# An equation inside a step sentence: a left side of numbers, operators and brackets, "=", a number.
# The left side must hold an operator (checked in code), so "x = 5" style restatements are not kept.
_EQUATION = re.compile(rf"(?P<lhs>[\d$.,%()+\-*/×÷ ]*\d[\d$.,%()+\-*/×÷ ]*?)\s*=\s*(?P<rhs>{_NUM})")
_OPERATOR = re.compile(r"\d\s*[-+*/×÷]\s*[\d(]|\)\s*[-+*/×÷]")


class ColdStartError(UserError, ValueError):
    """A cold-start file or record that cannot be used; the message names the file, line and fix."""


def concise(step: str) -> str:
    """The arithmetic of a step sentence (``"32 / 4 = 8"``), or the sentence itself if it has none."""
    found = []
    for match in _EQUATION.finditer(step):
        lhs = match.group("lhs").strip(" ,.")
        if _OPERATOR.search(lhs) and lhs.count("(") == lhs.count(")"):
            found.append(f"{lhs} = {match.group('rhs').rstrip(',.')}")
    text = ", ".join(found) if found else step.strip()
    return text if text.endswith(".") else text + "."


def long_turn(steps: Sequence[str]) -> str:
    return "<think>\n" + "\n".join(s.strip() for s in steps) + "\n</think>"


def short_turn(steps: Sequence[str], answer: str | None) -> str:
    """A concise continuation: hands back with ``</rethink>`` when ``answer`` is None, else finishes."""
    parts = [concise(s) for s in steps]
    if answer is None:
        return "<answer> " + " ".join(parts) + " </rethink>"
    return "<answer> " + " ".join([*parts, f"\\boxed{{{answer}}}"]) + " </answer>"


def _plan(n: int, rng: random.Random, handback_prob: float) -> tuple[str, list[tuple[int, int]]]:
    """The plan name and the step ranges of the turns, alternating long/short from a long turn."""
    if n >= 3 and rng.random() < handback_prob:
        a, b, c = sorted(rng.sample(range(1, n + 1), 3))
        return "handback", [(0, a), (a, b), (b, c), (c, n)]
    k = rng.randint(1, max(1, math.ceil(n / 2)))
    return "direct", [(0, k), (k, n)]


_SENTENCE_END = re.compile(r"[.!?]\$?(?P<gap>\s+)(?=[A-Z\\$(])")  # MATH often ends a sentence inside math: "3.$"
_ASY = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)  # Asymptote figure code: not a step


def solution_steps(solution: str) -> list[str]:
    """A written (MATH-style) solution cut into steps: its paragraphs, or, for a one-paragraph solution,
    its sentences. A cut never falls inside ``$...$`` / ``\\[...\\]`` math; figure code is left out."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", _ASY.sub("", solution)) if p.strip()]
    if len(paragraphs) != 1:
        return paragraphs
    text, steps, start = paragraphs[0], [], 0
    for match in _SENTENCE_END.finditer(text):
        head = text[:match.start("gap")]
        if head.count("$") % 2 == 0 and head.count("\\[") == head.count("\\]"):  # outside math
            steps.append(text[start:match.start("gap")].strip())
            start = match.end()
    steps.append(text[start:].strip())
    return [s for s in steps if s]


def gold_steps(problem: Problem) -> list[str]:
    """The problem's gold steps: ``meta["steps"]``, else its written solution cut by ``solution_steps``."""
    steps = [s for s in problem.meta.get("steps") or [] if s.strip()]
    if not steps and isinstance(problem.meta.get("solution"), str):
        steps = solution_steps(problem.meta["solution"])
    return steps


def transcript(problem: Problem, seed: int, *, handback_prob: float = DEFAULT_HANDBACK_PROB,
               roles: tuple[str, str] = ROLES) -> dict | None:
    """One problem's transcript, or None when it has no gold steps or a turn fails the format checks."""
    steps = gold_steps(problem)
    if not steps:
        return None
    rng = random.Random(f"longshort-coldstart:{seed}:{problem.id}")
    plan, ranges = _plan(len(steps), rng, handback_prob)
    long_role, short_role = roles
    turns = []
    for index, (start, end) in enumerate(ranges):
        if index % 2 == 0:
            turns.append({"role": long_role, "text": long_turn(steps[start:end])})
        else:
            final = index == len(ranges) - 1
            turns.append({"role": short_role, "text": short_turn(steps[start:end], problem.answer if final else None)})
    record = {"id": problem.id, "question": problem.prompt, "answer": problem.answer, "plan": plan, "turns": turns}
    return record if well_formed(record, roles) else None


_CHECKERS = {0: LongThoughtAgent("long"), 1: ShortThoughtAgent("short")}


def well_formed(record: dict, roles: tuple[str, str] = ROLES) -> bool:
    """Every turn passes its agent's format check, roles alternate from long, and only the last turn finishes."""
    turns = record["turns"]
    if not turns or len(turns) % 2:
        return False
    for index, turn in enumerate(turns):
        if turn["role"] != roles[index % 2]:
            return False
        result = _CHECKERS[index % 2].check_format(turn["text"], "stop")
        expected = "think" if index % 2 == 0 else ("final" if index == len(turns) - 1 else "handback")
        if not result.ok or result.kind != expected:
            return False
    return True


def build_transcripts(problems: Iterable[Problem], seed: int, *, handback_prob: float = DEFAULT_HANDBACK_PROB,
                      roles: tuple[str, str] = ROLES) -> list[dict]:
    """Transcripts for every problem that has gold steps, in problem order; skipped problems are logged."""
    built, skipped = [], 0
    for problem in problems:
        record = transcript(problem, seed, handback_prob=handback_prob, roles=roles)
        if record is None:
            skipped += 1
        else:
            built.append(record)
    if skipped:
        logger.warning("cold start: skipped %d problem(s) without gold steps or with turns that fail the format "
                       "checks; built %d transcripts", skipped, len(built))
    return built


def write_coldstart(problems: Iterable[Problem], out_dir: str | Path, seed: int, *,
                    handback_prob: float = DEFAULT_HANDBACK_PROB, roles: tuple[str, str] = ROLES) -> dict[str, Path]:
    """Write ``<role>.jsonl`` per agent (the transcripts it acts in, tagged with ``role``); role -> path."""
    records = build_transcripts(problems, seed, handback_prob=handback_prob, roles=roles)
    if not records:
        raise ColdStartError("no cold-start transcripts could be built: the problems carry no gold solution "
                             "steps (meta['steps']) or written solution (meta['solution']); use "
                             "sft.coldstart=synthesis (a teacher's chains) or problems with solutions")
    return _write_per_role(records, roles, Path(out_dir))


def _write_per_role(records: Sequence[dict], roles: Sequence[str], out_dir: Path) -> dict[str, Path]:
    """``<role>.jsonl`` per agent: the transcripts it acts in, each tagged with ``role``; role -> path."""
    return {role: write_records([{**record, "role": role} for record in records
                                 if any(turn["role"] == role for turn in record["turns"])],
                                out_dir / f"{role}.jsonl") for role in roles}


def write_records(records: Sequence[dict], path: Path) -> Path:
    """``records`` as JSONL at ``path``, atomically (a kill leaves the old file or the new one)."""
    def write(tmp: Path) -> None:
        with open(tmp, "w") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")

    return write_atomically(path, write)


@COLDSTART.register("long_short")
def long_short_coldstart(config: Config, problems: Sequence[Problem], out_dir: Path) -> dict[str, Path]:
    """The Long-Short transcripts above, for the recipe's two agents (long first, then short)."""
    roles = tuple(config.agents)
    if len(roles) != 2:
        raise ColdStartError(f"sft.coldstart=long_short needs two agents (long, short); the recipe has "
                             f"{len(roles)} ({', '.join(roles)}): use sft.coldstart=entropy_skip for one agent; "
                             "for another team, drop sft from stages or register your own builder (@COLDSTART.register)")
    return write_coldstart(problems, out_dir, config.seed, roles=roles)


@COLDSTART.register("synthesis")
def synthesis_coldstart(config: Config, problems: Sequence[Problem], out_dir: Path) -> dict[str, Path]:
    """The paper's cold start: a teacher's long chains, chunked into thoughts, scored by Monte Carlo
    rollouts, synthesised into long/short transcripts (``longshort.analysis.coldstart_builder``;
    settings: ``sft.synthesis``). Resumable per problem; the counts of kept and dropped problems are
    logged and written to ``synthesis_summary.json``."""
    from longshort.analysis.coldstart_builder import DROP_REASONS, build

    roles = tuple(config.agents)
    if len(roles) != 2:
        raise ColdStartError(f"sft.coldstart=synthesis needs two agents (long, short); the recipe has "
                             f"{len(roles)} ({', '.join(roles)})")
    transcripts, summary = build(config, problems, Path(out_dir))
    if not transcripts:
        why = "; ".join(f"{n} {DROP_REASONS[reason]}" for reason, n in summary["dropped"].items())
        raise ColdStartError(f"no cold-start transcripts could be synthesised from {summary['problems']} problems "
                             f"({why or 'no problems'}): use a stronger sft.synthesis.teacher, more "
                             "sft.synthesis.rollouts, or more problems")
    renamed = {"long": roles[0], "short": roles[1]}
    records = [{**t, "plan": "synthesis", "turns": [{**turn, "role": renamed[turn["role"]]} for turn in t["turns"]]}
               for t in transcripts]
    return _write_per_role(records, roles, Path(out_dir))


@COLDSTART.register("entropy_skip")
def entropy_skip_coldstart(config: Config, problems: Sequence[Problem], out_dir: Path) -> dict[str, Path]:
    """The step-entropy paper's SFT data, one single-turn example per problem and agent.

    The paper prunes a model's own long chains; here the chain is the problem's gold solution, one
    step per paragraph, which is what a small model can learn from, or with ``sft.chains=long`` its
    long chain with known redundancy (``longshort.data.longchains``; ``meta["kinds"]`` then says which
    pruned steps were truly redundant). Each agent's own starting model
    (with its ``add_tokens``, so ``[SKIP]`` is one token) scores every chain in one teacher-forced
    pass after the agent's prompt and ``<think>\n``; the ``floor(sft.skip_kappa x N)`` steps with the
    lowest step score (``sft.skip_score``: the paper's mean token entropy unless set) become
    ``rewards.skip.placeholder``. The target is the paper's shape,
    ``<think>\n`` + compressed chain + ``\n</think>\n\n`` + the answer in ``\boxed{}``; examples
    that fail the agent's format check are left out. ``meta`` keeps each step's entropy and the
    pruned indices, for inspection.
    """
    from longshort.analysis.pruning import prune_text, select_steps
    from longshort.analysis.scoring import step_entropies, token_entropies
    from longshort.analysis.skip import sft_example
    from longshort.analysis.steps import DELIMITER, THINK_OPEN, StepSegmenter, segment_text
    from longshort.models import load_configured
    from longshort.rollout import build_agents

    if config.sft.chains == "long":
        from longshort.data.longchains import long_chain

        written = [long_chain(p, redundancy=config.sft.redundancy, seed=config.seed) for p in problems
                   if any(s.strip() for s in p.meta.get("steps") or [])]
        kinds = {chain.problem_id: list(chain.kinds) for chain in written}
        by_id = {p.id: p for p in problems}
        chains = [(by_id[chain.problem_id], chain.thinking) for chain in written]
    else:
        kinds = {}
        chains = [(p, DELIMITER.join(s.strip() for s in gold_steps(p))) for p in problems]
    chains = [(p, chain) for p, chain in chains if chain]
    if not chains:
        raise ColdStartError("no cold-start examples could be built: the problems carry no gold solution steps "
                             "(meta['steps']); use synthetic or GSM8K problems for the cold start")
    agents = build_agents(config)
    paths = {}
    for role, spec in config.agents.items():
        model, tokenizer = load_configured(spec.model)
        segmenter = StepSegmenter(tokenizer)
        opening = tokenizer.encode(THINK_OPEN + "\n", add_special_tokens=False)
        steps = [segment_text(chain, segmenter) for _, chain in chains]
        sequences = [(agents[role].prefix_ids(p.prompt, tokenizer) + opening,
                      tokenizer.encode(chain, add_special_tokens=False)) for p, chain in chains]
        entropies = token_entropies(model, sequences)
        records = []
        for (problem, _), chain_steps, entropy in zip(chains, steps, entropies):
            scores = step_entropies(entropy, chain_steps).ranking(config.sft.skip_score)
            pruned = select_steps(scores, config.sft.skip_kappa, "low")
            thinking = prune_text([s.text for s in chain_steps], pruned, config.rewards.skip.placeholder)
            record = sft_example(problem.id, problem.prompt, problem.answer, thinking,
                                 f"The answer is \\boxed{{{problem.answer}}}.", role)
            if agents[role].check_format(record["turns"][0]["text"], "stop").ok:
                meta = {"step_entropy": scores, "score": config.sft.skip_score, "pruned": pruned}
                if problem.id in kinds:
                    meta["kinds"] = kinds[problem.id]
                records.append({**record, "meta": meta})
        logger.info("cold start (entropy_skip): %d/%d examples for %s", len(records), len(chains), role)
        paths[role] = write_records(records, Path(out_dir) / f"{role}.jsonl")
        del model
    return paths


def load_coldstart(path: str | Path, role: str | None = None) -> list[dict]:
    """Transcript records of a cold-start JSONL file (only those for ``role`` when given)."""
    records = []
    try:
        for line_number, record in read_jsonl(path, hint="regenerate the file with write_coldstart"):
            if not isinstance(record, dict):
                raise ColdStartError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            missing = [key for key in ("id", "question", "turns") if key not in record]
            bad_turn = not isinstance(record.get("turns"), list) or any(
                not isinstance(t, dict) or "role" not in t or "text" not in t for t in record.get("turns", []))
            if missing or bad_turn:
                what = f"missing field(s) {', '.join(missing)}" if missing else "turns must be {role, text} objects"
                raise ColdStartError(f"{path}:{line_number}: {what}; expected a record "
                                     '{"id", "question", "answer", "turns": [{"role", "text"}, ...]}')
            if role is None or record.get("role", role) == role:
                records.append(record)
    except JsonlError as err:
        raise ColdStartError(str(err)) from None
    return records


@COLDSTART.register("longcot")
def longcot_coldstart(config: Config, problems: Sequence[Problem], out_dir: Path) -> dict[str, Path]:
    """A long-CoT model's SFT data: each problem's long chain with known redundancy (``longshort.data.longchains``,
    ``sft.redundancy`` of its steps redundant) as one single-turn example per agent, in the R1 layout
    ``<think>\\n`` chain ``\\n</think>\\n\\n`` ``The final answer is $\\boxed{...}$.``; the analogue of
    distilling R1 into a small model. ``meta`` records each step's kind (``gold`` or redundant), so
    later analyses can score pruning against the truth."""
    from longshort.analysis.skip import sft_example
    from longshort.data.longchains import long_chains
    from longshort.rollout import build_agents

    chains = long_chains(problems, redundancy=config.sft.redundancy, seed=config.seed)
    if not chains:
        raise ColdStartError("no long chains could be written: the problems carry no gold solution steps "
                             "(meta['steps']); use synthetic or GSM8K problems for sft.coldstart=longcot")
    questions = {p.id: p.prompt for p in problems}
    agents = build_agents(config)
    paths = {}
    for role in config.agents:
        records = []
        for chain in chains:
            record = sft_example(chain.problem_id, questions[chain.problem_id], chain.answer, chain.thinking,
                                 chain.final, role)
            if agents[role].check_format(record["turns"][0]["text"], "stop").ok:
                records.append({**record, "meta": {"kinds": list(chain.kinds)}})
        logger.info("cold start (longcot): %d/%d long chains for %s", len(records), len(chains), role)
        paths[role] = write_records(records, Path(out_dir) / f"{role}.jsonl")
    return paths
