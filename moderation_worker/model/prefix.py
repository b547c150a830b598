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
so only one position of logits is computed per row. Each row holds a copy of its image's prefix KV.

The packed layout (``layout="packed"``) holds the prefix KV once per image instead: one row per image,
    [prefix padding | prefix tokens | suffix padding | suffix 1 | suffix 2 | ... | suffix N]
with a block attention mask (as tree attention in speculative decoding): each suffix attends to the
prefix and to itself, causally, never to another suffix; each suffix's positions continue from the
prefix's next position, and logits are computed only at each suffix's last token. KV memory then grows
with the suffix tokens only. A custom mask can cost the fastest attention kernels: the scorer chooses
the layout at start-up (see HFScorer).

The head of a prefix, its tokens before the image, is the same for every image of a pack. When it is
long (a compact pack's catalogue of rules, placed before the image), its KV is computed once and kept
(``HeadKV``, per distinct head): each image's prefix pass starts from a copy of it and computes only the
image and what follows. Positions stay exact: the rope index runs over the whole prefix, and the pass
takes the part after the head.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
import torch
from transformers import Cache, PreTrainedModel
from transformers.processing_utils import ProcessorMixin

from moderation_worker.model.features import ImageFeatures, Injection, feature_inputs, pad_left, to_device
from moderation_worker.model.kv_cache import cache_argument, cache_nbytes, cache_rows, returned_cache

log = structlog.get_logger(__name__)


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


# Heads shorter than this (a chat template's few opening tokens) are computed with each prefix: a kept
# copy would cost more to install than it saves.
MIN_CACHED_HEAD_TOKENS = 32


def cacheable_head(prefix: Sequence[int], image_token_id: int) -> tuple[int, ...]:
    """The prefix's tokens before its image when there are enough to keep their KV, else ()."""
    try:
        start = list(prefix).index(image_token_id)
    except ValueError:
        return ()
    return tuple(prefix[:start]) if start >= MIN_CACHED_HEAD_TOKENS else ()


class HeadKV:
    """The KV of each distinct prefix head, computed once and kept on the model's device.

    A worker has one pack, so one or two heads live here; the bound keeps a process that sees many packs
    (tools, tests) from growing without limit. Least recently used goes first. Not thread-safe, as the
    scorer that owns it.
    """

    def __init__(self, max_entries: int = 4, *, token_budget: int | None = None, quiet: bool = False) -> None:
        self._entries: OrderedDict[tuple[int, ...], Cache] = OrderedDict()
        self._max_entries = max_entries
        self._token_budget = token_budget
        self._quiet = quiet  # the start-up probe's heads are not worth a log line
        self.computed = 0  # heads run through the model (a hit computes nothing)

    def get(self, head: tuple[int, ...], compute: Callable[[], Cache]) -> Cache:
        cache = self._entries.get(head)
        if cache is None:
            cache = compute()
            self.computed += 1
            self._entries[head] = cache
            if not self._quiet:
                self._announce(head, cache)
            while len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        self._entries.move_to_end(head)
        return cache

    def _announce(self, head: tuple[int, ...], cache: Cache) -> None:
        """Once per pack and model: what the head costs, and a token budget too small to batch with it."""
        log.info("prompt_head_kept", tokens=len(head), kv_bytes=cache_nbytes(cache))
        if self._token_budget is not None and len(head) * 2 > self._token_budget:
            log.warning(
                "prompt_head_fills_token_budget",
                tokens=len(head),
                token_budget=self._token_budget,
                hint="each image then runs in a pass of its own; raise MODERATION_SCORE_TOKEN_BUDGET",
            )

    @property
    def nbytes(self) -> int:
        return sum(cache_nbytes(cache) for cache in self._entries.values())


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
        layout: str = "rows",
        heads: HeadKV | None = None,
    ) -> None:
        if layout not in ("rows", "packed"):
            raise ValueError(f"unknown suffix layout {layout!r}")
        self._layout = layout
        self._model = model
        self._processor = processor
        self._injection = injection
        self._answer_ids = answer_ids
        self._pad_id = pad_id
        self._token_budget = token_budget
        self._max_rows = max_rows
        self._heads = heads if heads is not None else HeadKV()
        self._image_token_id = model.config.image_token_id
        self._text_config = model.config.get_text_config()
        argument = cache_argument(model)
        if argument is None:
            raise ValueError(f"{type(model).__name__}.forward takes no KV cache")
        self._cache_argument = argument

    def answer_logits(self, jobs: Sequence[PrefixJob], result: torch.Tensor) -> None:
        """Fill ``result[job.outputs[i]]`` with the (yes, no) logits of each job's i-th prompt."""
        by_head: dict[tuple[int, ...], list[PrefixJob]] = {}
        for job in jobs:
            by_head.setdefault(cacheable_head(job.split.prefix, self._image_token_id), []).append(job)
        for head, head_jobs in by_head.items():
            self._answer_with_head(head, head_jobs, result)

    def _answer_with_head(self, head: tuple[int, ...], jobs: list[PrefixJob], result: torch.Tensor) -> None:
        # The budget counts the whole prefix, head included: every row of a pass holds a copy of it.
        prefix_lengths = [len(job.split.prefix) for job in jobs]
        if self._layout == "packed":
            # A packed row holds its prefix and every suffix: budget the whole row.
            totals = [sum(len(s) for s in job.split.suffixes) for job in jobs]
            for group in group_by_budget(
                prefix_lengths, token_budget=self._token_budget, max_rows=self._max_rows,
                extra=lambda i: totals[i],
            ):  # fmt: skip
                self._packed_group([jobs[i] for i in group], head, result)
            return
        for group in group_by_budget(
            prefix_lengths, token_budget=self._token_budget, max_rows=self._max_rows
        ):
            self._score_group([jobs[i] for i in group], head, result)

    def _packed_group(self, jobs: list[PrefixJob], head: tuple[int, ...], result: torch.Tensor) -> None:
        cache, prefix_mask, next_position = self._prefix_pass(jobs, head)
        device = self._model.device
        ids, _ = pad_left([[t for s in job.split.suffixes for t in s] for job in jobs], self._pad_id)
        rows, width = ids.shape
        # Per column: which suffix it belongs to (-1: padding) and its offset inside that suffix.
        segment = torch.full((rows, width), -1, dtype=torch.long)
        offset = torch.zeros((rows, width), dtype=torch.long)
        last_columns: list[tuple[int, int, int]] = []  # (row, column, output row)
        for row, job in enumerate(jobs):
            column = width - sum(len(s) for s in job.split.suffixes)
            for index, suffix in enumerate(job.split.suffixes):
                segment[row, column : column + len(suffix)] = index
                offset[row, column : column + len(suffix)] = torch.arange(len(suffix))
                last_columns.append((row, column + len(suffix) - 1, job.outputs[index]))
                column += len(suffix)
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        same = (segment[:, :, None] == segment[:, None, :]) & (segment[:, :, None] >= 0) & causal
        same |= torch.eye(width, dtype=torch.bool) & (segment[:, :, None] < 0)  # padding sees itself
        sees_prefix = prefix_mask.bool().cpu()[:, None, :] & (segment[:, :, None] >= 0)
        allowed = torch.cat([sees_prefix, same], dim=2)[:, None]
        dtype = self._model.dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill(~allowed, torch.finfo(dtype).min)
        positions = next_position.cpu()[:, None] + offset
        keep = sorted({column for _, column, _ in last_columns})
        outputs = self._model(
            input_ids=to_device(ids, device),
            attention_mask=to_device(mask, device),
            position_ids=to_device(positions, device).unsqueeze(0).expand(3, -1, -1),
            use_cache=True,
            logits_to_keep=torch.tensor(keep, device=device),  # only each suffix's last token
            **{self._cache_argument: cache},
        )
        logits = outputs.logits.index_select(-1, self._answer_ids).float().cpu()
        where = {column: i for i, column in enumerate(keep)}
        for row, column, target in last_columns:
            result[target] = logits[row, where[column]]

    def _score_group(self, jobs: list[PrefixJob], head: tuple[int, ...], result: torch.Tensor) -> None:
        cache, prefix_mask, next_position = self._prefix_pass(jobs, head)
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

    def _prefix_pass(
        self, jobs: list[PrefixJob], head: tuple[int, ...]
    ) -> tuple[Cache, torch.Tensor, torch.Tensor]:
        """Run the prefixes once with the cache on: (cache, prefix mask, next text position per image).

        With a kept ``head``, each row starts from a copy of its KV and the pass computes the rest only;
        the mask and the returned cache still cover the whole prefix.
        """
        input_ids, attention_mask = pad_left([job.split.prefix[len(head) :] for job in jobs], self._pad_id)
        inputs = feature_inputs(
            self._model,
            self._processor,
            input_ids,
            attention_mask,
            [job.features for job in jobs],
            self._injection,
            head=head,
        )
        given = {}
        if head:
            head_kv = self._heads.get(head, lambda: self._head_pass(head))
            rows = torch.zeros(len(jobs), dtype=torch.long, device=self._model.device)
            given[self._cache_argument] = cache_rows(head_kv, rows, config=self._text_config)
        outputs = self._model(**inputs, use_cache=True, logits_to_keep=1, **given)
        # Padding gets position 0 from the rope index, so the max over a row is its prefix's last position.
        next_position = inputs["position_ids"].amax(dim=(0, 2)) + 1
        return returned_cache(outputs), inputs["attention_mask"], next_position

    def _head_pass(self, head: tuple[int, ...]) -> Cache:
        """The KV of a head alone: text before any image advances all three rope axes together, so its
        positions are 0, 1, 2, ... (as the rope index gives them over the whole prompt)."""
        device = self._model.device
        ids = torch.tensor([head], device=device)
        positions = torch.arange(len(head), device=device)[None, None].expand(3, 1, -1)
        outputs = self._model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            position_ids=positions,
            use_cache=True,
            logits_to_keep=1,
        )
        return returned_cache(outputs)

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
