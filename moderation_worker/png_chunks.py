"""PNG metadata chunks, removed from a file whose pixels are fine but whose metadata Pillow refuses.

Pillow refuses a PNG whose text (zTXt, iTXt) or ICC profile (iCCP) decompresses past
``PngImagePlugin.MAX_TEXT_CHUNK``: a guard against decompression bombs in metadata, which must stay
as it is (raising it process-wide would let every image allocate that much). Such a file still has
perfectly good pixels; the image stage decodes it without those chunks instead of calling it corrupt.
None of them changes a pixel as this worker decodes: it does not apply ICC profiles.
"""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METADATA_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt", b"iCCP"})


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_SIGNATURE)


def without_metadata(data: bytes) -> tuple[bytes, list[str]]:
    """The PNG with its text and ICC chunks left out, and the types of the chunks removed.

    Chunks are copied as they are (their CRCs cover only themselves). A structure that does not parse
    is returned unchanged: the decoder then reports it as corrupt, which it is.
    """
    if not is_png(data):
        return data, []
    kept, removed, pos = [PNG_SIGNATURE], [], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from(">I", data, pos)
        end = pos + 12 + length
        if end > len(data):
            return data, []
        kind = data[pos + 4 : pos + 8]
        if kind in METADATA_CHUNKS:
            removed.append(kind.decode("latin-1"))
        else:
            kept.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break
    return b"".join(kept), removed
