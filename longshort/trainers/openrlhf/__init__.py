"""The OpenRLHF scale-out backend (``backend.name=openrlhf``): one place to read for "how do we drive OpenRLHF".

- ``commands``: the recipe rendered as OpenRLHF 0.11.x commands and flags (``plan``), the GPU layout,
  the alternating phases, ``ray job submit`` wrapping;
- ``memory``: the per-GPU memory estimate of SFT, the actor, the reference and the vLLM engines;
- ``disk``: the disk a run fills under ``output_dir`` (kept saves, one stage's DeepSpeed checkpoints);
- ``preflight``: what ``python -m longshort.train ... --dry-run`` checks on a CPU (data and cold start
  for real on a slice, every command through OpenRLHF's parsers, memory, disk, layout);
- ``launch``: running the plan and its preparation steps (SFT rows, phase prompts);
- ``sft_main``: OpenRLHF's SFT entry point run on our exact token ids;
- ``bridge``: the ``--train.agent_func_path`` file (our env and agents inside OpenRLHF's executor);
- ``partner``: the frozen partner agent served by Ray actors.

Importing this package, or any module but ``bridge``, imports no openrlhf, ray, vllm or deepspeed.
"""
