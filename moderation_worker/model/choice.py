"""How the scorer chooses its strategy and suffix layout at load: the fastest that gives the same answers.

A mixin of HFScorer, kept apart because it is start-up logic, not scoring: each candidate is probed
against the plain path on a probe image, and on a GPU the suffix layouts are timed.
"""

from __future__ import annotations

import math
import time
from typing import Literal

import structlog
import torch
from PIL import Image

from moderation_worker.errors import ConfigurationError
from moderation_worker.model.base import ScoringRequest
from moderation_worker.model.family import family_reason, feature_injection
from moderation_worker.model.features import Injection
from moderation_worker.model.prefix import HeadKV

log = structlog.get_logger(__name__)

Strategy = Literal["shared_prefix", "reused_features", "plain"]
# Fastest first: "auto" takes the first one the model supports and passes the load-time probe with.
STRATEGIES: tuple[Strategy, ...] = ("shared_prefix", "reused_features", "plain")

# Text before the probe image, long enough that its KV is kept (prefix.MIN_CACHED_HEAD_TOKENS).
_PROBE_RULES = "Probe rules, by number:\n" + "\n".join(
    f"{n}. Rule {n}: nothing shown in this probe image may break rule number {n}." for n in range(1, 5)
)


class StrategyChoice:
    """The start-up choices of HFScorer (which defines the attributes and scoring methods used here)."""

    # --- choosing the strategy, once -----------------------------------------------------------------------

    def _choose_strategy(self, requested: Literal["auto"] | Strategy) -> tuple[Injection | None, Strategy]:
        """The injection and strategy to score with, the fastest that works here. Decided and logged once."""
        candidates = STRATEGIES if requested == "auto" else (requested,)
        rejected: dict[str, str] = {}
        for strategy in candidates:
            injection, reason = None, None
            if strategy != "plain":
                injection, reason = feature_injection(self._model, self._processor, strategy)
            if reason is None:
                reason = self._probe(strategy, injection)
            if reason is None:
                log.info(
                    "hf_scorer_ready",
                    model=self._info.model_id,
                    strategy=strategy,
                    via=injection,
                    **({"not_used": rejected} if rejected else {}),
                )
                self._warn_if_prefix_lost(strategy, rejected)
                return injection, strategy
            if requested != "auto":
                raise ConfigurationError(
                    f"scoring strategy {strategy!r} was required but cannot be used: {reason}"
                )
            rejected[strategy] = reason
        raise AssertionError("the plain strategy either passes its probe or raises")  # pragma: no cover

    @property
    def suffix_layout(self) -> str:
        """How shared-prefix suffixes are laid out: ``packed`` (the prefix KV once per image) or
        ``rows`` (a copy per policy); ``rows`` for the other strategies."""
        return self._layout

    def _choose_layout(self, requested: str) -> str:
        """``auto``: ``packed`` where it passes the probe, and on a GPU where it also scores the probe
        faster (a custom mask can cost the fastest attention kernels there). On a CPU it is not timed:
        section 1 measured packed the faster on a text layer in GLM-4.6V-Flash's proportions (1.16x at
        16 full prompts, 1.4x compact), and it holds 3.6x less KV. Only the benchmark's narrow model,
        where attention outweighs the MLP, preferred rows at 16 full prompts. Decided and logged once."""
        if self._strategy != "shared_prefix" or requested == "rows":
            return "rows"
        self._layout = "packed"
        reason = self._probe("shared_prefix", self._injection)
        if reason is None and requested == "auto" and self._device.type == "cuda":
            packed_s, rows_s = self._time_layouts()
            if packed_s > rows_s:
                reason = f"slower here: {packed_s * 1000:.1f} ms against {rows_s * 1000:.1f} ms per probe"
        if reason is not None and requested == "packed":
            raise ConfigurationError(f"the packed suffix layout was required but cannot be used: {reason}")
        layout = "packed" if reason is None else "rows"
        log.info("suffix_layout_chosen", layout=layout, **({"packed_not_used": reason} if reason else {}))
        return layout

    def _time_layouts(self, repeats: int = 3) -> tuple[float, float]:
        """Seconds per probe scoring (8 prompts) with each layout, the best of ``repeats``."""
        image = Image.linear_gradient("L").resize((224, 224)).convert("RGB")
        prompts = [f"Probe question {n}?" for n in range(8)]
        request = ScoringRequest(image=image, image_key="layout-probe", prompts=prompts)
        timings = {}
        cache, self._feature_cache = self._feature_cache, None
        try:
            for layout in ("packed", "rows"):
                self._layout = layout
                best = math.inf
                for _ in range(repeats + 1):  # the first is warm-up
                    started = time.perf_counter()
                    self.score([request])
                    torch.cuda.synchronize()
                    best = min(best, time.perf_counter() - started)
                timings[layout] = best
        finally:
            self._feature_cache = cache
        return timings["packed"], timings["rows"]

    def _warn_if_prefix_lost(self, chosen: Strategy, rejected: dict[str, str]) -> None:
        """A family built for the shared prefix that falls back loses most of its speed: say so loudly.

        Families that never could (no 3-D positions from explicit inputs) fall back silently, as designed.
        A new transformers release renaming an argument is the usual cause, which a warning makes visible
        on the first start instead of as a slower fleet.
        """
        if "shared_prefix" not in rejected or family_reason(self._model, self._processor) is not None:
            return
        log.warning(
            "shared_prefix_unavailable",
            model=self._info.model_id,
            family=type(self._model).__name__,
            reason=rejected["shared_prefix"],
            strategy=chosen,
        )

    def _probe(self, strategy: Strategy, injection: Injection | None) -> str | None:
        """Score a probe image with ``strategy`` and the plain path; why it must not be used, or None.

        A family can accept precomputed features or a cache and still differ (extra per-layer features, a
        position scheme the split does not continue): comparing against the plain path catches that at
        start, before it skews verdicts. The plain path itself failing stops the worker.
        """
        # Non-square, so a swapped height and width would show; two prompts, so suffixes differ; the
        # second request starts with a long text before the image, as a compact pack's prompts do.
        image = Image.linear_gradient("L").resize((84, 56)).convert("RGB")
        prompts = ["Is this a probe image?", "Does this picture show text or a sign?"]
        requests = [
            ScoringRequest(image=image, image_key="probe", prompts=prompts),
            ScoringRequest(
                image=image, image_key="probe-with-preamble", prompts=prompts, preamble=_PROBE_RULES
            ),
        ]
        pairs = self._pairs(requests)
        with torch.inference_mode():
            try:
                plain, _ = self._answer_logits_per_pair(pairs, requests, "plain", None)
            except Exception as exc:  # the model cannot score at all: stop the worker at start
                raise ConfigurationError(
                    f"{self._info.model_id!r} failed to score a probe image: {exc!r}"
                ) from exc
            if strategy == "plain":
                return None
            # The probe must not fill the caches.
            cache, self._feature_cache = self._feature_cache, None
            heads, self._heads = self._heads, HeadKV(quiet=True)
            try:
                tried, _ = self._answer_logits_per_pair(pairs, requests, strategy, injection)
            except Exception as exc:  # any failure means: do not use this strategy
                return f"it failed on a probe image: {exc!r}"
            finally:
                self._feature_cache, self._heads = cache, heads
        tolerance = 1e-3 if self._model.dtype == torch.float32 else 1e-1
        difference = (plain - tried).abs().max().item()
        if difference > tolerance:
            return f"it changes the probe's answer logits by {difference:.3g} (> {tolerance})"
        return None
