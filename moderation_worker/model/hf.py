"""The production scorer: any Hugging Face image-text-to-text model, scored without a generation loop.

A policy is a yes/no question about the image. For each (image, policy) pair the model's own chat template
renders a user turn (the image, then the policy text) with thinking switched off, and the logits of the first
answer token give the score: P("Yes") renormalised over {"Yes", "No"}. That is exactly the probability greedy
generation would give its first step, without generating.

Three strategies, fastest first; the fastest one the model supports and passes a probe with is chosen once at
load and logged (``strategy`` forces one):
- ``shared_prefix``: the vision encoder runs once per distinct image (not at all on a feature-cache hit), the
  prompt prefix all policies share (template, image, fixed instructions) runs once per image with the KV cache
  on, and the policy suffixes are scored in one batched pass against it (see prefix.py);
- ``reused_features``: vision features once per image, then one full language-model pass per policy;
- ``plain``: ``processor(images, text) -> model(**inputs)`` per pair, for any other model family.
Every strategy batches across images, in passes bounded by rows and by a token budget.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from PIL import Image
from transformers import PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from moderation_worker.cache import BoundedLRUCache
from moderation_worker.errors import ConfigurationError
from moderation_worker.model.base import ImageScores, ModelInfo, ScoringRequest
from moderation_worker.model.choice import STRATEGIES, Strategy, StrategyChoice
from moderation_worker.model.features import (
    ImageFeatures,
    Injection,
    compute_features,
    feature_inputs,
    pad_left,
    to_device,
)
from moderation_worker.model.loading import Glm4vImageOnlyProcessor, answer_token_id, load_model
from moderation_worker.model.prefix import (
    HeadKV,
    PrefixJob,
    SharedPrefixScorer,
    cacheable_head,
    group_by_budget,
    split_prompts,
)
from moderation_worker.model.prompts import PromptTokens, render_prompt

__all__ = ["Glm4vImageOnlyProcessor", "HFScorer", "ImageFeatures", "Strategy"]


@dataclass(frozen=True)
class _Pair:
    request_index: int
    prompt_index: int
    text: str  # the rendered chat prompt; holds the processor's image token once


class HFScorer(StrategyChoice):
    """Scores images against policy prompts with a Hugging Face image-text-to-text model.

    Build it with :meth:`from_pretrained`. Not thread-safe: one scoring thread calls :meth:`score`.
    """

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        info: ModelInfo,
        yes_token_id: int,
        no_token_id: int,
        feature_cache: BoundedLRUCache[ImageFeatures] | None = None,
        max_pairs_per_pass: int = 64,
        token_budget: int = 16_384,
        strategy: Literal["auto"] | Strategy = "auto",
        suffix_layout: Literal["auto", "packed", "rows"] = "auto",
    ) -> None:
        if max_pairs_per_pass < 1:
            raise ConfigurationError(f"max_pairs_per_pass must be at least 1, got {max_pairs_per_pass}")
        if token_budget < 1:
            raise ConfigurationError(f"token_budget must be at least 1, got {token_budget}")
        if strategy != "auto" and strategy not in STRATEGIES:
            raise ConfigurationError(f"unknown scoring strategy {strategy!r}; expected auto or {STRATEGIES}")
        self._model = model
        self._processor = processor
        self._tokenizer = processor.tokenizer
        self._info = info
        self._answer_ids = torch.tensor([yes_token_id, no_token_id], device=model.device)
        self._feature_cache = feature_cache
        self._max_pairs_per_pass = max_pairs_per_pass
        self._token_budget = token_budget
        self._device = model.device
        self._keeps_last_logits_only = "logits_to_keep" in inspect.signature(model.forward).parameters
        # Features depend on the model-side preprocessing (resize budget, normalisation), not just pixels.
        self._preprocessing_key = hashlib.sha256(
            processor.image_processor.to_json_string().encode()
        ).hexdigest()[:16]
        self._render = functools.lru_cache(maxsize=4096)(self._render_uncached)
        self._prompt_tokens = PromptTokens(processor)
        self._heads = HeadKV(
            token_budget=token_budget
        )  # the KV of long prompt heads (a compact pack's catalogue), kept across calls
        self._layout = "rows"  # the probes of the strategies run on the layout that always works
        self._injection, self._strategy = self._choose_strategy(strategy)
        self._layout = self._choose_layout(suffix_layout)
        self._info = replace(info, strategy=self._strategy)  # verdicts and /metrics say how they were scored

    @classmethod
    def from_pretrained(
        cls,
        model: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        feature_cache: BoundedLRUCache[ImageFeatures] | None = None,
        yes_token: str = "Yes",
        no_token: str = "No",
        attn_implementation: str | None = None,
        local_files_only: bool = False,
        max_pairs_per_pass: int = 64,
        token_budget: int = 16_384,
        strategy: Literal["auto"] | Strategy = "auto",
        suffix_layout: Literal["auto", "packed", "rows"] = "auto",
        compile_model: bool = False,
    ) -> HFScorer:
        """Load a model (hub id or local path) through the Auto classes; ConfigurationError if unusable.

        ``max_pairs_per_pass`` bounds the rows of one pass and ``token_budget`` its tokens (padded prompt
        tokens, or rows x cached tokens in a suffix pass): together they bound activation and KV memory.
        ``strategy``: "auto" picks the fastest the model passes a probe with; a named one is required and
        refuses to start without it (for comparisons and benchmarks). ``compile_model`` wraps the model in
        ``torch.compile`` (dynamic shapes); worth it on a GPU for long runs, the first batches compile.
        """
        loaded = load_model(
            model,
            revision=revision,
            device=device,
            dtype=dtype,
            attn_implementation=attn_implementation,
            local_files_only=local_files_only,
            compile_model=compile_model,
        )
        return cls(
            model=loaded.model,
            processor=loaded.processor,
            info=loaded.info,
            yes_token_id=answer_token_id(loaded, yes_token, "yes_token"),
            no_token_id=answer_token_id(loaded, no_token, "no_token"),
            feature_cache=feature_cache,
            max_pairs_per_pass=max_pairs_per_pass,
            token_budget=token_budget,
            strategy=strategy,
            suffix_layout=suffix_layout,
        )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def model(self) -> PreTrainedModel:
        """The loaded transformers model (for hooks, diagnostics and benchmarks; do not mutate)."""
        return self._model

    @property
    def processor(self) -> ProcessorMixin:
        return self._processor

    @property
    def strategy(self) -> Strategy:
        """How scores are computed: "shared_prefix", "reused_features" or "plain" (chosen at load)."""
        return self._strategy

    @functools.cached_property
    def useful_image_edge(self) -> int | None:
        """The longest edge the model's processor keeps of a 2:1 image far above its pixel budget.

        Images decoded no larger than this (at aspect ratios up to 2:1) lose nothing the model would
        see. None when the processor does not say (no patch grid) or keeps even the large probe whole.
        """
        image_processor = self._processor.image_processor
        patch = getattr(image_processor, "patch_size", None)
        probe = Image.new("RGB", (4096, 2048))
        try:
            grid = image_processor(images=[probe], return_tensors="pt").get("image_grid_thw")
        except Exception:  # a processor that cannot say: keep the configured edge
            return None
        if grid is None or not isinstance(patch, int):
            return None
        edge = int(grid[0, 2]) * patch
        return edge if edge < probe.width else None

    @property
    def kept_kv_bytes(self) -> int:
        """Bytes of the KV kept across calls: the heads before the image (a compact pack's catalogue)."""
        return self._heads.nbytes

    @property
    def reuses_features(self) -> bool:
        """Whether vision features are computed once per image (False: the plain fallback is in use)."""
        return self._injection is not None

    @property
    def feature_injection(self) -> str | None:
        """How reused features reach the model: "mm_encoder_outputs", "inputs_embeds", or None (plain)."""
        return self._injection

    def score(self, requests: Sequence[ScoringRequest]) -> list[ImageScores]:
        pairs = self._pairs(requests)
        with torch.inference_mode():
            logits, hits = self._answer_logits_per_pair(pairs, requests, self._strategy, self._injection)
        yes = torch.softmax(logits, dim=-1)[:, 0].tolist() if pairs else []

        scores = [[0.0] * len(request.prompts) for request in requests]
        for pair, probability in zip(pairs, yes, strict=True):
            scores[pair.request_index][pair.prompt_index] = probability
        return [ImageScores(s, feature_cache_hit=hit) for s, hit in zip(scores, hits, strict=True)]

    def _pairs(self, requests: Sequence[ScoringRequest]) -> list[_Pair]:
        return [
            _Pair(r, p, self._render(prompt, request.preamble))
            for r, request in enumerate(requests)
            for p, prompt in enumerate(request.prompts)
        ]

    def _answer_logits_per_pair(
        self,
        pairs: list[_Pair],
        requests: Sequence[ScoringRequest],
        strategy: Strategy,
        injection: Injection | None,
    ) -> tuple[torch.Tensor, list[bool]]:
        """(yes, no) logits per pair, in pair order, and per request whether its features were cached."""
        result = torch.empty(len(pairs), 2, dtype=torch.float32)
        if strategy == "plain" or injection is None:
            # Image tokens are unknown before the processor runs, so here the budget sees text only
            # (about 4 characters a token) and the row cap does most of the bounding.
            lengths = [len(pair.text) // 4 for pair in pairs]
            self._in_passes(
                list(range(len(pairs))), lengths, result, lambda ids: self._logits_plain(pairs, ids, requests)
            )
            return result, [False] * len(requests)
        features, hits = self._features_for(requests)
        token_rows = self._token_rows(pairs, features)
        in_full = list(range(len(pairs)))
        if strategy == "shared_prefix":
            jobs, in_full = self._prefix_jobs(pairs, features, token_rows)
            self._prefix_scorer(injection).answer_logits(jobs, result)
        self._in_passes(
            in_full,
            [len(token_rows[i]) for i in in_full],
            result,
            lambda ids: self._logits_full(pairs, ids, token_rows, features, injection),
        )
        return result, hits

    # --- prompts -------------------------------------------------------------------------------------------

    def _render_uncached(self, prompt: str, preamble: str = "") -> str:
        return render_prompt(self._processor, prompt, preamble)

    def _token_rows(self, pairs: list[_Pair], features: Sequence[ImageFeatures | None]) -> list[list[int]]:
        """Each pair's full prompt as token ids, its image token expanded for its image."""
        placeholders = [features[pair.request_index].placeholder for pair in pairs]
        return self._prompt_tokens.rows([pair.text for pair in pairs], placeholders)

    # --- shared prefix -------------------------------------------------------------------------------------

    def _prefix_jobs(
        self,
        pairs: list[_Pair],
        features: Sequence[ImageFeatures | None],
        token_rows: list[list[int]],
    ) -> tuple[list[PrefixJob], list[int]]:
        """One job per request with several prompts, and the pairs to score in full passes instead."""
        by_request: dict[int, list[int]] = {}
        for index, pair in enumerate(pairs):
            by_request.setdefault(pair.request_index, []).append(index)
        jobs, unshared = [], []
        image_token_id = self._model.config.image_token_id
        for request_index, indices in by_request.items():
            split = split_prompts([token_rows[i] for i in indices], image_token_id)
            # One prompt shares nothing with others: one full pass beats a prefix pass plus a suffix pass,
            # unless a kept head (a compact pack's catalogue) saves most of its tokens.
            alone = (
                len(indices) == 1 and split is not None and not cacheable_head(split.prefix, image_token_id)
            )
            if split is None or alone:
                unshared.extend(indices)
                continue
            jobs.append(PrefixJob(split=split, features=features[request_index], outputs=indices))
        return jobs, unshared

    def _prefix_scorer(self, injection: Injection) -> SharedPrefixScorer:
        return SharedPrefixScorer(
            model=self._model,
            processor=self._processor,
            injection=injection,
            answer_ids=self._answer_ids,
            pad_id=self._tokenizer.pad_token_id,
            token_budget=self._token_budget,
            max_rows=self._max_pairs_per_pass,
            layout=self._layout,
            heads=self._heads,
        )

    # --- full passes ---------------------------------------------------------------------------------------

    def _in_passes(
        self,
        indices: list[int],
        lengths: list[int],
        result: torch.Tensor,
        answer_logits: Callable[[list[int]], torch.Tensor],
    ) -> None:
        """Fill result[i] for each pair index i, in passes bounded by rows and by padded tokens."""
        groups = group_by_budget(lengths, token_budget=self._token_budget, max_rows=self._max_pairs_per_pass)
        for group in groups:
            chunk = [indices[g] for g in group]
            result[chunk] = answer_logits(chunk).float().cpu()

    def _answer_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        if self._keeps_last_logits_only:
            inputs["logits_to_keep"] = 1
        # Rows are left-padded: the last position is every row's last real token.
        logits = self._model(**inputs, use_cache=False).logits[:, -1, :]
        return logits.index_select(-1, self._answer_ids)

    def _logits_plain(
        self, pairs: list[_Pair], chunk: list[int], requests: Sequence[ScoringRequest]
    ) -> torch.Tensor:
        inputs = self._processor(
            images=[[requests[pairs[i].request_index].image] for i in chunk],
            text=[pairs[i].text for i in chunk],
            padding=True,
            return_tensors="pt",
        )
        inputs = {name: to_device(value, self._device) for name, value in inputs.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return self._answer_logits(inputs)

    def _logits_full(
        self,
        pairs: list[_Pair],
        chunk: list[int],
        token_rows: list[list[int]],
        features: Sequence[ImageFeatures | None],
        injection: Injection,
    ) -> torch.Tensor:
        input_ids, attention_mask = pad_left([token_rows[i] for i in chunk], self._tokenizer.pad_token_id)
        row_features = [features[pairs[i].request_index] for i in chunk]
        inputs = feature_inputs(
            self._model, self._processor, input_ids, attention_mask, row_features, injection
        )
        return self._answer_logits(inputs)

    # --- vision features -----------------------------------------------------------------------------------

    def _features_for(
        self, requests: Sequence[ScoringRequest]
    ) -> tuple[list[ImageFeatures | None], list[bool]]:
        """Features per request (None for one with no prompts) and whether each came from the cache.

        Each distinct image_key is looked up once; all misses go through the vision encoder in one batch.
        """
        images = {r.image_key: r.image for r in requests if r.prompts}
        found: dict[str, ImageFeatures] = {}
        if self._feature_cache is not None:
            for key in images:
                cached = self._feature_cache.get(self._cache_key(key))
                if cached is not None:
                    found[key] = cached
        from_cache = set(found)
        missing = [key for key in images if key not in found]
        if missing:
            computed = compute_features(self._model, self._processor, [images[key] for key in missing])
            for key, features in zip(missing, computed, strict=True):
                found[key] = features
                if self._feature_cache is not None:
                    self._feature_cache.put(self._cache_key(key), features)
        features_per_request = [found[r.image_key] if r.prompts else None for r in requests]
        hits = [bool(r.prompts) and r.image_key in from_cache for r in requests]
        return features_per_request, hits

    def _cache_key(self, image_key: str) -> tuple[str, str, str]:
        return (self._info.cache_key, image_key, self._preprocessing_key)


# Text before the probe image, long enough that its KV is kept (prefix.MIN_CACHED_HEAD_TOKENS).
_PROBE_RULES = "Probe rules, by number:\n" + "\n".join(
    f"{n}. Rule {n}: nothing shown in this probe image may break rule number {n}." for n in range(1, 5)
)
