"""Loading a Hugging Face model and its processor the way the scorer needs them, and the checks at load.

Everything here runs once per process; a model that cannot be used stops the worker with a
ConfigurationError naming the model and what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PretrainedConfig, PreTrainedModel
from transformers.models.glm4v.processing_glm4v import Glm4vProcessor
from transformers.processing_utils import ProcessorMixin

from moderation_worker.errors import ConfigurationError
from moderation_worker.model.base import ModelInfo

log = structlog.get_logger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
class LoadedModel:
    model: PreTrainedModel
    processor: ProcessorMixin
    info: ModelInfo


def load_model(
    model: str,
    *,
    revision: str | None,
    device: str,
    dtype: str,
    attn_implementation: str | None,
    local_files_only: bool,
    compile_model: bool,
) -> LoadedModel:
    """The model in eval mode on its device and its processor, the tokenizer set to pad on the left."""
    torch_device = _resolve_device(device)
    torch_dtype = _resolve_dtype(dtype, torch_device)
    try:
        processor = AutoProcessor.from_pretrained(model, revision=revision, local_files_only=local_files_only)
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
    return LoadedModel(model=hf_model, processor=processor, info=info)


def answer_token_id(loaded: LoadedModel, token: str, role: str) -> int:
    """The id of an answer word, which must be one token of the model's vocabulary."""
    vocab_size = loaded.model.get_output_embeddings().weight.shape[0]
    return _single_token_id(loaded.processor.tokenizer, token, role, loaded.info.model_id, vocab_size)


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
