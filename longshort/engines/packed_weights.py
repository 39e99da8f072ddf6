"""A bf16 model's linear weights laid out once for oneDNN, for the HF engine's forward passes on CPU.

torch's bf16 ``F.linear`` on CPU hands oneDNN the weight in its plain ``(out, in)`` layout, and
oneDNN's bf16 kernel (``brg_matmul``) lays it out into the pair-interleaved blocks its dot-product
instructions read inside every call (``ONEDNN_VERBOSE=1`` shows the plain layout reaching it each
time). Laid out once (``mkldnn._reorder_linear_weight``) and passed to the same kernel
(``mkldnn._linear_pointwise``), the products come out bit for bit the same (tests/test_packed_weights.py)
and a decode step, which reads every weight once per generated token, skips that work
(``benchmarks/decode_step.py``).

The laid-out copies cost as much memory as the weights (270 MB for SmolLM2-135M), so they live only
while the engine generates: the RL trainer drops them before each update (``HFEngine.drop_packed_weights``),
and they are laid out again from the new weights at the next rollout (a fraction of a second).
"""
from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator
from functools import partial

import torch


def applies(model) -> bool:
    """Whether to pack: a bf16 model on an x86-64 CPU whose oneDNN runs bf16 natively (where it was
    measured and checked exact; other CPUs keep the plain path)."""
    parameter = next(model.parameters())
    return (parameter.device.type == "cpu" and parameter.dtype == torch.bfloat16
            and platform.machine().lower() in ("x86_64", "amd64")
            and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


class PackedWeights:
    """The laid-out copies of a model's bf16 ``nn.Linear`` weights, made for one version of them.

    ``installed()`` routes the model's linear layers through the copies for the forward passes made
    inside it (the engine's decoding, under ``torch.inference_mode``: the copies have no gradient),
    and puts the layers back on leaving, so training forwards never see them. A layer whose ``forward``
    is already replaced on the instance (accelerate's device hooks, another engine's copies) is left
    alone; as the products are the same either way, that costs speed only.
    """

    def __init__(self, model):
        self.model = model
        self._layers: list[tuple[torch.nn.Linear, torch.Tensor]] = []
        self._version: int | None = None

    @contextlib.contextmanager
    def installed(self, version: int) -> Iterator[None]:
        """Route the linear layers through copies of the weights as they are at ``version`` (made if stale)."""
        if self._version != version:
            self.drop()
            self._layers = [(module, torch.ops.mkldnn._reorder_linear_weight(module.weight.detach()))
                            for module in self.model.modules()
                            if isinstance(module, torch.nn.Linear) and module.weight.dtype == torch.bfloat16
                            and "forward" not in vars(module)]
            self._version = version
        for module, packed in self._layers:
            module.forward = partial(_packed_linear, packed, module.bias)
        try:
            yield
        finally:
            for module, _ in self._layers:
                vars(module).pop("forward", None)

    def drop(self) -> None:
        """Free the copies (made again at the next ``installed``)."""
        self._layers, self._version = [], None


def _packed_linear(packed: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
