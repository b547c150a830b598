"""The container images' HEALTHCHECK: ``python -m moderation_worker.probe``.

One image runs ``run`` (health on MODERATION_HEALTH_PORT), ``serve`` (the API's own /livez on
MODERATION_API_PORT) or ``review`` (the console's on MODERATION_REVIEW_PORT), so one fixed URL cannot
probe them all. The probe reads the container's command line (PID 1: tini, then ``moderation-worker
<command>``) and asks ``/livez`` on that command's port. A command without an HTTP server (``review
ingest``, one-off commands) has nothing to ask: the probe passes while the process runs.

Standard library only, and nothing of the package is imported: it runs every 30 s beside the worker.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

# command -> (the flag and the variable naming its port, that setting's default); a flag on the command
# line wins over the variable, as in the commands themselves. Tests hold these to the settings.
PORTS = {
    "run": ("--health-port", "MODERATION_HEALTH_PORT", 8080),
    "serve": ("--api-port", "MODERATION_API_PORT", 8000),
    "review": ("--review-port", "MODERATION_REVIEW_PORT", 8090),
}
# `review` alone and `review web` serve the console; its other parts and commands serve no HTTP.
_REVIEW_WITHOUT_SERVER = {"ingest", "migrate", "users", "export-labels", "export-audit"}


def arguments_of(argv: list[str]) -> list[str]:
    """What follows ``moderation-worker`` on a command line (``[]`` if it is not there)."""
    for index, word in enumerate(argv):
        if os.path.basename(word) == "moderation-worker" or word == "moderation_worker":
            return argv[index + 1 :]
    return []


def url_for(arguments: list[str], env: dict[str, str]) -> str | None:
    """The /livez URL to ask, or None when the command serves no HTTP."""
    words = [word for word in arguments if word and not word.startswith("-")] or ["run"]
    if words[0] not in PORTS or (words[0] == "review" and _REVIEW_WITHOUT_SERVER & set(words[1:])):
        return None
    flag, variable, default = PORTS[words[0]]
    port = env.get(variable, str(default))
    for index, word in enumerate(arguments):
        if word == flag and index + 1 < len(arguments):
            port = arguments[index + 1]
        elif word.startswith(flag + "="):
            port = word.split("=", 1)[1]
    if port.lower() in ("", "none", "null"):
        return None  # the health server is switched off: nothing to ask
    return f"http://127.0.0.1:{port}/livez"


def main(cmdline: Path = Path("/proc/1/cmdline")) -> int:
    try:
        argv = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        argv = []
    url = url_for(arguments_of(argv), dict(os.environ))
    if url is None:
        return 0
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through a proxy
    try:
        with opener.open(url, timeout=4) as response:
            return 0 if response.status == 200 else 1
    except OSError as exc:
        print(f"{url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
