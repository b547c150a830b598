"""Known-bad image matching with PDQ (Meta's perceptual hash; ``pdqhash`` bindings) against a hash list.

The list is a CSV file with the header ``hash,policy,label,source``: a 64-hex-digit PDQ hash, the id of
the policy a match triggers, a label and where the hash came from. It is reloaded when the file
changes; a list that does not parse is refused with the line and the reason, and the list already in
force stays in force (a bad upload must not switch matching off).

A match is the smallest Hamming distance between any of the image's eight dihedral hashes (so mirrored
and rotated copies match) and a listed hash, at most ``max_distance`` bits (ThreatExchange's default,
31 of 256), for an image whose PDQ quality is at least ``min_quality`` (50: flat or tiny images hash
unreliably). PDQ survives resizing and recompression (2-16 bits apart) but not cropping: a 5 % crop
is 86-96 bits away, a miss.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import structlog
from PIL import Image

from moderation_worker.specialists.base import Analysis, Signal, require, rgb

log = structlog.get_logger(__name__)

HASH_MATCH = "hash_match"
_HEADER = ["hash", "policy", "label", "source"]
_POPCOUNT = np.array([bin(n).count("1") for n in range(256)], dtype=np.uint16)


class HashListError(ValueError):
    """The file is not a hash list; the message names the line."""


@dataclass(frozen=True, slots=True)
class HashEntry:
    policy: str
    label: str
    source: str


@dataclass(frozen=True, slots=True)
class HashList:
    """Hashes as packed bits (one row of 32 bytes per entry) and what each entry says."""

    name: str
    version: str  # sha256 of the file's bytes, short: part of every verdict-cache key
    bits: np.ndarray
    entries: tuple[HashEntry, ...]

    @classmethod
    def parse(cls, data: bytes, *, name: str, known_policies: frozenset[str] | None = None) -> HashList:
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise HashListError(f"{name}: not UTF-8 ({exc.reason})") from exc
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if [column.strip().lower() for column in header or []] != _HEADER:
            raise HashListError(f"{name}: line 1: the header must be {','.join(_HEADER)}, got {header}")
        rows, entries = [], []
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) != len(_HEADER):
                raise HashListError(f"{name}: line {line}: {len(row)} columns, expected {len(_HEADER)}")
            digest, policy, label, source = (cell.strip() for cell in row)
            try:
                raw = bytes.fromhex(digest)
            except ValueError:
                raw = b""
            if len(raw) != 32:
                raise HashListError(f"{name}: line {line}: the hash must be 64 hex digits (256 bits)")
            if known_policies is not None and policy not in known_policies:
                raise HashListError(f"{name}: line {line}: no policy {policy!r} in the pack")
            rows.append(np.frombuffer(raw, dtype=np.uint8))
            entries.append(HashEntry(policy, label, source))
        bits = np.stack(rows) if rows else np.zeros((0, 32), dtype=np.uint8)
        return cls(name, hashlib.sha256(data).hexdigest()[:16], bits, tuple(entries))

    def nearest(self, candidates: np.ndarray) -> tuple[int, int] | None:
        """(entry index, distance) of the closest entry to any of the candidate hashes (packed)."""
        if not len(self.entries):
            return None
        distances = _POPCOUNT[np.bitwise_xor(candidates[:, None, :], self.bits[None, :, :])].sum(axis=2)
        candidate, entry = np.unravel_index(int(np.argmin(distances)), distances.shape)
        return int(entry), int(distances[candidate, entry])


class HashListFile:
    """A hash list file, reloaded when its size or modification time changes (checked at most every
    ``check_every_s``). A list that does not parse is logged and refused; the previous one stays."""

    def __init__(
        self, path: Path, *, known_policies: frozenset[str] | None = None, check_every_s: float = 5.0
    ):
        self.path = Path(path)
        self.known_policies = known_policies
        self.check_every_s = check_every_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self.current = self._load()  # at start a bad list is an error: nothing is in force yet

    def _load(self) -> HashList:
        stat = self.path.stat()
        hashes = HashList.parse(
            self.path.read_bytes(), name=self.path.name, known_policies=self.known_policies
        )
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return hashes

    def get(self) -> HashList:
        now = time.monotonic()
        if now - self._checked < self.check_every_s:
            return self.current
        with self._lock:
            self._checked = now
            try:
                stat = os.stat(self.path)
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    previous = self.current
                    self.current = self._load()
                    log.info("hash_list_reloaded", path=self.path.name, version=self.current.version,
                             entries=len(self.current.entries), previous=previous.version)  # fmt: skip
            except (OSError, HashListError) as exc:
                log.error("hash_list_refused", path=self.path.name, error=str(exc),
                          in_force=self.current.version)  # fmt: skip
                self._stamp = None if isinstance(exc, OSError) else self._stamp_of_refused()
        return self.current

    def _stamp_of_refused(self) -> tuple[int, int] | None:
        # Remember the refused file's stamp, so it is not parsed (and logged) again until it changes.
        try:
            stat = os.stat(self.path)
        except OSError:
            return None
        return (stat.st_mtime_ns, stat.st_size)


def pdq_hashes(image: Image.Image) -> tuple[np.ndarray, int]:
    """The eight dihedral PDQ hashes of an image, packed (8 x 32 bytes), and its PDQ quality."""
    require("pdqhash", HASH_MATCH)
    import pdqhash

    pixels = np.ascontiguousarray(np.asarray(rgb(image)))
    hashes, quality = pdqhash.compute_dihedral(pixels)
    packed = np.packbits(np.asarray(hashes, dtype=np.uint8).reshape(len(hashes), 256), axis=1)
    return packed, int(quality[0] if np.ndim(quality) else quality)


def pdq_hex(image: Image.Image) -> str:
    """The image's own PDQ hash (the first dihedral one) as 64 hex digits, for building lists."""
    packed, _ = pdq_hashes(image)
    return packed[0].tobytes().hex()


@dataclass(frozen=True, slots=True)
class Match:
    list: str
    list_version: str
    policy: str
    label: str
    source: str
    distance: int
    quality: int


class HashMatchSpecialist:
    name = HASH_MATCH

    def __init__(self, hash_list: HashListFile, *, max_distance: int = 31, min_quality: int = 50):
        require("pdqhash", self.name)
        self.hash_list = hash_list
        self.max_distance = max_distance
        self.min_quality = min_quality

    @property
    def version(self) -> str:
        # The list in force right now: a reload changes every cache key, so an image that is now
        # known-bad is never served its old verdict.
        return f"pdq-{self.hash_list.get().version}-{self.max_distance}-{self.min_quality}"

    def match(self, image: Image.Image) -> Match | None:
        hashes = self.hash_list.get()
        packed, quality = pdq_hashes(image)
        if quality < self.min_quality:
            return None
        nearest = hashes.nearest(packed)
        if nearest is None or nearest[1] > self.max_distance:
            return None
        entry = hashes.entries[nearest[0]]
        return Match(
            hashes.name, hashes.version, entry.policy, entry.label, entry.source, nearest[1], quality
        )

    def analyse(self, image: Image.Image) -> Analysis:
        started = time.perf_counter()
        found = self.match(image)
        signals = () if found is None else (Signal(HASH_MATCH, 1.0, (f"{found.label} ({found.list})",)),)
        details: dict[str, object] = {}
        if found is not None:
            details["matched"] = {"list": found.list, "label": found.label, "distance": found.distance,
                                  "policy": found.policy, "source": found.source}  # fmt: skip
        return Analysis(self.name, signals, (time.perf_counter() - started) * 1000, details)
