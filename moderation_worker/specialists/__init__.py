"""Real models beside the VLM: OCR with personal-data rules, a nudity classifier, known-bad hash matching.

Each specialist is one module behind the small interface of :mod:`.base`; all are optional (the
``specialists`` extra) and are imported only when used, so the worker runs without them.
"""
