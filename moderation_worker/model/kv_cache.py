"""The one place that knows how a transformers model takes and returns its KV cache.

transformers renames this API between minor releases: 5.24 renamed the forward's ``past_key_values``
argument and output field to ``cache`` (keeping the old argument name behind a deprecation shim until
5.40). So nothing here trusts one name: the argument is found by its annotation in the model's own
forward signature, and the returned cache by its type in the model's output. Everything else in the
package goes through these functions, so the next rename is a change here and nowhere else.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import torch
from transformers import Cache, DynamicCache, PretrainedConfig, PreTrainedModel

# Names transformers has used for the argument, newest first: the fallback when annotations say nothing
# (a model whose forward is untyped).
_KNOWN_NAMES = ("cache", "past_key_values")


def cache_argument(model: PreTrainedModel) -> str | None:
    """The name of the forward argument that takes a KV cache, or None when the forward takes none.

    The parameter annotated with a ``Cache`` type wins (``cache: Cache | None`` in 5.24,
    ``past_key_values: Cache | None`` before); ``inspect.signature`` sees through the deprecation
    wrapper to the real parameters.
    """
    parameters = inspect.signature(model.forward).parameters
    typed = [
        name
        for name, parameter in parameters.items()
        if parameter.annotation is not inspect.Parameter.empty and _names_a_cache(parameter.annotation)
    ]
    if len(typed) == 1:
        return typed[0]
    return next((name for name in _KNOWN_NAMES if name in parameters), None)


def _names_a_cache(annotation: Any) -> bool:
    # Annotations are strings under ``from __future__ import annotations`` and types otherwise; both
    # name the class. "Cache" alone, not "use_cache: bool" or "cache_position: LongTensor".
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return any(token.strip(" []|()'\".") in {"Cache", "DynamicCache"} for token in _split(text))


def _split(text: str) -> list[str]:
    for separator in "|[],() ":
        text = text.replace(separator, " ")
    return [token.rsplit(".", 1)[-1] for token in text.split()]


def returned_cache(outputs: Mapping[str, Any] | Any) -> Cache:
    """The KV cache a forward with ``use_cache=True`` returned, whatever its output field is called."""
    values = outputs.values() if isinstance(outputs, Mapping) else vars(outputs).values()
    found = [value for value in values if isinstance(value, Cache)]
    if len(found) != 1:
        raise RuntimeError(f"expected one KV cache in the model's output, found {len(found)}")
    return found[0]


def cache_rows(cache: Cache, rows: torch.Tensor, *, config: PretrainedConfig) -> DynamicCache:
    """A new cache holding the given batch rows of ``cache`` (repeats allowed); ``cache`` is untouched.

    A forward appends to the cache it is given, and one prefix cache serves several suffix passes, so
    each pass gets its own. Advanced indexing, not ``index_select``: on CPU, torch's index_select of
    repeated rows of a large tensor is an order of magnitude slower (measured with torch 2.13). The
    indexed copies are installed as they are; filling a layer through ``update()`` would concatenate
    them onto an empty tensor, copying every key and value again.
    """
    selected = DynamicCache(config=config)
    if len(selected.layers) != len(cache.layers):
        raise RuntimeError(f"a cache of {len(cache.layers)} layers for a model of {len(selected.layers)}")
    for source, layer in zip(cache.layers, selected.layers, strict=True):
        keys, values = source.keys[rows], source.values[rows]
        layer.lazy_initialization(keys, values)
        layer.keys, layer.values = keys, values
    return selected


def cache_nbytes(cache: Cache) -> int:
    """Bytes of the keys and values a cache holds, over all its layers."""
    return sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
