"""Event-driven image content moderation: Kafka in, S3 fetch, vision-language policy scoring, verdicts out."""

__version__ = "0.1.0"
