"""The synchronous moderation API: ``moderation-worker serve``.

The same pipeline, caches and policy pack as the worker, answering over HTTP: an OpenAI-compatible
``/v1/moderations``, our own ``/v1/moderate`` (the event contract in, the worker's result record out)
and a page to try an image. Modules: ``settings``, ``errors`` (stable codes and HTTP statuses),
``keys`` (API keys and rate limits), ``sources`` (s3://, data: and guarded http(s) images),
``guarded_http`` (the SSRF-safe fetch), ``batcher`` (concurrent requests into one scoring call),
``openai_schema`` (the compatible request and response), ``metrics``, ``app`` (thin handlers) and
``service`` (building and serving it).
"""
