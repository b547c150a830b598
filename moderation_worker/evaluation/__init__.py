"""``moderation-worker eval``: how good verdicts are, measured on labelled images through the real
pipeline, per policy and per source (the VLM, each specialist, the combined confidence)."""
