"""What section 1 counts beside its timings: the tokens of each prompt layout and the KV cache it holds.

Token counts give each ratio its bound (how much less a layout computes, if only tokens cost); the KV
bytes are measured from the cache tensors the scorer's passes really hold, not computed from a formula.
"""

from __future__ import annotations

from statistics import mean

from moderation_worker.model.base import ScoringRequest
from moderation_worker.model.kv_cache import cache_nbytes, returned_cache
from moderation_worker.model.prefix import cacheable_head, split_prompts
from moderation_worker.model.prompts import render_prompt


def token_counts(processor, image, prompts: list[str], preamble: str = "") -> dict[str, object]:
    """Tokens of each full prompt for this image, the prefix all share (split as the scorer splits it),
    and the head before the image the scorer keeps (a compact pack's catalogue)."""
    rows = [
        processor(images=[image], text=[render_prompt(processor, p, preamble)], return_tensors="pt")[
            "input_ids"
        ][0].tolist()
        for p in prompts
    ]
    image_token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    split = split_prompts(rows, image_token_id)
    if split is None:
        raise ValueError("these prompts differ before the image: no prefix to share")
    prefix = len(split.prefix)
    head = len(cacheable_head(split.prefix, image_token_id))
    suffixes = [len(s) for s in split.suffixes]
    full_tokens = sum(len(r) for r in rows)
    return {
        "policies": len(prompts),
        "prefix_tokens": prefix,
        "kept_head_tokens": head,
        "image_tokens": rows[0].count(image_token_id),
        "suffix_tokens_mean": round(mean(suffixes), 1),
        "suffix_tokens_min": min(suffixes),
        "suffix_tokens_max": max(suffixes),
        "full_prompt_tokens_mean": round(mean(len(r) for r in rows), 1),
        "full_prompt_tokens_total": full_tokens,
        "suffix_tokens_total": sum(suffixes),
        # What a shared prefix runs through the language model per image (the kept head is not rerun).
        "computed_tokens": prefix - head + sum(suffixes),
    }


def token_bound(numerator: dict, denominator: dict, *, numerator_in_full: bool) -> float:
    """Language-model tokens one way computes over those another does: the ratio if only tokens cost.

    ``numerator_in_full``: the numerator runs every prompt whole (one pass per policy), N(P+S);
    otherwise it shares a prefix too. The denominator always shares its prefix, (P - head) + NS.
    """
    top = numerator["full_prompt_tokens_total"] if numerator_in_full else numerator["computed_tokens"]
    return top / denominator["computed_tokens"]


def held_kv_bytes(scorer, request: ScoringRequest) -> int:
    """The most KV one ``score([request])`` holds at once, from the caches its passes return.

    The prefix pass's cache stays alive while the suffixes run: a suffix pass that extends it (packed)
    holds its own size, one that runs on copies (rows) holds the prefix cache and its own. A head the
    scorer keeps across calls (scored once before measuring) is not counted: it is held once per pack.
    """
    scorer.score([request])  # the kept head, if any, is computed here and not measured
    passes: list[tuple[int, int]] = []

    def record(_module, _args, _kwargs, output) -> None:
        cache = returned_cache(output)
        passes.append((id(cache), cache_nbytes(cache)))

    handle = scorer.model.model.language_model.register_forward_hook(record, with_kwargs=True)
    try:
        scorer.score([request])
    finally:
        handle.remove()
    (prefix_id, prefix_bytes), *suffix_passes = passes
    held = [size if cache_id == prefix_id else prefix_bytes + size for cache_id, size in suffix_passes]
    return max(held, default=prefix_bytes)
