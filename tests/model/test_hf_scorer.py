"""HFScorer against the tiny random GLM-4.6V-style model, loaded the way production loads real models."""

from __future__ import annotations

import inspect
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from structlog.testing import capture_logs
from transformers import AutoProcessor, Glm4vForConditionalGeneration

import moderation_worker.model.choice as choice
import moderation_worker.model.family as family
import moderation_worker.model.hf as hf
from moderation_worker.cache import make_feature_cache
from moderation_worker.config import Settings
from moderation_worker.errors import ConfigurationError
from moderation_worker.model.base import ScoringRequest
from moderation_worker.model.hf import Glm4vImageOnlyProcessor, HFScorer
from moderation_worker.model.kv_cache import cache_argument
from moderation_worker.model.prefix import SharedPrefixScorer
from moderation_worker.policies import PolicyPack, load_policy_pack

POLICIES = [
    "Does this image show a weapon?",
    "Does this image contain nudity?",
    "Is there blood or gore?",
    "Does the picture show drugs or pills?",
    "Is a minor visible?",
    "Does it show hate symbols or extremist flags?",
    "Is anyone drinking alcohol?",
    "Is this gambling?",
    "Is someone smoking?",
    "Does the image depict violence?",
]
TOLERANCE = 1e-5


# Every way scores are computed: a strategy (shared prefix, full passes on reused features, plain) and how
# features go back in: mm_encoder_outputs (transformers >= 5.23) or inputs_embeds with explicit positions.
MODES = [
    "shared_prefix/mm_encoder_outputs",
    "shared_prefix/inputs_embeds",
    "reused_features/mm_encoder_outputs",
    "reused_features/inputs_embeds",
    "plain",
]


def _load(tiny_model_dir, **kwargs) -> HFScorer:
    return HFScorer.from_pretrained(str(tiny_model_dir), local_files_only=True, **kwargs)


@pytest.fixture
def load_in_mode(tiny_model_dir, monkeypatch):
    """Loads the tiny model scoring in a given mode; the strategy is required, so a failing probe fails."""

    def load(mode: str, **kwargs) -> HFScorer:
        strategy, _, injection = mode.partition("/")
        if strategy == "plain":
            return _load(tiny_model_dir, strategy="plain", **kwargs)
        if injection == "mm_encoder_outputs" and "mm_encoder_outputs" not in _forward_parameters():
            pytest.skip("this transformers' forward takes no mm_encoder_outputs")
        monkeypatch.setattr(
            choice, "feature_injection", lambda _model, _processor, _strategy: (injection, None)
        )
        scorer = _load(tiny_model_dir, strategy=strategy, **kwargs)
        assert (scorer.strategy, scorer.feature_injection) == (strategy, injection)
        return scorer

    return load


def _forward_parameters():
    return inspect.signature(Glm4vForConditionalGeneration.forward).parameters


def _assert_scores_close(actual: list[float], expected: list[float]) -> None:
    assert len(actual) == len(expected)
    worst = max((abs(a - e) for a, e in zip(actual, expected, strict=True)), default=0.0)
    assert worst <= TOLERANCE, (actual, expected)


class _VisionEncoderCalls:
    """Counts vision-encoder passes and the images they encoded, through a forward hook."""

    def __init__(self, scorer: HFScorer) -> None:
        self.passes = 0
        self.images = 0
        self._handle = scorer.model.model.visual.register_forward_hook(self._count, with_kwargs=True)

    def _count(self, _module, args, kwargs, _output) -> None:
        grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
        self.passes += 1
        self.images += int(grid_thw.shape[0])

    def close(self) -> None:
        self._handle.remove()


@pytest.fixture
def vision_calls():
    counters: list[_VisionEncoderCalls] = []

    def attach(scorer: HFScorer) -> _VisionEncoderCalls:
        counters.append(_VisionEncoderCalls(scorer))
        return counters[-1]

    yield attach
    for counter in counters:
        counter.close()


@pytest.mark.parametrize("mode", MODES)
def test_yes_score_equals_the_probability_of_yes_at_the_first_generated_step(load_in_mode, noise_image, mode):
    # Given one image and the prompt rendered independently, the way a generating client would
    scorer = load_in_mode(mode)
    image = noise_image(96, 64)
    prompt = POLICIES[0]
    processor = scorer.processor
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )
    inputs = processor(images=[image], text=[text], return_tensors="pt")
    generated = scorer.model.generate(
        **inputs,
        max_new_tokens=1,
        output_logits=True,
        return_dict_in_generate=True,
        do_sample=False,
    )
    yes, no = processor.tokenizer.convert_tokens_to_ids(["Yes", "No"])
    first_step = generated.logits[0][0]
    expected = torch.softmax(first_step[[yes, no]].float(), dim=-1)[0].item()

    # I expect the scorer's single forward pass to give the same probability
    [scores] = scorer.score([ScoringRequest(image=image, image_key="img", prompts=[prompt])])
    _assert_scores_close(scores.yes_probabilities, [expected])


@pytest.mark.parametrize("mode", MODES)
def test_a_batch_of_mixed_sizes_scores_the_same_as_each_image_alone(load_in_mode, noise_image, mode):
    # Given images of different sizes and shapes (so different image-token counts and padding), each with
    # its own number of prompts, and passes small enough that pairs of different images share one
    scorer = load_in_mode(mode, max_pairs_per_pass=5, token_budget=512)
    requests = [
        ScoringRequest(noise_image(112, 112), "square", POLICIES[:3]),
        ScoringRequest(noise_image(140, 56), "wide", POLICIES[3:4]),
        ScoringRequest(noise_image(50, 120), "tall", POLICIES[2:9]),
        ScoringRequest(noise_image(20, 20), "tiny-upscaled", POLICIES[5:7]),
        ScoringRequest(noise_image(60, 60), "no-prompts", []),
    ]

    # When scored together and one by one
    together = scorer.score(requests)
    alone = [scorer.score([request])[0] for request in requests]

    # I expect the same scores, in each request's prompt order
    for batched, single, request in zip(together, alone, requests, strict=True):
        assert len(batched.yes_probabilities) == len(request.prompts)
        _assert_scores_close(batched.yes_probabilities, single.yes_probabilities)


@pytest.mark.parametrize("strategy", ["shared_prefix", "reused_features"])
def test_reused_features_score_the_same_as_the_plain_processor_path(tiny_model_dir, noise_image, strategy):
    plain = _load(tiny_model_dir, strategy="plain")
    scorer = _load(tiny_model_dir, strategy=strategy)
    requests = [ScoringRequest(noise_image(w, h), f"img{w}x{h}", POLICIES) for w, h in [(112, 84), (70, 98)]]

    assert scorer.reuses_features and not plain.reuses_features
    for reused, expected in zip(scorer.score(requests), plain.score(requests), strict=True):
        _assert_scores_close(reused.yes_probabilities, expected.yes_probabilities)


def _pack_prompts(count: int) -> list[str]:
    """The default pack's real prompts, then short questions under its instructions, up to ``count``."""
    pack = load_policy_pack(Settings().policy_pack_path())
    extra = [f"{pack.instructions}\n\nQuestion: {question}\n{pack.answer_format}" for question in POLICIES]
    return ([pack.prompt(policy) for policy in pack.policies] + extra)[:count]


def _compact_pack(count: int) -> PolicyPack:
    """The default pack in the compact layout, its policies then short ones of POLICIES, up to ``count``."""
    document = load_policy_pack(Settings().policy_pack_path()).model_dump(mode="json")
    extra = [
        dict(document["policies"][0], id=f"extra_{n}", title=f"Extra {n}", rule=f"No: {q}", question=q)
        for n, q in enumerate(POLICIES)
    ]
    document.update(prompt_layout="compact", policies=(document["policies"] + extra)[:count])
    return PolicyPack.model_validate(document)


def _compact_request(image, key: str, count: int) -> ScoringRequest:
    pack = _compact_pack(count)
    return ScoringRequest(image, key, [pack.prompt(p) for p in pack.policies], preamble=pack.preamble())


@pytest.mark.parametrize("prompt_layout", ["full", "compact"])
@pytest.mark.parametrize("layout", ["rows", "packed"])
@pytest.mark.parametrize("policies", [1, 4, 16])
@pytest.mark.parametrize(
    ("width", "height"), [(112, 112), (112, 56), (42, 98)], ids=["square", "wide", "tall"]
)
def test_shared_prefix_scores_equal_one_full_prompt_pass_per_policy(
    tiny_model_dir, noise_image, policies, width, height, layout, prompt_layout
):
    # Given a policy pack of 1, 4 or 16 prompts and square or non-square images (different 3-D positions),
    # suffixes in rows of their own or packed into one row per image behind a block mask, and prompts
    # laid out in full or compact (every rule in a catalogue before the image, its KV kept)
    shared = _load(tiny_model_dir, strategy="shared_prefix", suffix_layout=layout)
    assert shared.suffix_layout == layout
    plain = _load(tiny_model_dir, strategy="plain")
    image = noise_image(width, height)
    requests = [
        ScoringRequest(image, "img", _pack_prompts(policies))
        if prompt_layout == "full"
        else _compact_request(image, "img", policies)
    ]

    # When scored with the shared prefix and with one full-prompt processor pass per policy
    [got] = shared.score(requests)
    [expected] = plain.score(requests)

    # I expect the same probabilities, to well within 1e-4 (the bound) in float32
    assert len(got.yes_probabilities) == policies
    _assert_scores_close(got.yes_probabilities, expected.yes_probabilities)


class _LanguageModelPasses:
    """Records (rows, new tokens, cached tokens) of every language-model pass, through a forward hook."""

    def __init__(self, scorer: HFScorer) -> None:
        self.passes: list[tuple[int, int, int]] = []
        language_model = scorer.model.model.language_model
        self._cache_argument = cache_argument(language_model)  # past_key_values before 5.24, cache since
        self._handle = language_model.register_forward_hook(self._record, with_kwargs=True)

    def _record(self, _module, _args, kwargs, _output) -> None:
        rows, new_tokens = kwargs["inputs_embeds"].shape[:2]
        cache = kwargs.get(self._cache_argument)
        cached = cache.get_seq_length() - new_tokens if cache is not None else 0
        self.passes.append((rows, new_tokens, cached))

    def close(self) -> None:
        self._handle.remove()


def _passes_over_two_images(scorer: HFScorer, noise_image, prompts: list[str]) -> _LanguageModelPasses:
    """The language-model passes of scoring a square and a tall image against ``prompts``."""
    requests = [
        ScoringRequest(noise_image(112, 112), "a", prompts),
        ScoringRequest(noise_image(56, 84), "b", prompts),
    ]
    passes = _LanguageModelPasses(scorer)
    try:
        scorer.score(requests)
    finally:
        passes.close()
    return passes


def test_the_shared_prefix_runs_once_per_image_and_the_policies_once_against_its_cache(
    tiny_model_dir, noise_image
):
    scorer = _load(tiny_model_dir, strategy="shared_prefix", suffix_layout="rows")
    passes = _passes_over_two_images(scorer, noise_image, _pack_prompts(16))

    # I expect one prefix pass over both images with nothing cached, holding the image and the pack's
    # instructions, then one pass of the 32 policy suffixes against that cache
    assert len(passes.passes) == 2
    (prefix_rows, prefix_tokens, prefix_cached), (suffix_rows, _, suffix_cached) = passes.passes
    assert (prefix_rows, prefix_cached) == (2, 0)
    instructions = load_policy_pack(Settings().policy_pack_path()).instructions
    assert prefix_tokens > 16 + len(scorer.processor.tokenizer(instructions)["input_ids"])
    assert suffix_rows == 32 and suffix_cached == prefix_tokens


def test_packed_suffixes_hold_each_prefix_once_one_row_per_image(tiny_model_dir, noise_image):
    scorer = _load(tiny_model_dir, strategy="shared_prefix", suffix_layout="packed")
    prompts = _pack_prompts(16)
    passes = _passes_over_two_images(scorer, noise_image, prompts)

    # I expect the prefix pass, then one row per image holding all 16 suffixes against a cache of one
    # prefix per image (not 32 copies): KV memory grows by the suffix tokens only
    assert len(passes.passes) == 2
    (prefix_rows, prefix_tokens, _), (suffix_rows, suffix_tokens, suffix_cached) = passes.passes
    assert prefix_rows == suffix_rows == 2 and suffix_cached == prefix_tokens
    split = [len(scorer.processor.tokenizer(p)["input_ids"]) for p in prompts]
    assert suffix_tokens < sum(split)  # the suffixes, not the whole prompts, are what a row adds


@pytest.mark.parametrize("layout", ["rows", "packed"])
def test_a_compact_packs_catalogue_runs_once_and_every_image_computes_only_what_follows_it(
    tiny_model_dir, noise_image, layout
):
    scorer = _load(tiny_model_dir, strategy="shared_prefix", suffix_layout=layout)
    pack = _compact_pack(16)
    catalogue = len(scorer.processor.tokenizer(pack.preamble())["input_ids"])
    passes = _LanguageModelPasses(scorer)
    try:
        # Two calls of two images, one of them asked a single policy
        scorer.score(
            [_compact_request(noise_image(112, 112), "a", 16), _compact_request(noise_image(56, 84), "b", 16)]
        )
        single = _compact_request(noise_image(70, 98), "c", 16)
        scorer.score([replace(single, prompts=single.prompts[:1])])
    finally:
        passes.close()

    # I expect one pass over the catalogue alone (nothing cached, one row), then prefix passes that start
    # with the catalogue cached: the second call, and its single policy, run no catalogue pass again
    (head_rows, head_tokens, head_cached), *rest = passes.passes
    assert (head_rows, head_cached) == (1, 0) and head_tokens > catalogue
    assert all(cached > 0 for _, _, cached in rest)  # nothing else starts from scratch
    prefix_passes = [(rows, new) for rows, new, cached in rest if cached == head_tokens]
    assert [rows for rows, _ in prefix_passes] == [2, 1]  # the two images, then the single one
    assert all(new < head_tokens for _, new in prefix_passes)  # only the image and what follows it
    # A row per suffix (32, then 1), or a row per image holding all its suffixes (2, then 1)
    suffix_rows = sum(rows for rows, _, cached in rest if cached > head_tokens)
    assert suffix_rows == (33 if layout == "rows" else 3)
    assert scorer._heads.computed == 1


def test_a_catalogue_is_announced_once_and_a_budget_it_fills_is_a_warning_not_a_failure(
    tiny_model_dir, noise_image
):
    # Given a token budget a 16-policy catalogue fills (each image then needs a pass of its own)
    with capture_logs() as logs:
        tight = _load(tiny_model_dir, strategy="shared_prefix", token_budget=2048)
        requests = [
            _compact_request(noise_image(112, 84), "a", 16),
            _compact_request(noise_image(56, 98), "b", 16),
        ]
        got = tight.score(requests)
        tight.score(requests)

    # I expect one line saying what the catalogue costs (none for the start-up probe's head), one
    # warning naming the budget, and the scores of the plain path all the same
    [kept] = [entry for entry in logs if entry["event"] == "prompt_head_kept"]
    assert kept["tokens"] > 1024 and kept["kv_bytes"] == tight.kept_kv_bytes > 0
    [warning] = [entry for entry in logs if entry["event"] == "prompt_head_fills_token_budget"]
    assert warning["log_level"] == "warning" and warning["token_budget"] == 2048
    expected = _load(tiny_model_dir, strategy="plain").score(requests)
    for scores, plain in zip(got, expected, strict=True):
        _assert_scores_close(scores.yes_probabilities, plain.yes_probabilities)


def test_auto_takes_packed_suffixes_where_they_pass_the_probe_and_rows_can_be_required(tiny_model_dir):
    # On a GPU auto also times both layouts on a probe; section 1 measured packed faster on a CPU.
    assert _load(tiny_model_dir, strategy="shared_prefix").suffix_layout == "packed"
    assert _load(tiny_model_dir, strategy="shared_prefix", suffix_layout="rows").suffix_layout == "rows"
    assert _load(tiny_model_dir, strategy="plain", suffix_layout="packed").suffix_layout == "rows"


def test_a_token_budget_splits_passes_without_changing_scores(tiny_model_dir, noise_image):
    # Given a budget too small for two prefixes in one pass, or more than a few suffix rows on their cache
    roomy = _load(tiny_model_dir, strategy="shared_prefix", suffix_layout="rows")
    tight = _load(tiny_model_dir, strategy="shared_prefix", token_budget=256, suffix_layout="rows")
    requests = [
        ScoringRequest(noise_image(112, 112), "a", _pack_prompts(6)),
        ScoringRequest(noise_image(84, 56), "b", POLICIES[:5]),
    ]
    passes = _LanguageModelPasses(tight)
    try:
        got = tight.score(requests)
    finally:
        passes.close()

    # I expect more, smaller passes, none above the budget, and the same scores
    assert len(passes.passes) > 4
    assert all(rows * (new + cached) <= 256 or rows == 1 for rows, new, cached in passes.passes)
    for batched, expected in zip(got, roomy.score(requests), strict=True):
        _assert_scores_close(batched.yes_probabilities, expected.yes_probabilities)


def test_the_vision_encoder_runs_once_per_distinct_image_not_once_per_prompt(
    tiny_model_dir, noise_image, vision_calls
):
    # Given three requests, two of them the same image, with ten prompts each
    scorer = _load(tiny_model_dir, feature_cache=make_feature_cache(10_000_000))
    calls = vision_calls(scorer)
    cat, dog = noise_image(112, 112), noise_image(84, 112)
    requests = [
        ScoringRequest(cat, "cat", POLICIES),
        ScoringRequest(dog, "dog", POLICIES),
        ScoringRequest(cat, "cat", POLICIES),
    ]

    # When scored on an empty cache
    results = scorer.score(requests)

    # I expect one encoder pass over the two distinct images, and no cache hits
    assert (calls.passes, calls.images) == (1, 2)
    assert [r.feature_cache_hit for r in results] == [False, False, False]
    _assert_scores_close(results[2].yes_probabilities, results[0].yes_probabilities)


def test_a_feature_cache_hit_gives_the_same_scores_without_running_the_vision_encoder(
    tiny_model_dir, noise_image, vision_calls
):
    cache = make_feature_cache(10_000_000)
    scorer = _load(tiny_model_dir, feature_cache=cache)
    calls = vision_calls(scorer)
    requests = [ScoringRequest(noise_image(112, 112), "seen", POLICIES)]
    first = scorer.score(requests)
    assert calls.images == 1

    # When the same image (same image_key) comes again, next to a new one
    again = scorer.score([*requests, ScoringRequest(noise_image(56, 84), "new", POLICIES[:2])])

    # I expect the seen image to hit, score the same, and only the new image to be encoded
    assert [r.feature_cache_hit for r in again] == [True, False]
    _assert_scores_close(again[0].yes_probabilities, first[0].yes_probabilities)
    assert calls.images == 2
    assert cache.stats.hits == 1
    assert 0 < cache.current_size <= 10_000_000


def test_feature_cache_entries_are_bounded_by_the_bytes_of_their_tensors(tiny_model_dir, noise_image):
    # Given a cache that holds about one image's features
    roomy = make_feature_cache(10_000_000)
    _load(tiny_model_dir, feature_cache=roomy).score(
        [ScoringRequest(noise_image(112, 112), "one", POLICIES[:1])]
    )
    one_image = roomy.current_size
    cache = make_feature_cache(int(one_image * 1.5))
    scorer = _load(tiny_model_dir, feature_cache=cache)

    # When two images of that size are scored
    scorer.score([ScoringRequest(noise_image(112, 112), f"img{i}", POLICIES[:1]) for i in range(2)])

    # I expect one to be evicted
    assert len(cache) == 1 and cache.stats.evictions == 1
    assert cache.current_size == one_image


def test_a_feature_cache_shared_by_two_models_never_gives_one_the_others_features(
    tiny_model_dir, noise_image, vision_calls
):
    # Given one cache shared by the model in float32 and in bfloat16 (different features, same image keys)
    cache = make_feature_cache(10_000_000)
    full = _load(tiny_model_dir, feature_cache=cache)
    half = _load(tiny_model_dir, feature_cache=cache, dtype="bfloat16")
    request = ScoringRequest(noise_image(112, 112), "same-key", POLICIES[:2])
    full.score([request])

    # When the other model scores the same image key
    calls = vision_calls(half)
    [result] = half.score([request])

    # I expect a miss: its own encoder runs, and both models' entries are kept
    assert not result.feature_cache_hit and calls.images == 1
    assert len(cache) == 2 and half.info.dtype == "bfloat16"


@pytest.mark.parametrize("mode", MODES)
def test_scores_do_not_depend_on_rope_state_left_in_the_model(load_in_mode, noise_image, mode):
    scorer = load_in_mode(mode)
    requests = [ScoringRequest(noise_image(84, 56), "img", POLICIES[:4])]
    before = scorer.score(requests)

    # When an earlier caller (generate, another batch size) left stale rope deltas in the model
    scorer.model.model.rope_deltas = torch.full((7, 1), 1000, dtype=torch.long)
    after = scorer.score(requests)

    _assert_scores_close(after[0].yes_probabilities, before[0].yes_probabilities)


def test_scoring_nothing_returns_nothing(scorer, noise_image):
    assert scorer.score([]) == []
    [result] = scorer.score([ScoringRequest(noise_image(30, 30), "empty", [])])
    assert result.yes_probabilities == [] and not result.feature_cache_hit


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"yes_token": "Yes please"}, "'Yes please'"),
        ({"no_token": "Zyzzyva"}, "'Zyzzyva'"),
    ],
)
def test_startup_refuses_answer_tokens_that_are_not_single_tokens(tiny_model_dir, kwargs, named):
    with pytest.raises(ConfigurationError, match="single token") as error:
        _load(tiny_model_dir, **kwargs)
    assert named in str(error.value)
    assert "tokenises to" in str(error.value)


def test_the_tiny_model_loads_through_the_production_loader_with_its_full_processor(tiny_model_dir, scorer):
    processor = AutoProcessor.from_pretrained(str(tiny_model_dir))

    assert isinstance(processor, Glm4vImageOnlyProcessor)
    assert processor.image_processor is not None and processor.tokenizer is not None
    assert isinstance(scorer.processor, Glm4vImageOnlyProcessor)
    assert (scorer.info.model_id, scorer.info.revision) == (str(tiny_model_dir), "local")
    assert (scorer.info.dtype, scorer.info.device) == ("float32", "cpu")
    assert scorer.info.cache_key == f"{tiny_model_dir}@local:float32"
    assert scorer.reuses_features


def test_a_model_family_that_cannot_take_features_falls_back_to_plain_batches_and_says_so_once(
    tiny_model_dir, scorer, noise_image, monkeypatch
):
    monkeypatch.setattr(
        choice, "feature_injection", lambda _model, _processor, _strategy: (None, "no mm_encoder_outputs")
    )
    monkeypatch.setattr(choice, "family_reason", lambda _model, _processor: "not a Glm4v-style family")
    with capture_logs() as logs:
        fallback = _load(tiny_model_dir)
        request = ScoringRequest(noise_image(84, 84), "img", POLICIES[:3])
        results = fallback.score([request])
        fallback.score([request])

    assert fallback.strategy == "plain" and not fallback.reuses_features
    # a family that never could share the prefix falls back as designed: no warning
    assert not [entry for entry in logs if entry["log_level"] == "warning"]
    ready = [entry for entry in logs if entry["event"] == "hf_scorer_ready"]
    assert len(ready) == 1 and ready[0]["strategy"] == "plain"
    assert ready[0]["not_used"] == {
        "shared_prefix": "no mm_encoder_outputs",
        "reused_features": "no mm_encoder_outputs",
    }
    _assert_scores_close(results[0].yes_probabilities, scorer.score([request])[0].yes_probabilities)


def test_the_auto_strategy_is_the_shared_prefix_on_a_glm4v_model(scorer):
    # On the installed transformers, whatever it calls the cache argument (past_key_values before 5.24)
    assert scorer.strategy == "shared_prefix" and scorer.reuses_features
    assert scorer.info.strategy == "shared_prefix"


def test_a_forward_that_takes_no_kv_cache_falls_back_with_a_warning_naming_the_reason(
    tiny_model_dir, monkeypatch
):
    # Given a transformers whose forward renamed the cache argument to something not yet known
    monkeypatch.setattr(family, "cache_argument", lambda _model: None)

    with capture_logs() as logs:
        fallback = _load(tiny_model_dir)

    # I expect the shared prefix refused at start, the next strategy taken, and a warning saying why
    assert fallback.strategy == "reused_features"
    [warning] = [entry for entry in logs if entry["event"] == "shared_prefix_unavailable"]
    assert "KV cache argument" in warning["reason"] and warning["family"].startswith("Glm4v")


def test_a_shared_prefix_that_would_change_scores_falls_back_to_full_passes_at_startup(
    tiny_model_dir, noise_image, monkeypatch
):
    # Given a model whose text positions after the image would not continue where the split assumes
    original = SharedPrefixScorer._prefix_pass

    def shifted(self, jobs, head):
        cache, mask, next_position = original(self, jobs, head)
        return cache, mask, next_position + 3

    monkeypatch.setattr(SharedPrefixScorer, "_prefix_pass", shifted)

    # I expect the probe to catch it: auto settles on full passes over reused features and says why,
    # and requiring the shared prefix refuses to start
    with capture_logs() as logs:
        fallback = _load(tiny_model_dir)
    assert fallback.strategy == "reused_features"
    [ready] = [entry for entry in logs if entry["event"] == "hf_scorer_ready"]
    assert "answer logits" in ready["not_used"]["shared_prefix"]
    # a Glm4v model losing its main optimisation is a warning with the reason, not only an info line
    [warning] = [entry for entry in logs if entry["event"] == "shared_prefix_unavailable"]
    assert warning["log_level"] == "warning" and "answer logits" in warning["reason"]
    assert warning["strategy"] == "reused_features" and fallback.info.strategy == "reused_features"
    with pytest.raises(ConfigurationError, match=r"shared_prefix.*answer logits"):
        _load(tiny_model_dir, strategy="shared_prefix")


def test_feature_reuse_that_would_change_scores_is_caught_at_startup(tiny_model_dir, monkeypatch):
    # Given a family whose reused features differ from what its own forward computes
    original = hf.compute_features

    def skewed(model, processor, images):
        return [replace(f, embeds=f.embeds * 1.5) for f in original(model, processor, images)]

    monkeypatch.setattr(hf, "compute_features", skewed)

    # I expect the start-up probe to notice and fall back, or refuse when reuse is required
    assert _load(tiny_model_dir).strategy == "plain"
    with pytest.raises(ConfigurationError, match="answer logits"):
        _load(tiny_model_dir, strategy="reused_features")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"dtype": "float8"}, "unknown dtype"),
        ({"device": "cuda:0"} if not torch.cuda.is_available() else {"device": "nonsense"}, "device"),
        ({"max_pairs_per_pass": 0}, "max_pairs_per_pass"),
        ({"token_budget": 0}, "token_budget"),
        ({"strategy": "fastest"}, "unknown scoring strategy"),
    ],
)
def test_startup_refuses_unusable_settings(tiny_model_dir, kwargs, message):
    with pytest.raises(ConfigurationError, match=message):
        _load(tiny_model_dir, **kwargs)


def test_startup_refuses_a_model_that_is_not_there(tmp_path):
    with pytest.raises(ConfigurationError, match="cannot load model"):
        HFScorer.from_pretrained(str(tmp_path / "missing"), local_files_only=True)


def test_importing_the_model_package_imports_neither_torch_nor_transformers():
    # GPU-less workers and tools import the package; only HFScorer's module may pull the heavy stack in.
    code = "import sys, moderation_worker.model; print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None,
    reason="torch.compile's CPU backend (inductor) needs a C++ compiler",
)
def test_a_compiled_decoder_scores_the_same_as_the_eager_model(tiny_model_dir, scorer, noise_image):
    # Given the model_compile setting (torch.compile of the decoder stack; inductor on CPU here)
    compiled = _load(tiny_model_dir, compile_model=True)
    requests = [ScoringRequest(noise_image(84, 112), "img", POLICIES[:3])]

    # I expect the decoder to run compiled, and the same scores as the eager model
    assert compiled.model.model.language_model._compiled_call_impl is not None
    assert scorer.model.model.language_model._compiled_call_impl is None
    [got] = compiled.score(requests)
    [expected] = scorer.score(requests)
    _assert_scores_close(got.yes_probabilities, expected.yes_probabilities)


def test_images_decoded_to_the_useful_edge_keep_every_pixel_the_model_sees(scorer, noise_image):
    # Given the edge the scorer reports for the tiny model (a 112 x 112 pixel budget)
    edge = scorer.useful_image_edge
    assert edge is not None and edge < 4096
    image_processor = scorer.processor.image_processor

    def grid(width: int, height: int) -> list[int]:
        return image_processor(images=[noise_image(width, height)], return_tensors="pt")["image_grid_thw"][
            0
        ].tolist()

    # I expect a 2:1 image at that edge to give the model the same patch grid as a huge one, and one
    # merged patch (28 px) narrower to give it less: the edge is the smallest that loses nothing
    assert grid(edge, edge // 2) == grid(4096, 2048)
    assert grid(edge - 28, (edge - 28) // 2) != grid(4096, 2048)
