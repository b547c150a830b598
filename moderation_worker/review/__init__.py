"""The moderators' review console: flagged verdicts in a queue, claimed and decided by people.

Parts, each a module: ``store`` (the database and its tables), ``ingest`` (verdicts from Kafka into
queue items), ``queue`` (claims, leases, counts), ``decisions`` (uphold, overturn, escalate, skip,
labels, audit, outbox rows in one transaction), ``outbox`` (decisions to Kafka), ``auth`` (users,
sessions, CSRF, login limits), ``labels`` (what the labels say per policy), ``web`` (the pages, thin
handlers over the domain functions), ``service`` (the processes ``moderation-worker review`` runs).
Domain functions take a SQLAlchemy session and know nothing of HTTP.
"""
