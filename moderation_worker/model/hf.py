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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import structlog
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PretrainedConfig, PreTrainedModel
from transformers.models.glm4v.processing_glm4v import Glm4vProcessor
from transformers.processing_utils import ProcessorMixin

from moderation_worker.cache import BoundedLRUCache
from moderation_worker.errors import ConfigurationError
from moderation_worker.model.base import ImageScores, ModelInfo, ScoringRequest
from moderation_worker.model.features import (
    ImageFeatures,
    Injection,
    compute_features,
    feature_inputs,
    pad_left,
    to_device,
)
from moderation_worker.model.kv_cache import cache_argument
from moderation_worker.model.prefix import PrefixJob, SharedPrefixScorer, group_by_budget, split_prompts

log = structlog.get_logger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

Strategy = Literal["shared_prefix", "reused_features", "plain"]
# Fastest first: "auto" takes the first one the model supports and passes the load-time probe with.
_STRATEGIES: tuple[Strategy, ...] = ("shared_prefix", "reused_features", "plain")

__all__ = ["Glm4vImageOnlyProcessor", "HFScorer", "ImageFeatures", "Strategy"]


class Glm4vImageOnlyProcessor(Glm4vProcessor):
    """Glm4vProcessor without its video slot.

    Glm4vProcessor type-checks a video processor, which needs torchvision; CPU machines have none, and the
    worker never scores video. Saved models name this class in processor_config.json (the tiny test model
    does); real GLM checkpoints name their own processor and never reach this one.
    """

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class _LookupByNameOnly(PretrainedConfig):
    """A config class no model uses: the key under which our processors are registered with AutoProcessor.

    AutoProcessor resolves the ``processor_class`` name saved with a model among the registered classes, so
    registering under this key makes ours loadable by name without claiming any real model type (registering
    under Glm4vConfig would hand real GLM-4.1V checkpoints our class, and transformers silently ignores it
    anyway). Without the registration AutoProcessor silently returns only the tokenizer.
    """

    model_type = "moderation_worker_processor_lookup"


# At import, so every loader in this process (the scorer, tests, tools) resolves the name the same way.
AutoProcessor.register(_LookupByNameOnly, Glm4vImageOnlyProcessor, exist_ok=True)


@dataclass(frozen=True)
class _Pair:
    request_index: int
    prompt_index: int
    text: str  # the rendered chat prompt; holds the processor's image token once


class HFScorer:
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
        if strategy != "auto" and strategy not in _STRATEGIES:
            raise ConfigurationError(f"unknown scoring strategy {strategy!r}; expected auto or {_STRATEGIES}")
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
        torch_device = _resolve_device(device)
        torch_dtype = _resolve_dtype(dtype, torch_device)
        try:
            processor = AutoProcessor.from_pretrained(
                model, revision=revision, local_files_only=local_files_only
            )
            hf_model = AutoModelForImageTextToText.from_pretrained(
                model,
                revision=revision,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                local_files_only=local_files_only,
                # Straight onto the device, tensor by tensor: loading on the host first and then
                # moving needs the whole model in host memory (19 GB for a 9B model in bf16, against
                # 16 GiB on a g6.xlarge).
                device_map=str(torch_device),
            )
        except (OSError, ValueError, ImportError, KeyError) as exc:
            raise ConfigurationError(f"cannot load model {model!r} (revision {revision}): {exc}") from exc
        _check_processor(processor, model)
        hf_model.eval()
        if compile_model:
            _compile_decoder(hf_model)

        tokenizer = processor.tokenizer
        # Left padding keeps every row's last real token at position -1, so only one position of logits
        # is computed per row; positions are rebuilt from the attention mask, so padding does not shift them.
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ConfigurationError(f"the tokenizer of {model!r} has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token

        info = ModelInfo(
            model_id=model,
            # The commit the hub resolved the revision to, so a moved branch changes every cache key.
            revision=getattr(hf_model.config, "_commit_hash", None) or revision or "local",
            dtype=str(torch_dtype).removeprefix("torch."),
            device=str(torch_device),
        )
        vocab_size = hf_model.get_output_embeddings().weight.shape[0]
        return cls(
            model=hf_model,
            processor=processor,
            info=info,
            yes_token_id=_single_token_id(tokenizer, yes_token, "yes_token", model, vocab_size),
            no_token_id=_single_token_id(tokenizer, no_token, "no_token", model, vocab_size),
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
    def reuses_features(self) -> bool:
        """Whether vision features are computed once per image (False: the plain fallback is in use)."""
        return self._injection is not None

    @property
    def feature_injection(self) -> str | None:
        """How reused features reach the model: "mm_encoder_outputs", "inputs_embeds", or None (plain)."""
        return self._injection

    def score(self, requests: Sequence[ScoringRequest]) -> list[ImageScores]:
        pairs = [
            _Pair(r, p, self._render(prompt))
            for r, request in enumerate(requests)
            for p, prompt in enumerate(request.prompts)
        ]
        with torch.inference_mode():
            logits, hits = self._answer_logits_per_pair(pairs, requests, self._strategy, self._injection)
        yes = torch.softmax(logits, dim=-1)[:, 0].tolist() if pairs else []

        scores = [[0.0] * len(request.prompts) for request in requests]
        for pair, probability in zip(pairs, yes, strict=True):
            scores[pair.request_index][pair.prompt_index] = probability
        return [ImageScores(s, feature_cache_hit=hit) for s, hit in zip(scores, hits, strict=True)]

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

    def _render_uncached(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        # enable_thinking=False: GLM-4.6V-Flash otherwise opens its answer with <think>, not Yes/No.
        # Templates without the switch ignore it.
        return self._processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def _token_rows(self, pairs: list[_Pair], features: Sequence[ImageFeatures | None]) -> list[list[int]]:
        """Each pair's full prompt as token ids, its image token expanded for its image."""
        texts = [
            pair.text.replace(self._processor.image_token, features[pair.request_index].placeholder, 1)
            for pair in pairs
        ]
        return self._tokenizer(texts)["input_ids"] if texts else []

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
        for request_index, indices in by_request.items():
            if len(indices) == 1:  # nothing to share: one full pass beats a prefix pass plus a suffix pass
                unshared.extend(indices)
                continue
            split = split_prompts([token_rows[i] for i in indices], self._model.config.image_token_id)
            if split is None:
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

    # --- choosing the strategy, once -----------------------------------------------------------------------

    def _choose_strategy(self, requested: Literal["auto"] | Strategy) -> tuple[Injection | None, Strategy]:
        """The injection and strategy to score with, the fastest that works here. Decided and logged once."""
        candidates = _STRATEGIES if requested == "auto" else (requested,)
        rejected: dict[str, str] = {}
        for strategy in candidates:
            injection, reason = None, None
            if strategy != "plain":
                injection, reason = _feature_injection(self._model, self._processor, strategy)
            if reason is None:
                reason = self._probe(strategy, injection)
            if reason is None:
                log.info(
                    "hf_scorer_ready",
                    model=self._info.model_id,
                    strategy=strategy,
                    via=injection,
                    **({"not_used": rejected} if rejected else {}),
                )
                self._warn_if_prefix_lost(strategy, rejected)
                return injection, strategy
            if requested != "auto":
                raise ConfigurationError(
                    f"scoring strategy {strategy!r} was required but cannot be used: {reason}"
                )
            rejected[strategy] = reason
        raise AssertionError("the plain strategy either passes its probe or raises")  # pragma: no cover

    @property
    def suffix_layout(self) -> str:
        """How shared-prefix suffixes are laid out: ``packed`` (the prefix KV once per image) or
        ``rows`` (a copy per policy); ``rows`` for the other strategies."""
        return self._layout

    def _choose_layout(self, requested: str) -> str:
        """``auto``: on a GPU, ``packed`` where it passes the probe and also scores it faster (a custom
        mask can cost the fastest attention kernels); on a CPU ``rows``, measured faster there (the
        dense block mask over a row of every suffix costs more than the prefix copies save: benchmark
        section 1). ``packed`` is then the choice for memory, on request. Decided and logged once."""
        if self._strategy != "shared_prefix" or requested == "rows":
            return "rows"
        if requested == "auto" and self._device.type != "cuda":
            return "rows"
        self._layout = "packed"
        reason = self._probe("shared_prefix", self._injection)
        if reason is None and requested == "auto" and self._device.type == "cuda":
            packed_s, rows_s = self._time_layouts()
            if packed_s > rows_s:
                reason = f"slower here: {packed_s * 1000:.1f} ms against {rows_s * 1000:.1f} ms per probe"
        if reason is not None and requested == "packed":
            raise ConfigurationError(f"the packed suffix layout was required but cannot be used: {reason}")
        layout = "packed" if reason is None else "rows"
        log.info("suffix_layout_chosen", layout=layout, **({"packed_not_used": reason} if reason else {}))
        return layout

    def _time_layouts(self, repeats: int = 3) -> tuple[float, float]:
        """Seconds per probe scoring (8 prompts) with each layout, the best of ``repeats``."""
        image = Image.linear_gradient("L").resize((224, 224)).convert("RGB")
        prompts = [f"Probe question {n}?" for n in range(8)]
        request = ScoringRequest(image=image, image_key="layout-probe", prompts=prompts)
        timings = {}
        cache, self._feature_cache = self._feature_cache, None
        try:
            for layout in ("packed", "rows"):
                self._layout = layout
                best = math.inf
                for _ in range(repeats + 1):  # the first is warm-up
                    started = time.perf_counter()
                    self.score([request])
                    torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - started)
                timings[layout] = best
        finally:
            self._feature_cache = cache
        return timings["packed"], timings["rows"]

    def _warn_if_prefix_lost(self, chosen: Strategy, rejected: dict[str, str]) -> None:
        """A family built for the shared prefix that falls back loses most of its speed: say so loudly.

        Families that never could (no 3-D positions from explicit inputs) fall back silently, as designed.
        A new transformers release renaming an argument is the usual cause, which a warning makes visible
        on the first start instead of as a slower fleet.
        """
        if "shared_prefix" not in rejected or _family_reason(self._model, self._processor) is not None:
            return
        log.warning(
            "shared_prefix_unavailable",
            model=self._info.model_id,
            family=type(self._model).__name__,
            reason=rejected["shared_prefix"],
            strategy=chosen,
        )

    def _probe(self, strategy: Strategy, injection: Injection | None) -> str | None:
        """Score a probe image with ``strategy`` and the plain path; why it must not be used, or None.

        A family can accept precomputed features or a cache and still differ (extra per-layer features, a
        position scheme the split does not continue): comparing against the plain path catches that at
        start, before it skews verdicts. The plain path itself failing stops the worker.
        """
        # Non-square, so a swapped height and width would show; two prompts, so suffixes differ.
        image = Image.linear_gradient("L").resize((84, 56)).convert("RGB")
        prompts = ["Is this a probe image?", "Does this picture show text or a sign?"]
        requests = [ScoringRequest(image=image, image_key="probe", prompts=prompts)]
        pairs = [_Pair(0, p, self._render(prompt)) for p, prompt in enumerate(prompts)]
        with torch.inference_mode():
            try:
                plain, _ = self._answer_logits_per_pair(pairs, requests, "plain", None)
            except Exception as exc:  # the model cannot score at all: stop the worker at start
                raise ConfigurationError(
                    f"{self._info.model_id!r} failed to score a probe image: {exc!r}"
                ) from exc
            if strategy == "plain":
                return None
            cache, self._feature_cache = self._feature_cache, None  # the probe must not fill the cache
            try:
                tried, _ = self._answer_logits_per_pair(pairs, requests, strategy, injection)
            except Exception as exc:  # any failure means: do not use this strategy
                return f"it failed on a probe image: {exc!r}"
            finally:
                self._feature_cache = cache
        tolerance = 1e-3 if self._model.dtype == torch.float32 else 1e-1
        difference = (plain - tried).abs().max().item()
        if difference > tolerance:
            return f"it changes the probe's answer logits by {difference:.3g} (> {tolerance})"
        return None


def _family_reason(model: PreTrainedModel, processor: ProcessorMixin) -> str | None:
    """Why this is not a Glm4v / Qwen2-VL-style family (vision features and 3-D positions from explicit
    inputs), or None when it is: such a family should take the shared prefix."""
    if not callable(getattr(model, "get_image_features", None)):
        return "the model has no get_image_features"
    if "image_grid_thw" not in getattr(processor.image_processor, "model_input_names", ()):
        return "the image processor gives no image_grid_thw (not a Glm4v/Qwen2-VL-style family)"
    if getattr(processor, "image_token", None) is None:
        return "the processor names no image token"
    expands = getattr(type(processor), "replace_image_token", None)
    if expands is None or expands is getattr(ProcessorMixin, "replace_image_token", None):
        return "the processor does not expand its image token through replace_image_token"
    if not callable(getattr(getattr(model, "model", None), "get_rope_index", None)):
        return "the model has no rope index to give its image tokens explicit positions"
    if not hasattr(model.config, "image_token_id"):
        return "the model config names no image_token_id"
    return None


def _feature_injection(
    model: PreTrainedModel, processor: ProcessorMixin, strategy: Strategy
) -> tuple[Injection | None, str | None]:
    """How this model family can take precomputed image features, or (None, why it cannot)."""
    reason = _family_reason(model, processor)
    if reason is not None:
        return None, reason
    if strategy == "shared_prefix" and cache_argument(model) is None:
        return None, "the model's forward takes no KV cache argument (neither cache nor past_key_values)"
    if "mm_encoder_outputs" in inspect.signature(model.forward).parameters:
        return "mm_encoder_outputs", None
    return "inputs_embeds", None  # transformers before mm_encoder_outputs (e.g. 5.17)


def _compile_decoder(model: PreTrainedModel) -> None:
    """torch.compile the language model's decoder stack, where nearly all the FLOPs are, in place.

    Not the whole forward: its multimodal glue (placeholder checks, rope index) breaks graphs and
    recompiles per shape for no gain. Dynamic shapes, because every batch pads to a new length.
    """
    decoder = getattr(getattr(model, "model", None), "language_model", None) or model
    decoder.compile(dynamic=True)
    log.info("model_compiled", module=type(decoder).__name__)


def _check_processor(processor: Any, model: str) -> None:
    if not isinstance(processor, ProcessorMixin) or getattr(processor, "image_processor", None) is None:
        raise ConfigurationError(
            f"AutoProcessor gave a {type(processor).__name__} for {model!r}, not a processor with an image "
            "processor: its processor class is unknown to this transformers (unregistered) or failed to load"
        )
    if getattr(processor, "chat_template", None) is None:
        raise ConfigurationError(f"the processor of {model!r} has no chat template")


def _single_token_id(tokenizer: Any, token: str, role: str, model: str, vocab_size: int) -> int:
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise ConfigurationError(
            f"{role} {token!r} must be a single token of {model!r}'s tokenizer, but it tokenises to "
            f"{len(ids)} tokens {pieces!r} (ids {ids}); choose an answer word the vocabulary holds whole"
        )
    if ids[0] >= vocab_size:
        raise ConfigurationError(f"{role} {token!r} has id {ids[0]}, outside the model's {vocab_size} logits")
    return ids[0]


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigurationError(f"unknown device {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigurationError(f"device {device!r} requested but CUDA is not available")
    return resolved


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in _DTYPES:
        raise ConfigurationError(f"unknown dtype {dtype!r}; expected 'auto' or one of {sorted(_DTYPES)}")
    return _DTYPES[dtype]
