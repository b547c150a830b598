"""Configure structlog once, in the entry point: JSON lines for machines, or a console renderer."""

from __future__ import annotations

import logging
import os
import sys

import structlog


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at write time: test runners and daemonisers swap it after start-up."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    # Progress bars from the Hugging Face libraries would break the one-JSON-object-per-line log.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStderr()),
        # Not cached: tools and tests that reconfigure structlog (capture_logs) must reach every logger.
        cache_logger_on_first_use=False,
    )
    # Libraries log through the standard library: keep their noise at WARNING and on stderr.
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("botocore", "urllib3", "transformers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kafka-python logs its own retries and shutdown races at ERROR ("Metadata refresh: failed
    # Cancelled" on every close); the failures that matter reach the worker as exceptions and are
    # logged there with context.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
