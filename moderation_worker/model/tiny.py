"""A tiny, randomly initialised GLM-4.6V-style model, built offline, for tests, the local demo and benchmarks.

No vision-language weights can be downloaded here, so this builds every file a real checkpoint ships with:
a Glm4v config and random weights, a byte-level BPE tokenizer with GLM's special tokens and a chat template
close to GLM-4.6V's (with its ``enable_thinking`` switch), and an image-only processor. It is saved with
``save_pretrained`` so tests load it through ``HFScorer.from_pretrained``, the path production uses.

Its verdicts mean nothing; its shapes, tokens, positions and padding behave like the real model's.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForImageTextToText, Glm4vConfig, PreTrainedTokenizerFast
from transformers.models.glm4v.image_processing_pil_glm4v import Glm4vImageProcessorPil

# The production loader owns the image-only processor and its AutoProcessor registration (see hf.py).
from moderation_worker.model.loading import Glm4vImageOnlyProcessor

# Written last: a directory holding it with the same parameters is a complete build.
_BUILD_MARKER = "tiny_build.json"
_BUILD_FORMAT = 2

# GLM-4.6V's special tokens, in its order. The model config refers to several of them by id.
_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
]
# Real GLM-4.6V keeps these in decoded text (they are not skipped as special).
_THINK_TOKENS = ["<think>", "</think>"]

# Close to GLM-4.6V's template: [gMASK]<sop>, role tokens, image and video placeholders in the user turn,
# ``/nothink`` and an empty think block when ``enable_thinking`` is false. Tools are left out.
CHAT_TEMPLATE = """[gMASK]<sop>
{%- macro visible_text(content) -%}
    {%- if content is string -%}
        {{- content }}
    {%- else -%}
        {%- for item in content -%}
            {%- if item is mapping and item.type == 'text' -%}
                {{- item.text }}
            {%- elif item is string -%}
                {{- item }}
            {%- endif -%}
        {%- endfor -%}
    {%- endif -%}
{%- endmacro -%}
{%- for m in messages -%}
{%- if m.role == 'system' -%}
<|system|>
{{ visible_text(m.content) }}
{%- elif m.role == 'user' -%}
<|user|>
{% if m.content is string -%}
{{ m.content }}
{%- else -%}
{%- for item in m.content -%}
{%- if item.type == 'video' or 'video' in item -%}
<|begin_of_video|><|video|><|end_of_video|>
{%- elif item.type == 'image' or 'image' in item -%}
<|begin_of_image|><|image|><|end_of_image|>
{%- elif item.type == 'text' -%}
{{ item.text }}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{{- '/nothink' if (enable_thinking is defined and not enable_thinking
    and not visible_text(m.content).endswith('/nothink')) else '' -}}
{%- elif m.role == 'assistant' -%}
<|assistant|>
<think></think>
{{ visible_text(m.content) }}
{%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|assistant|>
{{ '<think></think>\n' if (enable_thinking is defined and not enable_thinking) else '' }}
{%- endif -%}"""

# The words the byte-level BPE learns whole; anything else still tokenises, byte by byte. They include every
# word of the default policy pack, so its prompts take about as many tokens as with a real model's vocabulary
# (prompt lengths decide what sharing a prefix saves, so benchmarks need realistic ones).
_WORDS_TEXT = """
a about above across adult adults after against alcohol all also an and animal animals answer any
anyone are arm arms art as at background bare be beach bed being blood bloody body bodies bottle
bottles breast breasts but by can car card cards cartoon casino cause chest child children cigarette
cigarettes clearly close clothes clothing contain contains content corpse crime crowd cut dangerous
dead death depict depicted depicts describe detail does dog drawing drink drinking drug drugs each
either else explicit extremist face faces fight fighting fire firearm firearms flag flags for from
gambling gesture gestures gore graphic gun guns hand hands harm has hate have he her here him his
holding how human if illegal image images in injury injured is it its kid kids kill killing kissing
knife knives label language logo logos man medical men military minor minors money more most naked
no nor not nude nudity object objects of offensive on one only or other our out over people person
photo photograph picture pills place policy poker pornographic pose posing question real religious
revealing rifle risk safe scene screen screenshot self sex sexual sexually shirtless show shown
shows sign signs smoke smoking some statement suggestive swimsuit swimwear symbol symbols syringe
table text that the their them there these they this those threat to tobacco toy underwear unsafe up
use user violence violent visible war wearing weapon weapons what when where which who whose with
woman women wound wounds yes you your Answer Are Can Consider Describe Does Has Is Reply Respond Say
The There This Yes No
Allowed Apply Buddhist Do Graphic Hate Hindu ID Illegal Judge Misleading Nazi Never Not QR Scams Self
Sexual Visible Weapons You account acts added address advertising allow allowed ammunition another
appears apps arousal arts ask awareness bank below breastfeeding careful claim claims classical codes
confirmation confirmations contact context cryptocurrency data depiction described details diagrams
discount discounts disorders document documents drawn driving eating educational email encourage exactly
example exhibits explosive explosives exposed extremism fabricated fake female fictional financial focus
fraction frame full generated genitals gift giveaway glorification glorify groups guaranteed guess
handles harmed hatred health historical identity imagery implausible including inflicted information
injuries insignia investment involving killed kitchen licences links listings login martial medicines
messages messaging methods misleading moderator museum mutilation name new news nipples number numbers
obviously off offered ordinary organisations outside overlays packaging pages paraphernalia parts
passports payment personal pharmacy phishing phone photographic platform pointed police praises
prescription price prices prominently promise promises promote promotes promotional propaganda push
ratings readable records recovery reduction repetitive reporting requests results review reviewing
reviews s sale same scam scars schemes screens screenshots send serious severely sexualised shops showing
simulated slurs someone spam sports statements subject such suicide swastika through tiny together tools
torture toys try under uniformed uploaded used viewer way whether without written
"""


def build_tiny_glm4v(
    path: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_hidden_size: int = 32,
    vision_depth: int = 2,
    max_image_pixels: int = 112 * 112,
    seed: int = 0,
    glm_proportions: bool = False,
) -> Path:
    """Build (once) and save a tiny random Glm4v model, its tokenizer and its processor under ``path``.

    ``max_image_pixels`` is the spatial budget per image (height x width after resizing); the image
    processor's own budget is twice that, because it counts the temporal patch of 2 frames. The defaults
    give 16 image tokens per image and a forward pass of a few images x 10 prompts in tens of milliseconds
    on 2 CPU cores; the benchmark shape is e.g. ``hidden_size=256, num_layers=4, max_image_pixels=448*448``.
    ``glm_proportions`` gives each text layer GLM-4.6V-Flash's proportions at this width (heads of 128,
    2 KV heads, an MLP 3.34x the width) instead of the cheap ones (heads of 64, an MLP 2x): what a
    token costs against what attending to one more cached token costs then matches the real model's,
    which decides what a long cached prompt (the compact layout's catalogue) saves.
    Idempotent: a complete build with the same parameters is left as it is.
    """
    path = Path(path)
    params = {
        "format": _BUILD_FORMAT,
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "vision_hidden_size": vision_hidden_size,
        "vision_depth": vision_depth,
        "max_image_pixels": max_image_pixels,
        "seed": seed,
        **({"glm_proportions": True} if glm_proportions else {}),  # older builds stay valid
    }
    if _read_marker(path) == params:
        return path
    _check_shape(hidden_size, vision_hidden_size)
    path.mkdir(parents=True, exist_ok=True)
    (path / _BUILD_MARKER).unlink(missing_ok=True)  # a rebuild cut short must not pass for the old build

    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, max_image_pixels)
    config = _model_config(
        tokenizer, hidden_size, num_layers, vision_hidden_size, vision_depth, glm_proportions
    )
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)

    model.save_pretrained(path)
    processor.save_pretrained(path)
    (path / _BUILD_MARKER).write_text(json.dumps(params, indent=2, sort_keys=True))
    return path


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE over a few hundred moderation words, with GLM's special tokens.

    Byte-level, so any text tokenises; "Yes" and "No" are single tokens, as in GLM's vocabulary.
    """
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Each word often enough to be merged whole, at the start of a text and after a space.
    words = _WORDS_TEXT.split()
    corpus = [" ".join(words), *(f"{word} {word}" for word in words)] * 4
    backend.train_from_iterator(corpus, trainer)
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIAL_TOKENS])
    backend.add_tokens([AddedToken(t, special=False, normalized=False) for t in _THINK_TOKENS])

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=8192,
    )
    for word in ("Yes", "No"):
        pieces = tokenizer.tokenize(word)
        if len(pieces) != 1:  # a guard on this builder, not a runtime check
            raise AssertionError(f"tiny tokenizer splits {word!r} into {pieces}")
    return tokenizer


def build_processor(tokenizer: PreTrainedTokenizerFast, max_image_pixels: int) -> Glm4vImageOnlyProcessor:
    """The image-only processor for ``max_image_pixels`` (height x width after resizing) per image."""
    return Glm4vImageOnlyProcessor(
        image_processor=_image_processor(max_image_pixels), tokenizer=tokenizer, chat_template=CHAT_TEMPLATE
    )


def special_token_config(tokenizer: PreTrainedTokenizerFast) -> dict[str, object]:
    """The Glm4vConfig fields that name the tokenizer's special tokens by id (image, video, eos, pad)."""
    ids = tokenizer.convert_tokens_to_ids
    return {
        "image_token_id": ids("<|image|>"),
        "video_token_id": ids("<|video|>"),
        "image_start_token_id": ids("<|begin_of_image|>"),
        "image_end_token_id": ids("<|end_of_image|>"),
        "video_start_token_id": ids("<|begin_of_video|>"),
        "video_end_token_id": ids("<|end_of_video|>"),
        "eos_token_id": [ids("<|endoftext|>"), ids("<|user|>"), ids("<|observation|>")],
        "pad_token_id": tokenizer.pad_token_id,
    }


def _image_processor(max_image_pixels: int) -> Glm4vImageProcessorPil:
    # The PIL backend needs no torchvision. The budgets count t * h * w with t = temporal_patch_size = 2.
    temporal = 2
    return Glm4vImageProcessorPil(
        size={"shortest_edge": temporal * 28 * 28, "longest_edge": temporal * max_image_pixels},
        patch_size=14,
        temporal_patch_size=temporal,
        merge_size=2,
    )


def _model_config(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int,
    num_layers: int,
    vision_hidden_size: int,
    vision_depth: int,
    glm_proportions: bool = False,
) -> Glm4vConfig:
    # GLM-4.6V-Flash: hidden 4096, 32 heads of 128, 2 KV heads, intermediate 13696.
    heads = max(2, hidden_size // (128 if glm_proportions else 64))
    head_dim = hidden_size // heads
    kv_heads = 2 if glm_proportions else max(1, heads // 2)
    intermediate = round(hidden_size * 13696 / 4096) if glm_proportions else 2 * hidden_size
    # GLM's text rope rotates half of each head (partial_rotary_factor 0.5), split over (t, h, w) in the
    # ratio of the real [8, 12, 12]; the sections must add up to head_dim * 0.5 / 2.
    rotary_half = head_dim // 4
    t_section = rotary_half // 4
    h_section = (rotary_half - t_section) // 2
    mrope_section = [t_section, h_section, rotary_half - t_section - h_section]
    text_config = {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": intermediate,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "max_position_embeddings": 8192,
        "pad_token_id": tokenizer.pad_token_id,
        # Wider than a trained model's 0.02 so that random scores spread over (0, 1): a test that compares
        # two code paths then sees any difference in what the model attended to.
        "initializer_range": 0.3,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": 10000.0,
            "partial_rotary_factor": 0.5,
            "mrope_section": mrope_section,
        },
    }
    vision_config = {
        "depth": vision_depth,
        "hidden_size": vision_hidden_size,
        "num_heads": max(1, vision_hidden_size // 16),
        "intermediate_size": 2 * vision_hidden_size,
        "out_hidden_size": hidden_size,
        "image_size": 112,
        "patch_size": 14,
        "temporal_patch_size": 2,
        "spatial_merge_size": 2,
        "initializer_range": 0.3,
    }
    return Glm4vConfig(
        text_config=text_config, vision_config=vision_config, **special_token_config(tokenizer)
    )


def _check_shape(hidden_size: int, vision_hidden_size: int) -> None:
    if hidden_size < 32 or hidden_size % 32:
        raise ValueError(f"hidden_size must be a multiple of 32, got {hidden_size}")
    if vision_hidden_size < 16 or vision_hidden_size % 16:
        raise ValueError(f"vision_hidden_size must be a multiple of 16, got {vision_hidden_size}")


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads((path / _BUILD_MARKER).read_text())
    except (OSError, ValueError):
        return None
