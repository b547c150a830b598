"""Shared-prefix scoring: many policies of one image for little more than the cost of one.

Every policy prompt of an image starts with the same tokens: the chat template's opening, the image, and
the pack's fixed instructions; only the policy's own text differs. So the shared prefix runs once per image
with the KV cache on, and all the policies' suffixes are then scored in one batched pass against that cache,
expanded to one row per suffix. Both passes batch several images, grouped by a token budget.

The split is made on token ids: the prefix is the longest run of ids every prompt of the image starts with
(never the whole of any prompt), so prefix + suffix is exactly each full prompt's tokenisation and the
answer logits are those of the full prompt (the model is causal). Glm4v-style 3-D positions make the one
subtle part: after an image the next text position is not the token count (an image of 256 tokens advances
positions by 16), so suffix positions continue from the model's own rope index of the prefix and are passed
explicitly; nothing relies on state the model keeps between calls.

Layout of one suffix-pass row, whose cache holds its image's left-padded prefix:
    [prefix padding | prefix tokens | suffix padding | suffix tokens]
Padding in the middle is masked by the 2-D attention mask; the last column is every row's last real token,
so only one position of logits is computed per row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from transformers import Cache, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from moderation_worker.model.features import ImageFeatures, Injection, feature_inputs, pad_left, to_device
from moderation_worker.model.kv_cache import cache_argument, cache_rows, returned_cache


@dataclass(frozen=True)
class PromptSplit:
    """One image's prompts as a shared prefix and one suffix per prompt (token ids)."""

    prefix: list[int]
    suffixes: list[list[int]]


@dataclass(frozen=True)
class PrefixJob:
    """One image to score: its split prompts, its features, and where each prompt's answer goes."""

    split: PromptSplit
    features: ImageFeatures
    outputs: list[int]  # row of the caller's result tensor for each suffix, in suffix order


def split_prompts(token_rows: Sequence[Sequence[int]], image_token_id: int) -> PromptSplit | None:
    """The longest common prefix of the rows, leaving at least one token in every suffix.

    None when the prefix would not hold the whole image (a template that puts text before the image and
    differs there): such prompts cannot share the image's pass and are scored in full instead.
    """
    if not token_rows:
        raise ValueError("no prompts to split")
    shortest = min(len(row) for row in token_rows)
    length = 0
    first = token_rows[0]
    while length < shortest - 1 and all(row[length] == first[length] for row in token_rows):
        length += 1
    prefix = list(first[:length])
    if any(image_token_id in row[length:] for row in token_rows):
        return None
    return PromptSplit(prefix=prefix, suffixes=[list(row[length:]) for row in token_rows])


def group_by_budget(
    lengths: Sequence[int], *, token_budget: int, max_rows: int, extra: Callable[[int], int] = lambda i: 0
) -> list[list[int]]:
    """Indices in groups whose padded size (rows x longest row) stays within the budget.

    Sorted by length first, so rows of similar length share a pass and little of it is padding. A row
    longer than the budget still gets a group of its own (it has to run somewhere).
    """
    groups: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i] + extra(i)):
        size = lengths[index] + extra(index)
        widened = max(longest, size)
        if current and (len(current) + 1 > max_rows or (len(current) + 1) * widened > token_budget):
            groups.append(current)
            current, longest = [], 0
            widened = size
        current.append(index)
        longest = widened
    if current:
        groups.append(current)
    return groups


class SharedPrefixScorer:
    """Runs the prefix and suffix passes for a batch of images; answers go into the caller's tensor."""

    def __init__(
        self,
        *,
        model: PreTrainedModel,
        processor: ProcessorMixin,
        injection: Injection,
        answer_ids: torch.Tensor,
        pad_id: int,
        token_budget: int,
        max_rows: int,
    ) -> None:
        self._model = model
        self._processor = processor
        self._injection = injection
        self._answer_ids = answer_ids
        self._pad_id = pad_id
        self._token_budget = token_budget
        self._max_rows = max_rows
        self._text_config = model.config.get_text_config()
        argument = cache_argument(model)
        if argument is None:
            raise ValueError(f"{type(model).__name__}.forward takes no KV cache")
        self._cache_argument = argument

    def answer_logits(self, jobs: Sequence[PrefixJob], result: torch.Tensor) -> None:
        """Fill ``result[job.outputs[i]]`` with the (yes, no) logits of each job's i-th prompt."""
        prefix_lengths = [len(job.split.prefix) for job in jobs]
        for group in group_by_budget(
            prefix_lengths, token_budget=self._token_budget, max_rows=self._max_rows
        ):
            self._score_group([jobs[i] for i in group], result)

    def _score_group(self, jobs: list[PrefixJob], result: torch.Tensor) -> None:
        cache, prefix_mask, next_position = self._prefix_pass(jobs)
        rows = [(j, s) for j, job in enumerate(jobs) for s in range(len(job.split.suffixes))]
        suffix_lengths = [len(jobs[j].split.suffixes[s]) for j, s in rows]
        prefix_width = prefix_mask.shape[1]
        # Each row of a suffix pass holds a full copy of its image's cached prefix: budget both.
        chunks = group_by_budget(
            suffix_lengths,
            token_budget=self._token_budget,
            max_rows=self._max_rows,
            extra=lambda _i: prefix_width,
        )
        for chunk in chunks:
            chunk_rows = [rows[i] for i in chunk]
            logits = self._suffix_pass(jobs, chunk_rows, cache, prefix_mask, next_position)
            targets = [jobs[j].outputs[s] for j, s in chunk_rows]
            result[targets] = logits.float().cpu()

    def _prefix_pass(self, jobs: list[PrefixJob]) -> tuple[Cache, torch.Tensor, torch.Tensor]:
        """Run the prefixes once with the cache on: (cache, prefix mask, next text position per image)."""
        input_ids, attention_mask = pad_left([job.split.prefix for job in jobs], self._pad_id)
        inputs = feature_inputs(
            self._model,
            self._processor,
            input_ids,
            attention_mask,
            [job.features for job in jobs],
            self._injection,
        )
        outputs = self._model(**inputs, use_cache=True, logits_to_keep=1)
        # Padding gets position 0 from the rope index, so the max over a row is its prefix's last position.
        next_position = inputs["position_ids"].amax(dim=(0, 2)) + 1
        return returned_cache(outputs), inputs["attention_mask"], next_position

    def _suffix_pass(
        self,
        jobs: list[PrefixJob],
        rows: list[tuple[int, int]],
        cache: Cache,
        prefix_mask: torch.Tensor,
        next_position: torch.Tensor,
    ) -> torch.Tensor:
        device = self._model.device
        suffix_ids, suffix_mask = pad_left([jobs[j].split.suffixes[s] for j, s in rows], self._pad_id)
        suffix_ids, suffix_mask = to_device(suffix_ids, device), to_device(suffix_mask, device)
        image_of_row = torch.tensor([j for j, _ in rows], device=device)
        # Text tokens advance all three rope axes together: positions continue from the prefix's next one.
        offsets = (suffix_mask.cumsum(dim=1) - 1).clamp(min=0)
        positions = next_position.index_select(0, image_of_row).unsqueeze(1) + offsets
        outputs = self._model(
            input_ids=suffix_ids,
            attention_mask=torch.cat([prefix_mask.index_select(0, image_of_row), suffix_mask], dim=1),
            position_ids=positions.unsqueeze(0).expand(3, -1, -1),
            use_cache=True,
            logits_to_keep=1,
            **{self._cache_argument: cache_rows(cache, image_of_row, config=self._text_config)},
        )
        return outputs.logits[:, -1, :].index_select(-1, self._answer_ids)
