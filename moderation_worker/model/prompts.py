"""Prompts as the model reads them: rendered by its chat template, and tokenised with the image expanded."""

from __future__ import annotations

import functools
from collections.abc import Sequence

from transformers.processing_utils import ProcessorMixin


def render_prompt(processor: ProcessorMixin, prompt: str, preamble: str = "") -> str:
    """One user turn, as the model's chat template renders it: ``preamble`` (if any), the image, then
    ``prompt``, with the assistant's turn opened and thinking switched off."""
    before = [{"type": "text", "text": preamble}] if preamble else []
    content = [*before, {"type": "image"}, {"type": "text", "text": prompt}]
    # enable_thinking=False: GLM-4.6V-Flash otherwise opens its answer with <think>, not Yes/No.
    # Templates without the switch ignore it.
    return processor.apply_chat_template(
        [{"role": "user", "content": content}],
        tokenize=False,
        add_generation_prompt=True,
        enable_thinking=False,
    )


class PromptTokens:
    """Token ids of rendered prompts, their one image token expanded into the image's placeholder.

    The text before the image and each expanded image are tokenised once (a compact pack's catalogue is
    thousands of tokens: tokenising it again for every pair cost 20 ms an image at 16 policies, a tenth
    of the scoring); only the text after the image is tokenised per prompt. The image's tokens are
    special tokens, which a tokenizer never merges across, so the pieces join into exactly the whole
    text's ids. A tokenizer that adds tokens of its own around a text (a BOS) is tokenised whole.
    """

    def __init__(self, processor: ProcessorMixin) -> None:
        self._tokenizer = processor.tokenizer
        self._image_token = processor.image_token
        # Few distinct pieces: the text before the image (one per pack) and one per image grid.
        self._piece_ids = functools.lru_cache(maxsize=256)(self._piece_ids_uncached)
        probe = "Yes"
        self._in_pieces = (
            self._tokenizer(probe)["input_ids"]
            == self._tokenizer(probe, add_special_tokens=False)["input_ids"]
        )

    def rows(self, texts: Sequence[str], placeholders: Sequence[str]) -> list[list[int]]:
        """The ids of each text with its first image token replaced by its placeholder."""
        if not texts:
            return []
        if not self._in_pieces:
            expanded = [t.replace(self._image_token, p, 1) for t, p in zip(texts, placeholders, strict=True)]
            return self._tokenizer(expanded)["input_ids"]
        parts = [text.split(self._image_token, 1) for text in texts]
        afters = self._tokenizer([after for _, after in parts], add_special_tokens=False)["input_ids"]
        return [
            [*self._piece_ids(before), *self._piece_ids(placeholder), *after]
            for (before, _), placeholder, after in zip(parts, placeholders, afters, strict=True)
        ]

    def _piece_ids_uncached(self, text: str) -> tuple[int, ...]:
        return tuple(self._tokenizer(text, add_special_tokens=False)["input_ids"])
