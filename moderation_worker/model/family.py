"""Which model families can take the fast strategies: precomputed image features and a KV cache."""

from __future__ import annotations

import inspect

from transformers import PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from moderation_worker.model.features import Injection
from moderation_worker.model.kv_cache import cache_argument


def family_reason(model: PreTrainedModel, processor: ProcessorMixin) -> str | None:
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


def feature_injection(
    model: PreTrainedModel, processor: ProcessorMixin, strategy: str
) -> tuple[Injection | None, str | None]:
    """How this model family can take precomputed image features, or (None, why it cannot)."""
    reason = family_reason(model, processor)
    if reason is not None:
        return None, reason
    if strategy == "shared_prefix" and cache_argument(model) is None:
        return None, "the model's forward takes no KV cache argument (neither cache nor past_key_values)"
    if "mm_encoder_outputs" in inspect.signature(model.forward).parameters:
        return "mm_encoder_outputs", None
    return "inputs_embeds", None  # transformers before mm_encoder_outputs (e.g. 5.17)
