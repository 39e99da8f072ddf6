"""Running the OpenRLHF plan: each command in order (locally, or through ``ray job submit``), and
the preparation steps the plan calls (``python -m longshort.trainers.openrlhf.launch sft-data|prompts``).

Before anything starts, the flags go through the installed OpenRLHF's own parser
(``preflight.check_flags``). Nothing here imports openrlhf, ray, vllm or deepspeed at module level.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from longshort.config import Config, ConfigError, load_config, to_yaml
from longshort.trainers.openrlhf.commands import (AGENT_FILE_TEXT, Command, agent_file, coldstart_path,
                                                  final_checkpoints, format_plan, phases, plan, run_dir)

logger = logging.getLogger(__name__)

__all__ = ["final_checkpoints", "main", "openrlhf_sft_rows", "run", "write_phase_prompts", "write_sft_data"]


def run(config: Config, dry_run: bool = False, stages: Sequence[str] | None = None,
        echo: Callable[[str], None] = print) -> list[Command]:
    """Run (or with ``dry_run`` only print) the planned commands in order; finished steps are skipped.

    Before anything starts, the flags go through the installed OpenRLHF's parser when it is
    importable here (with ``ray job submit`` the submitting machine may not have it).
    """
    commands = plan(config, stages)
    if dry_run:
        echo(format_plan(commands))
        return commands
    if importlib.util.find_spec("openrlhf") is not None:
        from longshort.trainers.openrlhf.preflight import check_flags

        check_flags(commands)
    run_dir(config).mkdir(parents=True, exist_ok=True)
    (run_dir(config) / "config.yaml").write_text(to_yaml(config))
    if config.backend.ray_address:  # the job imports the bridge from the code it ships
        agent_file(config).parent.mkdir(parents=True, exist_ok=True)
        agent_file(config).write_text(AGENT_FILE_TEXT)
    for command in commands:
        if command.marker and Path(command.marker).exists():
            echo(f"# done already: {command.title} ({command.marker})")
        else:
            echo(f"# [{command.stage}] {command.title}\n{command.shell()}")
            subprocess.run(command.argv, env={**os.environ, **dict(command.env)}, check=True)
            if command.marker:
                Path(command.marker).parent.mkdir(parents=True, exist_ok=True)
                Path(command.marker).write_text(json.dumps({"title": command.title}) + "\n")
        _clean_up(command, echo)
    return commands


def _clean_up(command: Command, echo: Callable[[str], None]) -> None:
    """Delete what only a resume of a finished step reads (its DeepSpeed checkpoints, the largest files of a
    run); also on a later run, in case the last one stopped between the marker and the deletion."""
    for folder in map(Path, command.cleanup):
        if folder.is_dir():
            shutil.rmtree(folder)
            echo(f"# deleted {folder}: {command.title} is done and only a resume of it reads it")


# ------------------------------------------------------------------------------------------- preparation steps


def write_phase_prompts(config: Config, phase_index: int) -> Path:
    """The phase's problems: the ones the embedded trainer draws for the same steps.

    OpenRLHF runs over its prompt file ``train.num_episodes`` times; giving each phase exactly the
    problems of its steps (``trainers.schedule.ProblemStream``: a seeded order per epoch, continued
    across phases) makes it stop after ``steps`` steps, on the same problems as the embedded backend.
    """
    from longshort.data import Problem
    from longshort.trainers.schedule import ProblemStream

    phase = next(p for p in phases(config) if p.index == phase_index)
    source = run_dir(config) / "data" / "train.jsonl"
    with source.open(encoding="utf-8") as rows:  # written by the data stage with save_jsonl
        problems = [Problem.from_dict(json.loads(line)) for line in rows if line.strip()]
    if not problems:
        raise ConfigError(f"no training problems in {source}: run the data stage first")
    drawn = ProblemStream(problems, config.seed, cursor=phase.first_problem).take(
        phase.steps * config.rollout.problems_per_step)
    target = phase.dir / "prompts.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", encoding="utf-8") as handle:
        for problem in drawn:
            handle.write(json.dumps({"prompt": problem.prompt, "answer": problem.answer}, ensure_ascii=False) + "\n")
    return target


def openrlhf_sft_rows(example, tokenizer, max_len: int) -> tuple[list[dict], int]:
    """One embedded SFT example (``longshort.sft.build_examples``) as OpenRLHF SFT rows, one per own
    turn, and how many turns had to be left out (too long for ``max_len`` with their EOS).

    OpenRLHF's SFT trains one response per row after a plain-text prompt (its multi-turn mode would
    re-render chat messages, and our turns live inside one assistant message). A causal LM's loss on
    a token depends only on the tokens before it, so one row per own turn, with everything before the
    turn as the prompt, trains exactly the token losses of the embedded example; only the batching
    differs. The output ends with the EOS token, which OpenRLHF always trains (ending it ourselves
    avoids its `` <eos>`` with a space); the embedded SFT trains no EOS after a turn that ends at its
    closing tag, since our engines stop there (a turn that ends with EOS already gets no second one).
    Every own turn of ``example`` is whole: ``build_examples`` leaves out a turn its length cut falls
    inside, which here would be closed by an EOS in mid-turn.

    Each row carries its ids (``input_ids``: the prompt's, ``ids``: the whole row's with the EOS), and
    ``sft_main`` makes OpenRLHF's ``SFTDataset`` tokenize the row's two texts into exactly those: a
    text of several turns re-tokenized as one string differs wherever the tokenizer merges across a
    turn boundary. Texts are decoded without ``clean_up_tokenization_spaces`` (Llama-3.1's tokenizer
    sets it; it rewrites `` .`` as ``.``), so they stay the ids' own text. A row of ``max_len`` tokens
    or more would lose its last own token to OpenRLHF's EOS: left out (``build_examples`` at
    ``max_len - 1`` prevents it).
    """
    ids, mask, rows, dropped, start = list(example.input_ids), example.loss_mask, [], 0, None
    for index, own in enumerate([*mask, 0]):
        if own and start is None:
            start = index
        elif not own and start is not None:
            ends = ids[index - 1] == tokenizer.eos_token_id
            if index + (not ends) <= max_len:
                rows.append({"input": tokenizer.decode(ids[:start], clean_up_tokenization_spaces=False),
                             "output": tokenizer.decode(ids[start:index], clean_up_tokenization_spaces=False)
                             + ("" if ends else tokenizer.eos_token),
                             "input_ids": ids[:start], "ids": ids[:index] + ([] if ends else [tokenizer.eos_token_id])})
            else:
                dropped += 1
            start = None
    return rows, dropped


def retokenizes(row: dict, tokenizer) -> bool:
    """Whether plain OpenRLHF (no ``sft_main``) would get this row's ids back from its texts."""
    def encode(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    return encode(row["input"]) == row["input_ids"] and encode((row["input"] + row["output"]).rstrip("\n")) == row["ids"]


@dataclass(frozen=True)
class SFTData:
    """What ``write_sft_data`` wrote: the OpenRLHF rows of an agent, the turns left out, how many rows
    plain re-tokenization would have shifted (``merged``: trained exactly only through ``sft_main``), and
    the examples (transcripts) they came from: OpenRLHF's ``train.batch_size`` counts rows."""

    path: Path
    rows: int
    dropped: int
    merged: int
    examples: int


def write_sft_data(config: Config, role: str, tokenizer=None) -> SFTData:
    """Render the agent's cold-start transcripts (``longshort.coldstart`` records) for OpenRLHF's SFT.

    ``tokenizer`` defaults to the agent's model's. Examples are cut at ``sft.max_length - 1`` tokens,
    so the EOS OpenRLHF appends still fits in ``data.max_len``. A row whose texts equal an earlier
    row's but whose ids do not (the id map is keyed by text) is left out and counted.
    """
    from longshort.coldstart import load_coldstart
    from longshort.rollout import build_agents
    from longshort.sft import build_examples

    source = coldstart_path(config, role)
    if not source.is_file():
        raise ConfigError(f"no cold-start transcripts for the {role} agent at {source} "
                          "(the sft stage's cold-start builder writes them before SFT)")
    if tokenizer is None:
        from longshort.models import load_tokenizer

        tokenizer = load_tokenizer(config.agents[role].model.name_or_path)
    max_len = config.sft.max_length
    examples = build_examples(build_agents(config)[role], load_coldstart(source, role), tokenizer, max_len - 1)
    target = run_dir(config) / "sft" / "openrlhf" / f"{role}.jsonl"
    target.parent.mkdir(parents=True, exist_ok=True)
    known: dict[str, list[int]] = {}
    written = dropped = merged = 0
    with target.open("w", encoding="utf-8") as out:
        for example in examples:
            rows, too_long = openrlhf_sft_rows(example, tokenizer, max_len)
            dropped += too_long
            for row in rows:
                texts = {row["input"]: row["input_ids"], (row["input"] + row["output"]).rstrip("\n"): row["ids"]}
                if any(known.get(text, ids) != ids for text, ids in texts.items()):
                    dropped += 1
                    continue
                known.update(texts)
                merged += not retokenizes(row, tokenizer)
                written += 1
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
    if merged:
        logger.info("sft data (%s): %d of %d rows re-tokenize differently as one text (merges across turn "
                    "boundaries); sft_main gives OpenRLHF their exact ids", role, merged, written)
    if not written:
        raise ConfigError(f"no SFT rows for the {role} agent: all {dropped} turns were too long for sft.max_length="
                          f"{max_len} or collided with another row's text")
    return SFTData(target, written, dropped, merged, len(examples))


def main(argv: Sequence[str] | None = None) -> int:
    """A plan's preparation steps: ``sft-data --role R`` and ``prompts --phase K`` (``--config``: the run's YAML)."""
    parser = argparse.ArgumentParser(prog=f"python -m {__name__}")
    sub = parser.add_subparsers(dest="step", required=True)
    sft = sub.add_parser("sft-data", help="render an agent's cold-start examples as OpenRLHF SFT data")
    sft.add_argument("--config", required=True)
    sft.add_argument("--role", required=True)
    prompts = sub.add_parser("prompts", help="write the training problems of one RL phase")
    prompts.add_argument("--config", required=True)
    prompts.add_argument("--phase", type=int, required=True)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        if args.step == "sft-data":
            data = write_sft_data(config, args.role)
            print(f"{data.path}: {data.rows} rows ({data.merged} re-tokenize differently as one text: trained on "
                  f"their exact ids), {data.dropped} turns left out")
        else:
            print(write_phase_prompts(config, args.phase))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
