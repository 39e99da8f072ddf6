"""longshort: efficient LLM reasoning with fewer tokens at the same accuracy.

Two methods in one framework: Long-Short (a long-thought and a short-thought agent trained with
multi-turn RL) and step entropy ([SKIP] compression). Heavy and optional packages (openrlhf, ray,
vllm, deepspeed, datasets) are imported lazily by the modules that need them, never here.
"""
__version__ = "0.1.0"
