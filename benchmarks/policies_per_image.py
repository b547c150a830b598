"""Section 1: the cost of one image against 1, 4, 8 and 16 policies, per scoring strategy and prompt layout.

``scorer.score`` on the CPU benchmark model, the vision encoder included every time (no feature cache):
- shared_prefix: the image and the fixed text run once with the KV cache, the policy suffixes batched on it,
  one row per policy, each holding a copy of its image's prefix KV (the layout before packed suffixes);
- packed: the same, with every suffix of an image in one row behind a block attention mask (the prefix
  KV held once per image);
- reused_features: the vision encoder once per image, then one full language-model pass per policy;
- plain: one full pass per policy (processor and model on every (image, policy) pair): the baseline;
- naive: what a first integration does: for each policy, ``model.generate`` on the processor's full
  inputs and the answer parsed from the decoded text, one policy at a time.
Two prompt layouts of the same 16-policy pack: ``full`` (instructions, title, rule and question after the
image, per policy) and ``compact`` (every rule in a numbered catalogue before the image, its KV kept
across calls; each policy's own part is its number and title). Then the layouts side by side on one
text layer in GLM-4.6V-Flash's proportions, and the KV cache each layout holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from benchmarks import photos
from benchmarks.fixtures import Context, in_layout, load_scorer, pack16, scorer_options
from benchmarks.prompt_shapes import held_kv_bytes, token_bound, token_counts
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import interleaved, progress, ratio
from moderation_worker.model.base import ImageScores, ScoringRequest
from moderation_worker.model.prompts import render_prompt

STRATEGIES = ("shared_prefix", "reused_features", "plain", "naive")
NAIVE_NEW_TOKENS = 3
# The compact layout is only worth scoring with its catalogue kept: the shared-prefix layouts.
COMPACT_VARIANTS = ("shared_prefix", "packed")


class NaiveGenerate:
    """One ``generate`` per (image, policy) on the processor's full inputs; Yes/No parsed from the text."""

    def __init__(self, model, processor, max_new_tokens: int = NAIVE_NEW_TOKENS) -> None:
        self._model = model
        self._processor = processor
        self._max_new_tokens = max_new_tokens
        self.answers: dict[str, int] = {"yes": 0, "no": 0, "unparsed": 0}

    def score(self, requests: Sequence[ScoringRequest]) -> list[ImageScores]:
        results = []
        tokenizer = self._processor.tokenizer
        with torch.inference_mode():
            for request in requests:
                scores = []
                for prompt in request.prompts:
                    inputs = self._processor(
                        images=[request.image],
                        text=[render_prompt(self._processor, prompt, request.preamble)],
                        return_tensors="pt",
                    )
                    output = self._model.generate(
                        **inputs,
                        max_new_tokens=self._max_new_tokens,
                        do_sample=False,
                        pad_token_id=tokenizer.pad_token_id,
                    )
                    answer = tokenizer.decode(
                        output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
                    ).strip()
                    scores.append(self._parse(answer))
                results.append(ImageScores(scores))
        return results

    def _parse(self, answer: str) -> float:
        word = answer.split()[0].strip(".,!").lower() if answer.split() else ""
        kind = word if word in ("yes", "no") else "unparsed"
        self.answers[kind] += 1
        return 1.0 if kind == "yes" else 0.0


def _ratio_cell(result: SectionResult, key: str) -> str:
    return fmt(result.ratios[key].value) + "x" if key in result.ratios else "-"


def _requests(pack, images, n_images: int, n: int) -> list[ScoringRequest]:
    prompts = [pack.prompt(p) for p in pack.policies[:n]]
    return [
        ScoringRequest(images[i], f"photo-{i}", prompts, preamble=pack.preamble()) for i in range(n_images)
    ]


def _scoring(scorer, requests: list[ScoringRequest]) -> Callable[[], None]:
    def call() -> None:
        scorer.score(requests)

    return call


def _packs() -> dict[str, object]:
    pack = pack16()
    return {"full": pack, "compact": in_layout(pack, "compact")}


def _tokens(processor, image, packs: dict, counts: Sequence[int]) -> dict[str, list[dict]]:
    return {
        layout: [
            token_counts(processor, image, [pack.prompt(p) for p in pack.policies[:n]], pack.preamble())
            for n in counts
        ]
        for layout, pack in packs.items()
    }


def _compare_layouts(result: SectionResult, prefix: str, tokens: dict, index: int) -> list[str]:
    """Ratios of the full layout's one-pass-per-policy and shared prefix over the compact layout (packed
    suffixes, catalogue kept), with their token bounds, as table cells."""
    full, compact = tokens["full"][index], tokens["compact"][index]
    cells = []
    for name, in_full in (("plain", True), ("shared_prefix", False)):
        key = f"{prefix}/full_{name}_over_compact"
        result.ratios[key] = ratio(result.figures, f"{prefix}/full/{name}", f"{prefix}/compact/packed")
        bound = token_bound(full, compact, numerator_in_full=in_full)
        cells += [_ratio_cell(result, key), fmt(bound) + "x"]
    return cells


def run(ctx: Context) -> SectionResult:
    result = SectionResult(
        1, "policies_per_image", "Policies per image: score() cost per strategy and layout"
    )
    shape = ctx.shape
    model_dir = ctx.model_dir()
    scorers = {name: load_scorer(model_dir, strategy=name, suffix_layout="rows") for name in STRATEGIES[:3]}
    for name, scorer in scorers.items():
        if scorer.strategy != name:
            raise RuntimeError(f"asked for strategy {name!r}, the scorer chose {scorer.strategy!r}")
    scorers["packed"] = load_scorer(model_dir, strategy="shared_prefix", suffix_layout="packed")
    plain = scorers["plain"]
    naive = NaiveGenerate(plain.model, plain.processor)
    scorers_and_naive: dict[str, object] = {**scorers, "naive": naive}

    packs = _packs()
    counts = (1, 4) if ctx.quick else (1, 4, 8, 16)
    batches = (1, 2) if ctx.quick else (1, 4)
    images = photos.variants(max(batches), (shape.image_px, shape.image_px), seed=1)
    tokens = _tokens(plain.processor, images[0], packs, counts)
    result.info = {
        "model": shape.describe(),
        "scorer_options": scorer_options(),
        "pack": {"name": packs["full"].name, "policies": [p.id for p in packs["full"].policies]},
        "naive_max_new_tokens": NAIVE_NEW_TOKENS,
        "feature_cache": "none: the vision encoder runs in every call",
        "torch_threads": torch.get_num_threads(),
        "tokens": tokens,
    }

    table = Table(
        ["prompts", "images", "policies", "prefix tok", "kept tok", "suffix tok",
         "shared_prefix ms", "reused_features ms", "plain ms", "naive ms", "packed ms",
         "rows/packed", "reused/shared", "plain/shared", "token bound", "naive/shared"]
    )  # fmt: skip
    layouts = Table(
        ["images", "policies", "compact ms", "compact rows ms", "full plain ms", "full shared ms",
         "full plain/compact", "token bound", "full shared/compact", "token bound"]
    )  # fmt: skip
    for n_images in batches:
        for n_index, n in enumerate(counts):
            progress(f"section 1: {n_images} image(s), {n} policies, both layouts")
            variants = {}
            for layout, pack in packs.items():
                requests = _requests(pack, images, n_images, n)
                for name, scorer in scorers_and_naive.items():
                    # The naive loop handles one image at a time: a batch costs it the sum of its images,
                    # so it is timed on single images only (it is also by far the slowest variant).
                    if (layout == "full" and (name != "naive" or n_images == 1)) or name in COMPACT_VARIANTS:
                        variants[f"{layout}/{name}"] = _scoring(scorer, requests)
            figures = interleaved(variants, repeats=ctx.repeats, warmup=ctx.warmup)
            group = f"{n_images}img/{n}pol"
            for name, figure in figures.items():
                result.figures[f"{group}/{name}"] = figure
            for layout in packs:
                row = f"{group}/{layout}"
                result.ratios[f"{row}/shared_prefix_over_packed"] = ratio(
                    result.figures, f"{row}/shared_prefix", f"{row}/packed"
                )
                for name in STRATEGIES[1:]:
                    if f"{layout}/{name}" in figures:
                        result.ratios[f"{row}/{name}_over_shared_prefix"] = ratio(
                            result.figures, f"{row}/{name}", f"{row}/shared_prefix"
                        )
                counted = tokens[layout][n_index]
                bound = fmt(token_bound(counted, counted, numerator_in_full=True)) + "x"
                table.add(
                    layout, n_images, n, counted["prefix_tokens"], counted["kept_head_tokens"],
                    counted["suffix_tokens_mean"],
                    *(fmt(figures[f"{layout}/{name}"].median) if f"{layout}/{name}" in figures else "-"
                      for name in STRATEGIES),
                    fmt(figures[f"{layout}/packed"].median),
                    _ratio_cell(result, f"{row}/shared_prefix_over_packed"),
                    *(_ratio_cell(result, f"{row}/{name}_over_shared_prefix") for name in STRATEGIES[1:3]),
                    bound if layout == "full" else "-",
                    _ratio_cell(result, f"{row}/naive_over_shared_prefix"),
                )  # fmt: skip
            layouts.add(
                n_images, n,
                *(fmt(figures[key].median) for key in
                  ("compact/packed", "compact/shared_prefix", "full/plain", "full/shared_prefix")),
                *_compare_layouts(result, group, tokens, n_index),
            )  # fmt: skip

    image_tokens = tokens["full"][0]["image_tokens"]
    result.tables.append(
        (
            f"median ms per score() call over {ctx.repeats} repeats; model {shape.name}, "
            f"{shape.image_px}px photos, {image_tokens} image tokens each; prefix tok = the tokens all N "
            "prompts share (image included; with one prompt all but its last), kept tok = the part of it "
            "before the image whose KV the scorer keeps across calls (the compact catalogue), suffix tok = "
            "mean per policy; shared_prefix = suffixes in rows, packed = in one row per image; token "
            "bound = language-model tokens of one full pass per policy / of a shared prefix, "
            "N(P+S)/(P-kept+NS); naive is timed on single images only; the compact layout is timed on "
            "its shared-prefix paths only",
            table,
        )
    )
    result.tables.append(
        (
            "the compact layout (packed suffixes, catalogue kept; compact rows = suffixes in rows) against "
            "the full layout's one pass per policy and shared prefix (rows), same run, same model; token "
            "bound = tokens the full way computes / tokens the compact way computes",
            layouts,
        )
    )
    _glm_layer_rows(ctx, result)
    result.tables.append(_kv_table(result, scorers, packs, images[0], (2, 4) if ctx.quick else (4, 8, 16)))
    for n_images in batches:
        for n, wanted in ((16, 10.0), (8, 5.0)):
            key = f"{n_images}img/{n}pol/full/plain_over_shared_prefix"
            if key in result.ratios:
                result.add_target(
                    f"shared prefix vs one full pass per policy, {n} policies, {n_images} image(s)",
                    key,
                    minimum=wanted,
                )
    _layout_targets(result, ["1img/16pol", "glm-layer/16pol"])
    return result


def _layout_targets(result: SectionResult, groups: list[str]) -> None:
    for group in groups:
        for name, wanted in (("plain", 10.0), ("shared_prefix", 2.0)):
            key = f"{group}/full_{name}_over_compact"
            if key in result.ratios:
                what = "one full pass per policy" if name == "plain" else "the shared prefix"
                result.add_target(
                    f"compact layout vs {what} on the full layout, 16 policies, 1 image ({group})",
                    key,
                    minimum=wanted,
                )


def _glm_layer_rows(ctx: Context, result: SectionResult) -> None:
    """The layouts side by side on one text layer in GLM-4.6V-Flash's proportions, 1 image."""
    shape = ctx.glm_layer_shape
    model_dir = ctx.model_dir(shape)
    scorers = {
        "plain": load_scorer(model_dir, strategy="plain"),
        "shared_prefix": load_scorer(model_dir, strategy="shared_prefix", suffix_layout="rows"),
        "packed": load_scorer(model_dir, strategy="shared_prefix", suffix_layout="packed"),
    }
    packs = _packs()
    counts = (4,) if ctx.quick else (8, 16)
    repeats = min(ctx.repeats, 3)  # one full pass per policy takes seconds here
    image = photos.variants(1, (shape.image_px, shape.image_px), seed=1)[0]
    tokens = _tokens(scorers["plain"].processor, image, packs, counts)
    result.info["glm_layer"] = {"model": shape.describe(), "repeats": repeats, "tokens": tokens}
    table = Table(
        ["policies", "full plain ms", "full shared ms", "full packed ms", "compact rows ms",
         "compact ms", "full rows/packed", "full plain/compact", "token bound", "full shared/compact",
         "token bound"]
    )  # fmt: skip
    for index, n in enumerate(counts):
        progress(f"section 1: {shape.name}, {n} policies, both layouts")
        variants = {}
        for layout, pack in packs.items():
            requests = _requests(pack, [image], 1, n)
            for name, scorer in scorers.items():
                if layout == "full" or name in COMPACT_VARIANTS:
                    variants[f"{layout}/{name}"] = _scoring(scorer, requests)
        figures = interleaved(variants, repeats=repeats, warmup=ctx.warmup)
        group = f"glm-layer/{n}pol"
        for name, figure in figures.items():
            result.figures[f"{group}/{name}"] = figure
        result.ratios[f"{group}/full/shared_prefix_over_packed"] = ratio(
            result.figures, f"{group}/full/shared_prefix", f"{group}/full/packed"
        )
        table.add(
            n,
            *(fmt(figures[key].median) for key in ("full/plain", "full/shared_prefix", "full/packed",
                                                    "compact/shared_prefix", "compact/packed")),
            _ratio_cell(result, f"{group}/full/shared_prefix_over_packed"),
            *_compare_layouts(result, group, tokens, index),
        )  # fmt: skip
    config = scorers["plain"].model.config.get_text_config()
    result.tables.append(
        (
            f"one text layer in GLM-4.6V-Flash's proportions ({shape.name}: hidden {config.hidden_size}, "
            f"{config.num_attention_heads} heads of 128, {config.num_key_value_heads} KV heads, MLP "
            f"{config.intermediate_size}), median ms over {repeats} repeats, 1 image of "
            f"{tokens['full'][0]['image_tokens']} image tokens; per layer a token costs what it costs in "
            "the real model against attending to cached tokens, unlike the benchmark model above",
            table,
        )
    )


def _kv_table(
    result: SectionResult, scorers: dict, packs: dict, image, counts: Sequence[int]
) -> tuple[str, Table]:
    """KV bytes one image's passes hold at once, per prompt layout and suffix layout, measured from the
    cache tensors (benchmarks.prompt_shapes.held_kv_bytes); also kept in the report's info."""
    measured: dict[str, dict] = {}
    table = Table(
        ["prompts", "policies", "rows KiB", "packed KiB", "rows/packed", "packed growth KiB/policy"]
    )
    kept = {}
    for layout, pack in packs.items():
        previous: tuple[int, int] | None = None
        for n in counts:
            [request] = _requests(pack, [image], 1, n)
            rows_bytes = held_kv_bytes(scorers["shared_prefix"], request)
            packed_bytes = held_kv_bytes(scorers["packed"], request)
            growth = "-"
            if previous is not None:
                growth = fmt((packed_bytes - previous[1]) / (n - previous[0]) / 1024)
            previous = (n, packed_bytes)
            measured.setdefault(layout, {})[n] = {"rows": rows_bytes, "packed": packed_bytes}
            table.add(layout, n, fmt(rows_bytes / 1024), fmt(packed_bytes / 1024),
                      fmt(rows_bytes / packed_bytes) + "x", growth)  # fmt: skip
        kept[layout] = scorers["packed"].kept_kv_bytes
    result.info["kv_bytes_per_image"] = {**measured, "kept_catalogue_bytes": kept["compact"]}
    model = scorers["packed"].model
    title = (
        f"KV cache one image's scoring holds at once, {model.dtype}, measured from the cache tensors; "
        f"rows = a prefix copy per policy, packed = the prefix once; the compact catalogue's KV is kept "
        f"once per pack besides ({fmt(kept['compact'] / 1024)} KiB)"
    )
    return title, table
