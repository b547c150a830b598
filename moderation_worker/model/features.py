"""Vision features computed once per image, and the model inputs that splice them back into prompts.

Glm4v / Qwen2-VL-style models encode an image into a run of image-token embeddings and give those tokens
3-D rotary positions (time, height, width) from the image's patch grid. Both are rebuilt here for every
pass from explicit inputs, so no pass depends on state an earlier call left in the model (``rope_deltas``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from transformers import PreTrainedModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.processing_utils import ProcessorMixin

# How precomputed image features go back into the language model: ``mm_encoder_outputs`` (transformers
# >= 5.23) or ``inputs_embeds`` with the features scattered into the image tokens' places (older 5.x).
Injection = Literal["mm_encoder_outputs", "inputs_embeds"]


@dataclass(frozen=True)
class ImageFeatures:
    """One image's vision-encoder output, ready to be spliced into any prompt about that image."""

    embeds: torch.Tensor  # (image tokens, hidden), on the model's device, in the model's dtype
    grid_thw: torch.Tensor  # (1, 3): the patch grid, from which the model builds the image's positions
    placeholder: str  # the image token expanded as the processor expands it for this image

    @property
    def nbytes(self) -> int:
        return self.embeds.nbytes + self.grid_thw.nbytes + len(self.placeholder.encode())


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host to device; through pinned memory on CUDA so the copy is a DMA that overlaps host work."""
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def compute_features(
    model: PreTrainedModel, processor: ProcessorMixin, images: Sequence[Any]
) -> list[ImageFeatures]:
    """Run the vision encoder once over ``images`` (one batch) and split its output per image."""
    processed = processor.image_processor(images=list(images), return_tensors="pt")
    pixel_values = to_device(processed["pixel_values"], model.device).to(model.dtype)
    grid_thw = to_device(processed["image_grid_thw"], model.device)
    with torch.inference_mode():
        output = model.get_image_features(
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
            placeholder=processor.replace_image_token(processed, image_idx=i),
        )
        for i in range(len(images))
    ]


def pad_left(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(ids, mask), left-padded: every row's last real token sits at position -1."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long)
            mask[i, width - len(row) :] = 1
    return ids, mask


def feature_inputs(
    model: PreTrainedModel,
    processor: ProcessorMixin,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    row_features: Sequence[ImageFeatures],
    injection: Injection,
    *,
    head: Sequence[int] = (),
) -> dict[str, Any]:
    """Forward inputs for token rows that each hold one image's tokens, with its features spliced in.

    Positions are always passed explicitly, computed by the model's own rope index from the ids, the
    image grids and the mask (so left padding does not shift them). ``head``: tokens every row starts
    with whose KV the caller supplies as a cache: the rope index runs over head + row, the inputs hold
    the row only, and the mask covers both (as a forward with a cache expects).
    """
    device = model.device
    if head:
        rows = input_ids.shape[0]
        input_ids = torch.cat([torch.tensor([list(head)] * rows, dtype=torch.long), input_ids], dim=1)
        attention_mask = torch.cat([torch.ones((rows, len(head)), dtype=torch.long), attention_mask], dim=1)
    mm_token_type_ids = torch.tensor(processor.create_mm_token_type_ids(input_ids.tolist()))
    grid_thw = torch.cat([f.grid_thw for f in row_features]).to(device)
    input_ids, attention_mask = to_device(input_ids, device), to_device(attention_mask, device)
    mm_token_type_ids = to_device(mm_token_type_ids, device)
    position_ids, _ = model.model.get_rope_index(
        input_ids,
        mm_token_type_ids=mm_token_type_ids,
        image_grid_thw=grid_thw,
        attention_mask=attention_mask,
    )
    input_ids, position_ids = input_ids[:, len(head) :], position_ids[..., len(head) :]
    if injection == "mm_encoder_outputs":
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "image_grid_thw": grid_thw,
            "mm_encoder_outputs": {
                "image": BaseModelOutputWithPooling(pooler_output=[f.embeds for f in row_features])
            },
        }
    embeds = model.get_input_embeddings()(input_ids)
    image_embeds = torch.cat([f.embeds for f in row_features]).to(embeds.dtype)
    is_image = (input_ids == model.config.image_token_id).unsqueeze(-1).expand_as(embeds)
    return {
        "inputs_embeds": embeds.masked_scatter(is_image, image_embeds),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
    }
