"""A KV cache that decode steps append to in place, for the HF engine.

transformers' ``DynamicLayer`` appends a step's keys and values with ``torch.cat``, which copies the
whole cache of every layer at every step: for SmolLM2-135M at batch 32 that copy was a quarter of a
decode step's time in a torch-profiler trace (``aten::cat``), and it grows with the context. A
preallocated buffer written in place does not help by itself: attention over a view of its first
``n`` positions copies the view to make it contiguous. So ``GrowingLayer`` keeps each layer's keys
and values in a buffer with ``HEADROOM`` free positions and hands attention the *whole* buffer; it
reports the buffer's length as the key length (``get_mask_sizes``), so transformers builds the
attention mask that long, with the free positions masked out. When the buffer is full it is copied
once into one ``HEADROOM`` longer. ``benchmarks/decode_step.py`` measures it.

What is computed is unchanged: masked positions get zero weight, so logits equal ``DynamicLayer``'s
to float rounding (``tests/test_kv_reuse.py`` samples the same tokens and log-probabilities with and
without it). ``layer.keys`` / ``layer.values`` stay the valid part (a view), as the engine's KV reuse
reads them. Only a cache made entirely of plain ``DynamicLayer`` s is converted (``grow``): sliding-
window and other special layers keep their own semantics. And only for attentions that apply the
mask transformers builds (``masks_free_positions``): flash-attention kernels take sequence lengths
from the 2-D mask instead and would attend to the free positions.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache, DynamicLayer

from longshort.engines.decode_attention import NAME as DECODE_ATTENTION

MASKED_ATTENTIONS = ("sdpa", "eager", DECODE_ATTENTION)


class GrowingLayer(DynamicLayer):
    """``DynamicLayer`` semantics over a buffer with free positions at its end (see the module docstring)."""

    HEADROOM = 64  # positions added per growth: at most one copy of the cache per 64 decode steps

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        super().__init__()
        self._key_buffer: torch.Tensor | None = None
        self._value_buffer: torch.Tensor | None = None
        if keys is not None and values is not None:
            self.lazy_initialization(keys, values)
            self.keys, self.values = keys, values  # copied into a buffer at the first update

    @classmethod
    def over(cls, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int) -> "GrowingLayer":
        """A layer whose buffers are ``key_buffer`` and ``value_buffer``, their first ``length`` positions valid."""
        layer = cls(key_buffer[..., :length, :], value_buffer[..., :length, :])
        layer._key_buffer, layer._value_buffer = key_buffer, value_buffer
        return layer

    def _capacity(self) -> int:
        return 0 if self._key_buffer is None else self._key_buffer.shape[-2]

    def _fits(self, length: int) -> bool:
        """Whether ``length`` positions fit the buffer that ``keys`` is still the front of."""
        buffer = self._key_buffer
        return (buffer is not None and length <= buffer.shape[-2] and self.keys.shape[0] == buffer.shape[0]
                and self.keys.data_ptr() == buffer.data_ptr())

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs
               ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        past, new = self.get_seq_length(), key_states.shape[-2]
        if not self._fits(past + new):
            self._key_buffer = self._grown(self.keys if past else None, key_states, past + new)
            self._value_buffer = self._grown(self.values if past else None, value_states, past + new)
        self._key_buffer[..., past: past + new, :] = key_states
        self._value_buffer[..., past: past + new, :] = value_states
        self.keys = self._key_buffer[..., : past + new, :]
        self.values = self._value_buffer[..., : past + new, :]
        return self._key_buffer, self._value_buffer

    def _grown(self, old: torch.Tensor | None, new: torch.Tensor, length: int) -> torch.Tensor:
        # zeros, not empty: a masked position gets weight 0, and 0 x NaN garbage would still be NaN
        buffer = new.new_zeros((*new.shape[:-2], length + self.HEADROOM, new.shape[-1]))
        if old is not None:
            buffer[..., : old.shape[-2], :] = old
        return buffer

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """The key length attention will see: the buffer ``update`` is about to return."""
        length = self.get_seq_length() + query_length
        return (self._capacity() if self._fits(length) else length + self.HEADROOM), 0

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.get_seq_length() > 0 and self._fits(self.get_seq_length()):
            length = self.get_seq_length()
            self._key_buffer, self._value_buffer = self._key_buffer[indices], self._value_buffer[indices]
            self.keys, self.values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]
        else:
            super().batch_select_indices(indices)


def masks_free_positions(model) -> bool:
    """Whether ``model``'s attention applies the attention mask of the key length the cache reports."""
    return getattr(model.config, "_attn_implementation", None) in MASKED_ATTENTIONS


def grow(cache: Cache | None) -> Cache | None:
    """``cache`` with its layers as ``GrowingLayer`` s (same tensors, nothing copied now), when every layer is
    a plain ``DynamicLayer``; otherwise ``cache`` itself."""
    if cache is None or not cache.layers or not all(type(layer) is DynamicLayer for layer in cache.layers):
        return cache
    return Cache(layers=[GrowingLayer(layer.keys, layer.values) if layer.is_initialized else GrowingLayer()
                         for layer in cache.layers])


def from_tensors(layers: list[tuple[torch.Tensor, torch.Tensor]]) -> Cache:
    """A cache of ``GrowingLayer`` s holding the given per-layer keys and values."""
    return Cache(layers=[GrowingLayer(keys, values) for keys, values in layers])


def from_buffers(layers: list[tuple[torch.Tensor, torch.Tensor]], length: int) -> Cache:
    """A cache of ``GrowingLayer`` s over the given per-layer key and value buffers, the first ``length``
    positions valid and the rest free: nothing is copied now, nor until the free positions run out."""
    return Cache(layers=[GrowingLayer.over(keys, values, length) for keys, values in layers])
