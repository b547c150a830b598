"""Constants and errors shared by the local services."""

from __future__ import annotations

from moderation_worker.errors import ModerationError

LOOPBACK = "127.0.0.1"
_MAX_PORT = 65535
_PORT_ATTEMPTS = 4  # starts tried on fresh ports when another process takes ours in between
_POLL_S = 0.05
_OUTPUT_TAIL_CHARS = 4000
# What each binary prints when a port it wanted is taken. tansu does not exit (a worker thread panics);
# weed mini silently moves to another port. Either way the start is retried on fresh ports.
_PORT_CONFLICT_MARKERS = ("address already in use", "address in use", "is not available, finding alternative")
# weed's gRPC ports sit at a fixed offset from the HTTP ones.
_WEED_GRPC_OFFSET = 10000
_WEED_PORT_OFFSETS = tuple(range(5)) + tuple(_WEED_GRPC_OFFSET + i for i in range(5))
# SeaweedFS hard-codes its local sockets under /tmp and leaves some behind; removed after the process ends.
_WEED_SOCKET_GLOB = "seaweedfs-*-{port}.sock"
_PR_SET_PDEATHSIG = 1


class LocalStackError(ModerationError):
    """A local service did not come up (or went away); the message carries its recent output."""


class _PortConflict(LocalStackError):
    """Another process holds one of the ports we picked; the start is retried on fresh ports."""
