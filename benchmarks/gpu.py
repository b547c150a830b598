"""Section 5: the full GLM-4.6V-Flash shape on a GPU: throughput, latency, and the fraction of peak.

A randomly initialised model of ``Glm4vConfig()``'s shape (the 9B GLM-4.1V / 4.6V-Flash family: 40 layers
of 4096, a 24-layer vision encoder) in bf16, built in GPU memory (never saved), with the tiny builder's
tokenizer and image processor settings, wrapped directly in ``HFScorer``: its timings are real, its scores
are not. 8 policies of the default pack per image, batches of images at 512 and 1024 px.

Figures: images per second, p50 and p95 latency per batch, and the achieved fraction of the GPU's bf16
matmul peak. FLOPs of a batch are counted as 2 x parameters x tokens: the language model's parameters
(token embedding excluded: a lookup) times the tokens the scoring passes must process (with a shared prefix:
the prefix once per image plus every policy's suffix; otherwise every full prompt), plus the vision
encoder's parameters times the image's patches, plus the output head for the one position scored per policy.
Attention's own FLOPs (quadratic in length) are not counted, so the fraction is a floor. The peak is
measured in the same run with a large matmul (8192^3 bf16), interleaved with the batches.

Without a GPU the section is skipped, with no figures; ``--gpu-section-on-cpu`` runs the same code on the
CPU with a scaled-down config (float32), so the code is exercised where no GPU is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from benchmarks.fixtures import Context, default_pack
from benchmarks.report import SectionResult, Table, fmt
from benchmarks.timing import Figure, interleaved, percentile, progress

POLICIES = 8


@dataclass(frozen=True)
class Setup:
    device: torch.device
    dtype: torch.dtype
    sizes: tuple[int, ...]  # image edge in pixels
    batch_images: int
    peak_n: int  # edge of the square matmul that measures the peak
    peak_iterations: int
    batches: int  # measured batches per size (at least)
    warmup_batches: int
    description: str


def _setup(ctx: Context) -> Setup | None:
    if torch.cuda.is_available():
        return Setup(
            device=torch.device("cuda"),
            dtype=torch.bfloat16,
            sizes=(512, 1024),
            batch_images=8,
            peak_n=8192,
            peak_iterations=10,
            batches=max(ctx.repeats, 20),
            warmup_batches=max(ctx.warmup, 3),
            description="Glm4vConfig() defaults (GLM-4.6V-Flash shape), bf16, random weights",
        )
    if ctx.gpu_section_on_cpu:
        return Setup(
            device=torch.device("cpu"),
            dtype=torch.float32,
            sizes=(112, 224),
            batch_images=2,
            peak_n=512 if ctx.quick else 1024,
            peak_iterations=3,
            batches=ctx.repeats,
            warmup_batches=ctx.warmup,
            description="scaled-down Glm4v config on the CPU, float32: exercises the code, not a GPU figure",
        )
    return None


def build_config(tokenizer, *, full: bool):
    """Glm4vConfig() defaults (full) or a scaled-down one, its special token ids set to the tokenizer's."""
    from transformers import Glm4vConfig

    from moderation_worker.model.tiny import special_token_config

    ids = tokenizer.convert_tokens_to_ids
    # The real checkpoints rotate half of each 128-dim head, split (8, 12, 12) over (t, h, w); the config's
    # defaults leave partial_rotary_factor at 1.0, which does not match that split.
    rope = {
        "rope_type": "default",
        "rope_theta": 10000.0,
        "partial_rotary_factor": 0.5,
        "mrope_section": [8, 12, 12],
    }
    text: dict = {"rope_parameters": rope, "pad_token_id": tokenizer.pad_token_id}
    vision: dict = {}
    if not full:  # head_dim stays 128, so the rope layout is the real one
        text |= {
            "vocab_size": 2048,
            "hidden_size": 256,
            "intermediate_size": 512,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
        }
        vision = {
            "depth": 2,
            "hidden_size": 128,
            "num_heads": 2,
            "intermediate_size": 256,
            "out_hidden_size": 256,
        }
    config = Glm4vConfig(text_config=text, vision_config=vision or None, **special_token_config(tokenizer))
    if max(ids(t) for t in ("<|image|>", "<|video|>", "Yes", "No")) >= config.text_config.vocab_size:
        raise RuntimeError("the tokenizer's ids do not fit the config's vocabulary")
    return config


def build_processor(tokenizer, max_pixels: int):
    """The tiny builder's processor (PIL image processor: no torchvision), for this pixel budget."""
    from moderation_worker.model.tiny import build_processor as tiny_processor

    return tiny_processor(tokenizer, max_pixels)


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_flops(setup: Setup) -> float:
    """FLOP/s of a large square matmul in the model's dtype: the reference for the achieved fraction."""
    n = setup.peak_n
    a = torch.randn(n, n, device=setup.device, dtype=setup.dtype)
    b = torch.randn(n, n, device=setup.device, dtype=setup.dtype)
    torch.matmul(a, b)  # the first call picks the kernel
    _sync(setup.device)
    started = time.perf_counter()
    for _ in range(setup.peak_iterations):
        torch.matmul(a, b)
    _sync(setup.device)
    return 2 * n**3 * setup.peak_iterations / (time.perf_counter() - started)


def noise_images(count: int, edge: int, seed: int) -> list[Image.Image]:
    """Distinct images of edge x edge (content does not change the cost of a pass)."""
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 256, (edge, edge, 3), dtype=np.uint8), "RGB") for _ in range(count)
    ]


def run(ctx: Context) -> SectionResult:
    result = SectionResult(5, "gpu", "GPU: the full GLM-4.6V-Flash shape (random weights)")
    setup = _setup(ctx)
    sizes = (512, 1024) if setup is None else setup.sizes
    columns = [
        "image px",
        "images/batch",
        "images/s",
        "p50 ms/batch",
        "p95 ms/batch",
        "TFLOP/batch",
        "of peak",
    ]
    if setup is None:
        result.skipped = "no GPU on this machine"
        table = Table(columns)
        for size in sizes:
            table.add(size, "-", "-", "-", "-", "-", "-")
        result.tables.append(("no figures: nothing here was measured on a GPU", table))
        return result

    from transformers import AutoModelForImageTextToText

    from moderation_worker.model.base import ModelInfo, ScoringRequest
    from moderation_worker.model.hf import HFScorer
    from moderation_worker.model.tiny import build_tokenizer

    full = setup.device.type == "cuda"
    tokenizer = build_tokenizer()
    tokenizer.padding_side = "left"  # as HFScorer.from_pretrained sets it
    config = build_config(tokenizer, full=full)
    progress(f"section 5: building the model on {setup.device} ({setup.description})")
    torch.manual_seed(0)
    with setup.device:
        model = AutoModelForImageTextToText.from_config(config, dtype=setup.dtype)
    model.eval()
    info = ModelInfo(
        model_id="random-glm4v" + ("-flash-shape" if full else "-scaled-down"),
        revision="random",
        dtype=str(setup.dtype).removeprefix("torch."),
        device=str(setup.device),
    )
    vision_params = _parameters(model.model.visual)
    embedding_params = model.get_input_embeddings().weight.numel()
    language_params = _parameters(model.model.language_model) - embedding_params
    head_params = model.get_output_embeddings().weight.numel()
    pack = default_pack()
    prompts = [pack.prompt(p) for p in pack.policies[:POLICIES]]

    scorers, requests, flops = {}, {}, {}
    for size in sizes:
        processor = build_processor(tokenizer, size * size)
        scorer = HFScorer(
            model=model,
            processor=processor,
            info=info,
            yes_token_id=tokenizer.convert_tokens_to_ids("Yes"),
            no_token_id=tokenizer.convert_tokens_to_ids("No"),
        )
        scorers[size] = scorer
        images = noise_images(setup.batch_images, size, seed=size)
        requests[size] = [
            ScoringRequest(image=image, image_key=f"noise-{size}-{i}", prompts=prompts)
            for i, image in enumerate(images)
        ]
        flops[size] = _batch_flops(
            scorer, processor, images, prompts, language_params, vision_params, head_params
        )

    result.info = {
        "device": torch.cuda.get_device_name(setup.device)
        if full
        else "cpu (scaled-down config; not a GPU figure)",
        "model": setup.description,
        "parameters": {
            "language_model_without_embedding": language_params,
            "token_embedding": embedding_params,
            "vision_encoder": vision_params,
            "output_head": head_params,
        },
        "dtype": str(setup.dtype).removeprefix("torch."),
        "policies": POLICIES,
        "images_per_batch": setup.batch_images,
        "strategy": {size: scorers[size].strategy for size in sizes},
        "suffix_layout": {size: scorers[size].suffix_layout for size in sizes},
        "flops_per_batch": {size: flops[size]["total"] for size in sizes},
        "tokens_per_image": {size: flops[size]["tokens_per_image"] for size in sizes},
        "patches_per_image": {size: flops[size]["patches_per_image"] for size in sizes},
        "peak_matmul": f"{setup.peak_n}^3 {info.dtype}, {setup.peak_iterations} iterations per sample",
        "flops_counted_as": "2 x params x tokens: language model (no embedding) x scored tokens + "
        "vision encoder x patches + output head x policies; attention FLOPs not counted",
    }
    if full:
        result.info["gpu_memory_allocated_gib"] = round(
            torch.cuda.memory_allocated(setup.device) / 1024**3, 1
        )

    def batch(size: int):
        def call() -> float:
            _sync(setup.device)
            started = time.perf_counter()
            scorers[size].score(requests[size])
            _sync(setup.device)
            return time.perf_counter() - started

        return call

    progress(
        f"section 5: {setup.warmup_batches} + {setup.batches} rounds of peak matmul and one batch per size"
    )
    figures = interleaved(
        {"peak": lambda: peak_flops(setup), **{f"{size}px": batch(size) for size in sizes}},
        repeats=setup.batches,
        warmup=setup.warmup_batches,
        scale=1.0,
    )
    peak = figures.pop("peak")
    peak.samples = [s / 1e12 for s in peak.samples]
    peak.unit = "TFLOP/s"
    peak.higher_is_better = True
    result.figures["peak_matmul_tflops"] = peak
    table = Table(columns)
    for size in sizes:
        seconds = figures[f"{size}px"].samples
        latency = Figure("ms", [s * 1000 for s in seconds], note="per batch")
        rate = Figure("images/s", [setup.batch_images / s for s in seconds], higher_is_better=True)
        achieved = Figure(
            "fraction of peak",
            [flops[size]["total"] / s / (peak.median * 1e12) for s in seconds],
            note="per batch, against the median measured peak",
            higher_is_better=True,
        )
        result.figures[f"{size}px/latency_ms"] = latency
        result.figures[f"{size}px/images_per_s"] = rate
        result.figures[f"{size}px/fraction_of_peak"] = achieved
        result.info.setdefault("latency_p95_ms", {})[size] = percentile(latency.samples, 95)
        table.add(
            size,
            setup.batch_images,
            fmt(rate.median),
            fmt(latency.median),
            fmt(percentile(latency.samples, 95)),
            fmt(flops[size]["total"] / 1e12),
            f"{achieved.median:.1%}",
        )
    table.add("peak matmul", "", fmt(peak.median) + " TFLOP/s", "", "", "", "")
    result.tables.append(
        (
            f"{result.info['device']}; {setup.batches} batches per size, interleaved with the peak matmul; "
            f"{POLICIES} policies per image",
            table,
        )
    )
    if full:
        key = f"{sizes[-1]}px/fraction_of_peak"
        result.add_target(f"fraction of the bf16 matmul peak at {sizes[-1]} px", key, minimum=0.40)
    return result


def _batch_flops(scorer, processor, images, prompts, language_params, vision_params, head_params) -> dict:
    """FLOPs of scoring ``images`` x ``prompts`` once, counted as described in the module docstring."""
    from benchmarks.prompt_shapes import token_counts

    tokens_per_image, patches_per_image, total = [], [], 0
    for image in images:
        counts = token_counts(processor, image, prompts)
        if scorer.strategy == "shared_prefix":
            tokens = counts["prefix_tokens"] + counts["suffix_tokens_mean"] * len(prompts)
        else:
            tokens = counts["full_prompt_tokens_mean"] * len(prompts)
        grid = processor.image_processor(images=[image], return_tensors="pt")["image_grid_thw"][0]
        patches = int(grid.prod())
        tokens_per_image.append(tokens)
        patches_per_image.append(patches)
        total += 2 * language_params * tokens + 2 * vision_params * patches + 2 * head_params * len(prompts)
    return {
        "total": total,
        "tokens_per_image": sum(tokens_per_image) / len(images),
        "patches_per_image": sum(patches_per_image) / len(images),
    }
