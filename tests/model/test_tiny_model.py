"""The tiny GLM-4.6V-style model: built offline, shaped like the real one where the scorer depends on it."""

from __future__ import annotations

import json

import pytest
from transformers import AutoConfig, AutoTokenizer, Glm4vConfig
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING, processor_class_from_name
from transformers.models.glm4v.processing_glm4v import Glm4vProcessor

from moderation_worker.model.base import ScoringRequest
from moderation_worker.model.hf import HFScorer
from moderation_worker.model.tiny import build_tiny_glm4v

GLM_SPECIAL_TOKENS = [
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|begin_of_image|>",
    "<|image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|video|>",
    "<|end_of_video|>",
    "<think>",
    "</think>",
    "<|endoftext|>",
]
TEN_POLICIES = [f"Does this image show {thing}?" for thing in "abcdefghij"]


@pytest.fixture(scope="module")
def benchmark_model_dir(tmp_path_factory):
    """The benchmark's shape: wider, deeper, 448-pixel images."""
    return build_tiny_glm4v(
        tmp_path_factory.mktemp("tiny-bench"), hidden_size=256, num_layers=4, max_image_pixels=448 * 448
    )


def test_building_again_leaves_a_complete_build_alone_and_rebuilds_on_new_parameters(tmp_path):
    first = build_tiny_glm4v(tmp_path / "m")
    weights = first / "model.safetensors"
    written = weights.stat().st_mtime_ns

    assert build_tiny_glm4v(tmp_path / "m") == first
    assert weights.stat().st_mtime_ns == written

    build_tiny_glm4v(tmp_path / "m", seed=1)
    assert weights.stat().st_mtime_ns != written
    assert json.loads((first / "tiny_build.json").read_text())["seed"] == 1


def test_the_same_seed_builds_the_same_weights_and_tokenizer(tmp_path):
    a = build_tiny_glm4v(tmp_path / "a")
    b = build_tiny_glm4v(tmp_path / "b")

    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_answer_words_and_glm_special_tokens_are_single_tokens(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir)

    for token in ["Yes", "No", *GLM_SPECIAL_TOKENS]:
        assert len(tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image|>")
    assert config.image_start_token_id == tokenizer.convert_tokens_to_ids("<|begin_of_image|>")
    assert config.image_end_token_id == tokenizer.convert_tokens_to_ids("<|end_of_image|>")
    assert tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|endoftext|>"
    assert config.text_config.vocab_size == len(tokenizer)


def test_any_prompt_text_tokenises_and_decodes_back(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = "Zyzzyva? Ünïcödé, 日本語, emoji 🙂 and tabs\tand\nnew lines: does this show a weapon"

    ids = tokenizer.encode(text, add_special_tokens=False)

    assert tokenizer.decode(ids) == text
    # Known words are whole pieces, not bytes: the vocabulary is small but real.
    assert tokenizer.tokenize(" weapon") == ["Ġweapon"]


def test_the_chat_template_renders_like_glm_4_6v_and_switches_thinking_off(scorer):
    processor = scorer.processor
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Is it safe?"}]}]

    thinking_off = processor.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    default = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    assert thinking_off == (
        "[gMASK]<sop><|user|>\n<|begin_of_image|><|image|><|end_of_image|>Is it safe?/nothink"
        "<|assistant|>\n<think></think>\n"
    )
    assert default.endswith("Is it safe?<|assistant|>\n")


def test_the_processor_is_image_only_and_saved_under_its_registered_name(tiny_model_dir, scorer):
    saved = json.loads((tiny_model_dir / "processor_config.json").read_text())

    assert saved["processor_class"] == "Glm4vImageOnlyProcessor"
    assert not hasattr(scorer.processor, "video_processor") or scorer.processor.video_processor is None


def test_the_registration_leaves_real_glm_models_their_own_processors():
    # HFScorer's module registered the image-only processor on import (this test module imported it).
    assert processor_class_from_name("Glm4vProcessor") is Glm4vProcessor
    assert processor_class_from_name("Glm46VProcessor").__module__.startswith("transformers.")
    assert PROCESSOR_MAPPING[Glm4vConfig] is Glm4vProcessor


def test_the_default_image_budget_gives_16_image_tokens(scorer, noise_image):
    processed = scorer.processor.image_processor(images=[noise_image(112, 112), noise_image(448, 448)])

    # t * h * w <= 2 * 112 * 112: 8 x 8 patches of 14 pixels, merged 2 x 2 into 16 tokens.
    assert processed["image_grid_thw"].tolist() == [[1, 8, 8], [1, 8, 8]]


def test_the_benchmark_shape_takes_448_pixel_images_as_256_tokens(benchmark_model_dir, noise_image):
    config = AutoConfig.from_pretrained(benchmark_model_dir)
    text = config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    scorer = HFScorer.from_pretrained(str(benchmark_model_dir), local_files_only=True)

    processed = scorer.processor.image_processor(images=[noise_image(448, 448)])
    [result] = scorer.score([ScoringRequest(noise_image(448, 448), "big", TEN_POLICIES)])

    assert (text.hidden_size, text.num_hidden_layers) == (256, 4)
    assert sum(text.rope_parameters["mrope_section"]) == head_dim * 0.5 / 2
    assert processed["image_grid_thw"].tolist() == [[1, 32, 32]]
    assert scorer.reuses_features and len(result.yes_probabilities) == 10
