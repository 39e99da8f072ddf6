"""Thought analysis: long-CoT chunking, Monte Carlo thought importance, step entropy, [SKIP], cold start.

Both methods this framework implements start by cutting a chain of thought into steps at blank lines
(``steps``). Long-Short groups the steps into thoughts (``chunking``), scores each thought by Monte
Carlo rollouts (``importance``) and turns scored thoughts into two-agent cold-start transcripts
(``synthesis``). Step entropy scores every step by the model's own token entropy (``scoring``),
prunes low-entropy steps to ``[SKIP]`` and checks the answer still follows (``pruning``), and turns
the pruned chains into ``[SKIP]`` SFT examples (``skip``; the reward terms are ``longshort.rewards.skip``). ``chains`` generates a model's own
chains and fixes the prompt layout every continuation uses (question, ``<think>``, thinking,
``</think>``, answer); ``lenient_json`` reads the chunker's JSON-like answers; ``plots`` sets matplotlib up for the PNGs each analysis draws.

Command-line entry points: ``python -m longshort.analysis.chunk``, ``.importance``, ``.entropy``,
``.synthesize``. Importing this package imports no model code; each module pulls in what it needs.
"""
