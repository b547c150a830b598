"""Section 1: the cost of one image against 1, 4, 8 and 16 policies, per scoring strategy.

``scorer.score`` on the CPU benchmark model, the vision encoder included every time (no feature cache):
- shared_prefix: the image and the fixed text run once with the KV cache, the policy suffixes batched on it,
  one row per policy, each holding a copy of its image's prefix KV;
- packed: the same, with every suffix of an image in one row behind a block attention mask (the prefix
  KV held once per image);
- reused_features: the vision encoder once per image, then one full language-model pass per policy;
- plain: one full pass per policy (processor and model on every (image, policy) pair): the baseline;
- naive: what a first integration does: for each policy, ``model.generate`` on the processor's full
  inputs and the answer parsed from the decoded text, one policy at a time.
Two row groups: the pack's full prompts (instructions, title, rule, question) and compact prompts
(question only), which show how the saving depends on the suffix length against the shared image prefix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from statistics import mean

import torch

from benchmarks import photos
from benchmarks.fixtures import Context, compact_prompt, load_scorer, pack16, scorer_options
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import interleaved, progress, ratio
from moderation_worker.model.base import ImageScores, ScoringRequest

STRATEGIES = ("shared_prefix", "reused_features", "plain", "naive")
NAIVE_NEW_TOKENS = 3


class NaiveGenerate:
    """One ``generate`` per (image, policy) on the processor's full inputs; Yes/No parsed from the text."""

    def __init__(self, model, processor, max_new_tokens: int = NAIVE_NEW_TOKENS) -> None:
        self._model = model
        self._processor = processor
        self._max_new_tokens = max_new_tokens
        self.answers: dict[str, int] = {"yes": 0, "no": 0, "unparsed": 0}

    def render(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return self._processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )

    def score(self, requests: Sequence[ScoringRequest]) -> list[ImageScores]:
        results = []
        tokenizer = self._processor.tokenizer
        with torch.inference_mode():
            for request in requests:
                scores = []
                for prompt in request.prompts:
                    inputs = self._processor(
                        images=[request.image], text=[self.render(prompt)], return_tensors="pt"
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


def token_counts(processor, render: Callable[[str], str], image, prompts: list[str]) -> dict[str, object]:
    """Tokens of each full prompt for this image, and the prefix all of them share (as the scorer splits)."""
    rows = [
        processor(images=[image], text=[render(p)], return_tensors="pt")["input_ids"][0].tolist()
        for p in prompts
    ]
    shortest = min(len(r) for r in rows)
    prefix = 0
    while prefix < shortest - 1 and all(r[prefix] == rows[0][prefix] for r in rows):
        prefix += 1
    image_tokens = rows[0].count(processor.tokenizer.convert_tokens_to_ids(processor.image_token))
    suffixes = [len(r) - prefix for r in rows]
    full_tokens = sum(len(r) for r in rows)
    return {
        "policies": len(prompts),
        "prefix_tokens": prefix,
        "image_tokens": image_tokens,
        "suffix_tokens_mean": round(mean(suffixes), 1),
        "suffix_tokens_min": min(suffixes),
        "suffix_tokens_max": max(suffixes),
        "full_prompt_tokens_mean": round(mean(len(r) for r in rows), 1),
        # Language-model tokens one full pass per policy processes over those a shared prefix does: what
        # plain/shared_prefix would be if only those tokens cost (plain also runs the vision encoder N times).
        "token_bound": full_tokens / (prefix + sum(suffixes)),
        "suffix_tokens_total": sum(suffixes),
    }


def _kv_memory_table(model, tokens: list[dict], counts: Sequence[int]) -> tuple[str, Table]:
    """KV bytes one image's suffix pass holds, per layout, from the model's cache shape: per row, every
    layer keeps a key and a value of (KV heads x head size) per token."""
    config = model.config.get_text_config()
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim * model.dtype.itemsize
    table = Table(["policies", "prefix tok", "suffix tok (all)", "rows KiB", "packed KiB", "rows/packed"])
    for n, row in zip(counts, tokens, strict=True):
        prefix, suffixes = row["prefix_tokens"], row["suffix_tokens_total"]
        rows_bytes = per_token * (n * prefix + suffixes)  # a prefix copy per policy row
        packed_bytes = per_token * (prefix + suffixes)  # the prefix once
        table.add(n, prefix, suffixes, fmt(rows_bytes / 1024), fmt(packed_bytes / 1024),
                  fmt(rows_bytes / packed_bytes) + "x")  # fmt: skip
    title = (f"KV cache of one image's suffix pass, full prompts, {model.dtype} "
             f"({per_token} bytes per token: 2 x {config.num_hidden_layers} layers x {kv_heads} KV heads x "
             f"{head_dim}), computed from the cache shape")  # fmt: skip
    return title, table


def _ratio_cell(result: SectionResult, key: str) -> str:
    return fmt(result.ratios[key].value) + "x" if key in result.ratios else "-"


def _scoring(scorer, requests: list[ScoringRequest]) -> Callable[[], None]:
    def call() -> None:
        scorer.score(requests)

    return call


def run(ctx: Context) -> SectionResult:
    result = SectionResult(1, "policies_per_image", "Policies per image: score() cost per strategy")
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

    pack = pack16()
    counts = (1, 4) if ctx.quick else (1, 4, 8, 16)
    batches = (1, 2) if ctx.quick else (1, 4)
    images = photos.variants(max(batches), (shape.image_px, shape.image_px), seed=1)
    styles = {
        "full": [pack.prompt(p) for p in pack.policies],
        "compact": [compact_prompt(pack, p) for p in pack.policies],
    }
    result.info = {
        "model": shape.describe(),
        "scorer_options": scorer_options(),
        "pack": {"name": pack.name, "policies": [p.id for p in pack.policies]},
        "naive_max_new_tokens": NAIVE_NEW_TOKENS,
        "feature_cache": "none: the vision encoder runs in every call",
        "torch_threads": torch.get_num_threads(),
        "tokens": {
            style: [token_counts(plain.processor, naive.render, images[0], prompts[:n]) for n in counts]
            for style, prompts in styles.items()
        },
    }

    table = Table(
        [
            "prompts",
            "images",
            "policies",
            "prefix tok",
            "suffix tok",
            "shared_prefix ms",
            "reused_features ms",
            "plain ms",
            "naive ms",
            "packed ms",
            "rows/packed",
            "reused/shared",
            "plain/shared",
            "token bound",
            "naive/shared",
        ]
    )
    for style, prompts in styles.items():
        for n_images in batches:
            for n_index, n in enumerate(counts):
                requests = [
                    ScoringRequest(image=images[i], image_key=f"photo-{i}", prompts=prompts[:n])
                    for i in range(n_images)
                ]
                progress(f"section 1: {style} prompts, {n_images} image(s), {n} policies")
                # The naive loop handles one image at a time: a batch costs it the sum of its images,
                # so it is timed on single images only (it is also by far the slowest variant).
                variants = {
                    name: _scoring(s, requests)
                    for name, s in scorers_and_naive.items()
                    if name != "naive" or n_images == 1
                }
                figures = interleaved(variants, repeats=ctx.repeats, warmup=ctx.warmup)
                group = f"{style}/{n_images}img/{n}pol"
                for name, figure in figures.items():
                    result.figures[f"{group}/{name}"] = figure
                result.ratios[f"{group}/shared_prefix_over_packed"] = ratio(
                    result.figures, f"{group}/shared_prefix", f"{group}/packed"
                )
                for name in figures:
                    if name not in ("shared_prefix", "packed"):
                        result.ratios[f"{group}/{name}_over_shared_prefix"] = ratio(
                            result.figures, f"{group}/{name}", f"{group}/shared_prefix"
                        )
                tokens = result.info["tokens"][style][n_index]
                table.add(
                    style,
                    n_images,
                    n,
                    tokens["prefix_tokens"],
                    tokens["suffix_tokens_mean"],
                    *(fmt(figures[name].median) if name in figures else "-" for name in STRATEGIES),
                    fmt(figures["packed"].median),
                    _ratio_cell(result, f"{group}/shared_prefix_over_packed"),
                    *(_ratio_cell(result, f"{group}/{name}_over_shared_prefix") for name in STRATEGIES[1:3]),
                    fmt(tokens["token_bound"]) + "x",
                    _ratio_cell(result, f"{group}/naive_over_shared_prefix"),
                )
    result.info["naive_answers"] = naive.answers
    result.tables.append(_kv_memory_table(plain.model, result.info["tokens"]["full"], counts))
    image_tokens = result.info["tokens"]["full"][0]["image_tokens"]
    result.tables.append(
        (
            f"median ms per score() call over {ctx.repeats} repeats; model {shape.name}, "
            f"{shape.image_px}px photos, {image_tokens} image tokens each; prefix tok = the tokens all N "
            "prompts share (image included; with one prompt all but its last), suffix tok = mean per policy; "
            "token bound = language-model tokens of one full pass per policy / of a shared prefix, "
            "N(P+S)/(P+NS); naive is timed on single images only",
            table,
        )
    )
    for n_images in batches:
        for n, wanted in ((16, 10.0), (8, 5.0)):
            key = f"full/{n_images}img/{n}pol/plain_over_shared_prefix"
            if key in result.ratios:
                result.add_target(
                    f"shared prefix vs one full pass per policy, {n} policies, {n_images} image(s)",
                    key,
                    minimum=wanted,
                )
    return result
