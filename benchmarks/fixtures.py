"""What several sections share: the run's options, the CPU benchmark model, policy packs, the local stack."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks import photos
from benchmarks.report import REPO
from benchmarks.timing import progress
from moderation_worker.policies import PolicyPack, load_policy_pack

if TYPE_CHECKING:
    # Imported where used: section 5 must run where only the model's dependencies are installed (a GPU
    # machine without the Kafka and S3 clients).
    from moderation_worker.localstack import LocalStack
    from moderation_worker.model.hf import HFScorer

DEFAULT_PACK = REPO / "policies" / "default.yaml"
EXTRA_POLICIES = Path(__file__).resolve().parent / "policies16.yaml"


@dataclass(frozen=True)
class ModelShape:
    """A tiny random GLM-4.6V-style model (moderation_worker.model.tiny) and the photo size it is fed."""

    hidden_size: int
    num_layers: int
    image_px: int  # square photos of this edge; also the model's pixel budget (image_px ** 2)
    glm_proportions: bool = False  # heads, KV heads and MLP in GLM-4.6V-Flash's proportions

    @property
    def name(self) -> str:
        kind = "glm-layer" if self.glm_proportions else "tiny-glm4v"
        return f"{kind}-h{self.hidden_size}-l{self.num_layers}-{self.image_px}px"

    def describe(self) -> dict[str, int | str | bool]:
        return {
            "name": self.name,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "glm_proportions": self.glm_proportions,
            "max_image_pixels": self.image_px**2,
            "photo_px": self.image_px,
        }


# The CPU benchmark model of the issue, and the tiny shape --quick uses instead.
BENCH_SHAPE = ModelShape(hidden_size=256, num_layers=4, image_px=448)
QUICK_SHAPE = ModelShape(hidden_size=64, num_layers=2, image_px=112)
# One text layer at half GLM-4.6V-Flash's width, in its proportions (heads of 128, 2 KV heads, MLP 3.34x):
# per layer, what a token costs against what attending to a cached token costs is then the real model's
# (the benchmark model's MLP of 2x and width of 256 make attention, and so long cached prompts, dear).
GLM_LAYER_SHAPE = ModelShape(hidden_size=2048, num_layers=1, image_px=448, glm_proportions=True)
QUICK_GLM_LAYER_SHAPE = ModelShape(hidden_size=256, num_layers=1, image_px=112, glm_proportions=True)


@dataclass
class Context:
    """The run's options and the resources sections share; ``close()`` stops whatever was started."""

    cache_dir: Path
    repeats: int
    warmup: int
    quick: bool
    gpu_section_on_cpu: bool = False
    _stack: LocalStack | None = field(default=None, repr=False)
    _bucket: str | None = field(default=None, repr=False)
    _uploaded: dict[tuple[int, tuple[int, int]], list[str]] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> ModelShape:
        return QUICK_SHAPE if self.quick else BENCH_SHAPE

    @property
    def glm_layer_shape(self) -> ModelShape:
        return QUICK_GLM_LAYER_SHAPE if self.quick else GLM_LAYER_SHAPE

    def model_dir(self, shape: ModelShape | None = None) -> Path:
        """The CPU benchmark model (or ``shape``), built once into the cache dir (seconds the first time)."""
        from moderation_worker.model.tiny import build_tiny_glm4v

        shape = shape or self.shape
        started = time.perf_counter()
        path = build_tiny_glm4v(
            self.cache_dir / shape.name,
            hidden_size=shape.hidden_size,
            num_layers=shape.num_layers,
            max_image_pixels=shape.image_px**2,
            glm_proportions=shape.glm_proportions,
        )
        elapsed = time.perf_counter() - started
        if elapsed > 1:
            progress(f"built {shape.name} in {elapsed:.1f} s")
        return path

    # --- the local stack (sections 3 and 4) --------------------------------------------------------

    def stack(self) -> LocalStack:
        """tansu and SeaweedFS on 127.0.0.1, started on first use and stopped by ``close()``."""
        if self._stack is None:
            from moderation_worker.localstack import LocalStack, create_bucket

            progress("starting the local stack (tansu, SeaweedFS)")
            stack = LocalStack()
            self._stack = stack  # set before start(): close() must stop a half-started stack too
            stack.start()
            self._bucket = "bench-photos"
            client = stack.s3_endpoint.client()
            create_bucket(client, self._bucket)
            client.close()
        return self._stack

    def uploaded_photos(self, count: int, size: tuple[int, int]) -> tuple[str, list[str]]:
        """(bucket, keys) of ``count`` distinct JPEGs of ``size`` in the stack's S3, uploaded once."""
        stack = self.stack()
        assert self._bucket is not None
        wanted = (count, size)
        if wanted not in self._uploaded:
            files = photos.jpeg_files(self.cache_dir / "photos", count, size)
            client = stack.s3_endpoint.client()
            keys = []
            for path in files:
                key = f"uploads/{size[0]}x{size[1]}/{path.name}"
                client.put_object(Bucket=self._bucket, Key=key, Body=path.read_bytes())
                keys.append(key)
            client.close()
            total = sum(path.stat().st_size for path in files)
            progress(f"uploaded {count} JPEGs of {size[0]}x{size[1]} ({total / count / 1024:.0f} KiB each)")
            self._uploaded[wanted] = keys
        return self._bucket, self._uploaded[wanted]

    def close(self) -> None:
        if self._stack is not None:
            progress("stopping the local stack")
            self._stack.close()
            self._stack = None


# --- scorers -----------------------------------------------------------------------------------------


def scorer_options() -> dict[str, int]:
    """The worker's default bounds on a pass (rows, tokens), as ``load_scorer`` applies them."""
    from moderation_worker.config import Settings

    fields = Settings.model_fields
    return {
        "max_pairs_per_pass": fields["score_batch_pairs"].default,
        "token_budget": fields["score_token_budget"].default,
    }


def load_scorer(
    model_dir: Path, *, strategy: str = "auto", feature_cache=None, suffix_layout: str = "auto"
) -> HFScorer:
    """The CPU benchmark model through the production loader, bounded like the worker's by default."""
    from moderation_worker.model.hf import HFScorer

    return HFScorer.from_pretrained(
        str(model_dir),
        device="cpu",
        local_files_only=True,
        strategy=strategy,
        suffix_layout=suffix_layout,
        feature_cache=feature_cache,
        **scorer_options(),
    )


# --- policy packs ------------------------------------------------------------------------------------


def default_pack() -> PolicyPack:
    return load_policy_pack(DEFAULT_PACK)


def pack16() -> PolicyPack:
    """The default pack's ten policies followed by the six of benchmarks/policies16.yaml."""
    base = default_pack()
    extra = load_policy_pack(EXTRA_POLICIES)
    document = base.model_dump(mode="json")
    document["name"] = f"{base.name}+benchmark-extras"
    document["policies"] += [policy.model_dump(mode="json") for policy in extra.policies]
    return PolicyPack.model_validate(document)  # validated again: ids stay unique


def in_layout(pack: PolicyPack, layout: str) -> PolicyPack:
    """The same pack with its prompts laid out ``full`` or ``compact``."""
    return pack.model_copy(update={"prompt_layout": layout})
