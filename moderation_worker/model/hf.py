"""The production scorer: any Hugging Face image-text-to-text model, scored without a generation loop.

A policy is a yes/no question about the image. For each (image, policy) pair the model's own chat template
renders a user turn (the image, then the policy text) with thinking switched off, and one forward pass gives
the logits of the first answer token; the score is P("Yes") renormalised over {"Yes", "No"}. That is exactly
the probability greedy generation would give its first step, without generating.

Cost is dominated by two things, so both are shared:
- the vision encoder runs once per distinct image (and not at all on a feature-cache hit); its features are
  passed back into the language model for every policy of that image, through ``mm_encoder_outputs``
  (transformers >= 5.23) or as ``inputs_embeds`` with explicit 3-D positions (older 5.x, e.g. 5.17);
- all pairs of one ``score()`` call go through the language model in as few left-padded passes as possible.
Models whose features cannot be passed back (checked once at load, then verified on a probe image) are scored
with plain ``processor(images, text) -> model(**inputs)`` batches instead.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import structlog
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.glm4v.processing_glm4v import Glm4vProcessor
from transformers.processing_utils import ProcessorMixin

from moderation_worker.cache import BoundedLRUCache
from moderation_worker.errors import ConfigurationError
from moderation_worker.model.base import ImageScores, ModelInfo, ScoringRequest

log = structlog.get_logger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# How precomputed image features go back into the language model.
_Injection = Literal["mm_encoder_outputs", "inputs_embeds"]


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
class ImageFeatures:
    """One image's vision-encoder output, ready to be spliced into any prompt about that image."""

    embeds: torch.Tensor  # (image tokens, hidden), on the model's device, in the model's dtype
    grid_thw: torch.Tensor  # (1, 3): the patch grid, from which the model builds the image's positions
    placeholder: str  # the image token expanded as the processor expands it for this image

    @property
    def nbytes(self) -> int:
        return self.embeds.nbytes + self.grid_thw.nbytes + len(self.placeholder.encode())


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
        reuse_features: bool | None = None,
    ) -> None:
        if max_pairs_per_pass < 1:
            raise ConfigurationError(f"max_pairs_per_pass must be at least 1, got {max_pairs_per_pass}")
        self._model = model
        self._processor = processor
        self._tokenizer = processor.tokenizer
        self._info = info
        self._answer_ids = torch.tensor([yes_token_id, no_token_id], device=model.device)
        self._feature_cache = feature_cache
        self._max_pairs_per_pass = max_pairs_per_pass
        self._device = model.device
        forward_parameters = inspect.signature(model.forward).parameters
        self._keeps_last_logits_only = "logits_to_keep" in forward_parameters
        self._takes_mm_token_type_ids = "mm_token_type_ids" in forward_parameters
        # Features depend on the model-side preprocessing (resize budget, normalisation), not just pixels.
        self._preprocessing_key = hashlib.sha256(
            processor.image_processor.to_json_string().encode()
        ).hexdigest()[:16]
        self._render = functools.lru_cache(maxsize=4096)(self._render_uncached)
        self._injection = self._choose_feature_injection(reuse_features)

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
        reuse_features: bool | None = None,
    ) -> HFScorer:
        """Load a model (hub id or local path) through the Auto classes; ConfigurationError if unusable.

        ``max_pairs_per_pass`` bounds the rows of one language-model pass (memory). ``reuse_features``:
        None decides by checking the model family and a probe image, False forces the plain path (for
        comparisons), True requires reuse and refuses to start without it.
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
            )
        except (OSError, ValueError, ImportError, KeyError) as exc:
            raise ConfigurationError(f"cannot load model {model!r} (revision {revision}): {exc}") from exc
        _check_processor(processor, model)
        hf_model.to(torch_device).eval()

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
            reuse_features=reuse_features,
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
            if self._injection is not None:
                features, hits = self._features_for(requests)
                logits = self._in_passes(
                    pairs,
                    lambda chunk: self._answer_logits_with_features(chunk, features, self._injection),
                    length=lambda pair: features[pair.request_index].embeds.shape[0] + len(pair.text) // 4,
                )
            else:
                hits = [False] * len(requests)
                logits = self._in_passes(pairs, lambda chunk: self._answer_logits_plain(chunk, requests))
        yes = torch.softmax(logits, dim=-1)[:, 0].tolist() if pairs else []

        scores = [[0.0] * len(request.prompts) for request in requests]
        for pair, probability in zip(pairs, yes, strict=True):
            scores[pair.request_index][pair.prompt_index] = probability
        return [ImageScores(s, feature_cache_hit=hit) for s, hit in zip(scores, hits, strict=True)]

    # --- prompts -------------------------------------------------------------------------------------------

    def _render_uncached(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        # enable_thinking=False: GLM-4.6V-Flash otherwise opens its answer with <think>, not Yes/No.
        # Templates without the switch ignore it.
        return self._processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    # --- passes --------------------------------------------------------------------------------------------

    def _in_passes(
        self,
        pairs: list[_Pair],
        answer_logits: Callable[[list[_Pair]], torch.Tensor],
        length: Callable[[_Pair], int] | None = None,
    ) -> torch.Tensor:
        """(yes, no) logits per pair, in pair order, from passes of at most max_pairs_per_pass rows."""
        order = list(range(len(pairs)))
        if length is not None:  # similar lengths share a pass, so less of each pass is padding
            order.sort(key=lambda i: length(pairs[i]))
        result = torch.empty(len(pairs), 2, dtype=torch.float32)
        for start in range(0, len(order), self._max_pairs_per_pass):
            chunk = order[start : start + self._max_pairs_per_pass]
            result[chunk] = answer_logits([pairs[i] for i in chunk]).float().cpu()
        return result

    def _answer_logits(self, inputs: dict[str, Any]) -> torch.Tensor:
        if self._keeps_last_logits_only:
            inputs["logits_to_keep"] = 1
        # Rows are left-padded: the last position is every row's last real token.
        logits = self._model(**inputs, use_cache=False).logits[:, -1, :]
        return logits.index_select(-1, self._answer_ids)

    def _answer_logits_plain(self, chunk: list[_Pair], requests: Sequence[ScoringRequest]) -> torch.Tensor:
        inputs = self._processor(
            images=[[requests[pair.request_index].image] for pair in chunk],
            text=[pair.text for pair in chunk],
            padding=True,
            return_tensors="pt",
        )
        return self._answer_logits(dict(inputs.to(self._device, dtype=self._model.dtype)))

    def _answer_logits_with_features(
        self, chunk: list[_Pair], features: Sequence[ImageFeatures | None], injection: _Injection
    ) -> torch.Tensor:
        row_features = [features[pair.request_index] for pair in chunk]
        texts = [
            pair.text.replace(self._processor.image_token, f.placeholder, 1)
            for pair, f in zip(chunk, row_features, strict=True)
        ]
        encoded = self._tokenizer(texts, padding=True, return_tensors="pt")
        inputs: dict[str, Any] = {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "image_grid_thw": torch.cat([f.grid_thw for f in row_features]),
        }
        if self._takes_mm_token_type_ids:
            # Multimodal rope (Glm4v, Qwen2-VL) tells image tokens from text by these.
            inputs["mm_token_type_ids"] = torch.tensor(
                self._processor.create_mm_token_type_ids(encoded["input_ids"].tolist())
            )
        inputs = {name: value.to(self._device) for name, value in inputs.items()}
        if injection == "mm_encoder_outputs":
            # With input_ids, no pixels and no KV cache the model rebuilds its 3-D positions from input_ids,
            # image_grid_thw and the mask on every call; it never reuses rope_deltas stored by an earlier one.
            image_outputs = BaseModelOutputWithPooling(pooler_output=[f.embeds for f in row_features])
            inputs["mm_encoder_outputs"] = {"image": image_outputs}
        else:
            inputs = self._embedded(inputs, row_features)
        return self._answer_logits(inputs)

    def _embedded(self, inputs: dict[str, Any], row_features: list[ImageFeatures]) -> dict[str, Any]:
        """inputs_embeds with each image's features in its tokens' places, and explicit 3-D positions.

        For transformers versions whose forward takes no mm_encoder_outputs. Positions come from the model's
        own rope index: given inputs_embeds alone, the model would offset positions by the rope_deltas an
        earlier call left in it.
        """
        input_ids = inputs["input_ids"]
        embeds = self._model.get_input_embeddings()(input_ids)
        image_embeds = torch.cat([f.embeds for f in row_features]).to(embeds.dtype)
        is_image = (input_ids == self._model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
        position_ids, _ = self._model.model.get_rope_index(
            input_ids,
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs["image_grid_thw"],
            attention_mask=inputs["attention_mask"],
        )
        return {
            "inputs_embeds": embeds.masked_scatter(is_image, image_embeds),
            "attention_mask": inputs["attention_mask"],
            "position_ids": position_ids,
        }

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
            computed = self._compute_features([images[key] for key in missing])
            for key, features in zip(missing, computed, strict=True):
                found[key] = features
                if self._feature_cache is not None:
                    self._feature_cache.put(self._cache_key(key), features)
        features_per_request = [found[r.image_key] if r.prompts else None for r in requests]
        hits = [bool(r.prompts) and r.image_key in from_cache for r in requests]
        return features_per_request, hits

    def _cache_key(self, image_key: str) -> tuple[str, str, str]:
        return (self._info.cache_key, image_key, self._preprocessing_key)

    def _compute_features(self, images: Sequence[Image.Image]) -> list[ImageFeatures]:
        """Run the vision encoder once over ``images`` (one batch) and split its output per image."""
        processed = self._processor.image_processor(images=list(images), return_tensors="pt")
        pixel_values = processed["pixel_values"].to(self._device, dtype=self._model.dtype)
        grid_thw = processed["image_grid_thw"].to(self._device)
        with torch.inference_mode():
            output = self._model.get_image_features(
                pixel_values=pixel_values, image_grid_thw=grid_thw, return_dict=True
            )
        per_image = output.pooler_output
        if len(per_image) != len(images):
            raise RuntimeError(f"vision encoder gave {len(per_image)} outputs for {len(images)} images")
        return [
            ImageFeatures(
                # Copies, not views: a cached view would keep the whole batch's tensor alive.
                embeds=per_image[i].clone(),
                grid_thw=grid_thw[i : i + 1].clone(),
                placeholder=self._processor.replace_image_token(processed, image_idx=i),
            )
            for i in range(len(images))
        ]

    # --- choosing the strategy, once -----------------------------------------------------------------------

    def _choose_feature_injection(self, requested: bool | None) -> _Injection | None:
        """How image features go back into the model (None: the plain path). Decided once, logged once."""
        injection, reason = None, "switched off by configuration"
        if requested is not False:
            injection, reason = _feature_injection(self._model, self._processor)
        if injection is not None:
            reason = self._probe_feature_reuse(injection)
        if reason is not None and requested:
            raise ConfigurationError(f"vision-feature reuse was required but cannot be used: {reason}")
        if reason is None:
            log.info("hf_scorer_ready", model=self._info.model_id, vision_features="reused", via=injection)
            return injection
        log.warning("hf_scorer_ready", model=self._info.model_id, vision_features="per_pair", reason=reason)
        return None

    def _probe_feature_reuse(self, injection: _Injection) -> str | None:
        """Score a probe image both ways; the reason feature reuse must not be used, or None.

        A family can accept precomputed features and still need more than their pooled output (extra
        per-layer features, say); comparing against the plain path catches that before it skews verdicts.
        """
        # Non-square, so a swapped height and width would show.
        image = Image.linear_gradient("L").resize((84, 56)).convert("RGB")
        pairs = [_Pair(0, 0, self._render("Is this a probe image?"))]
        request = ScoringRequest(image=image, image_key="probe", prompts=["probe"])
        with torch.inference_mode():
            try:
                plain = self._answer_logits_plain(pairs, [request]).float()
            except Exception as exc:  # the model cannot score at all: stop the worker at start
                raise ConfigurationError(
                    f"{self._info.model_id!r} failed to score a probe image: {exc!r}"
                ) from exc
            try:
                features = self._compute_features([image])
                reused = self._answer_logits_with_features(pairs, features, injection).float()
            except Exception as exc:  # any failure means: do not use this path
                return f"precomputed features failed: {exc!r}"
        tolerance = 1e-3 if self._model.dtype == torch.float32 else 1e-1
        difference = (plain - reused).abs().max().item()
        if difference > tolerance:
            return f"precomputed features change the answer logits by {difference:.3g} (> {tolerance})"
        return None


def _feature_injection(
    model: PreTrainedModel, processor: ProcessorMixin
) -> tuple[_Injection | None, str | None]:
    """How this model family can take precomputed image features, or (None, why it cannot)."""
    if not callable(getattr(model, "get_image_features", None)):
        return None, "the model has no get_image_features"
    if "image_grid_thw" not in getattr(processor.image_processor, "model_input_names", ()):
        return None, "the image processor gives no image_grid_thw (not a Glm4v/Qwen2-VL-style family)"
    if getattr(processor, "image_token", None) is None:
        return None, "the processor names no image token"
    expands = getattr(type(processor), "replace_image_token", None)
    if expands is None or expands is getattr(ProcessorMixin, "replace_image_token", None):
        return None, "the processor does not expand its image token through replace_image_token"
    if "mm_encoder_outputs" in inspect.signature(model.forward).parameters:
        return "mm_encoder_outputs", None
    base = getattr(model, "model", None)
    if callable(getattr(base, "get_rope_index", None)) and hasattr(model.config, "image_token_id"):
        return "inputs_embeds", None  # transformers before mm_encoder_outputs (e.g. 5.17)
    return None, "the model takes neither mm_encoder_outputs nor inputs_embeds with a rope index"


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
