"""Video files as containers, before any decoding: which file names are videos, and what is wrong with a file
from its size and a few header bytes (cheap enough for every DAG build; :func:`emofusion.corpus.probe_video`
decodes)."""

from __future__ import annotations

from pathlib import Path

# The video files a corpus folder or predict.videos lists, by suffix (any case): the containers sniff_video knows
# (.m4v is an MP4).
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v")

# Leading bytes of the containers VIDEO_SUFFIXES name: ISO BMFF (mp4/mov) boxes at offset 4, Matroska/WebM's
# EBML id, AVI's RIFF header. A file without any of them cannot be a video of the corpus.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


_EBML = b"\x1a\x45\xdf\xa3"
_SEGMENT = b"\x18\x53\x80\x67"


def sniff_video(path: str | Path) -> str | None:
    """What is wrong with a video file from its size and a few header bytes alone (cheap enough for every DAG
    build), or None when it looks like a whole video container. Decoding may still fail later
    (:func:`emofusion.corpus.probe_video`)."""
    return not_a_container(Path(path)) or cut_short(Path(path))


def not_a_container(path: Path) -> str | None:
    """What makes ``path`` no video container at all (missing, empty, no known header), or None."""
    if not path.is_file():
        return "the file does not exist"
    if path.stat().st_size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as f:
        head = f.read(12)
    if head[4:8] in _ISO_BOXES or head[:4] == _EBML or (head[:4], head[8:12]) == (b"RIFF", b"AVI "):
        return None
    return "not a video container (no MP4/MOV, Matroska/WebM or AVI header)"


def cut_short(path: Path) -> str | None:
    """A container whose own size fields run past the end of the file (a copy that stopped early), said in bytes:
    an MP4/MOV top-level box, the Matroska segment, the AVI RIFF chunk. None when the sizes fit or are not
    written (a streamed file), so only a certain cut is named here; the frame count check is the manifest's."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if head[4:8] in _ISO_BOXES:
            pos = 0
            while pos + 8 <= size:
                f.seek(pos)
                box = f.read(16)
                length, kind = int.from_bytes(box[:4], "big"), box[4:8].decode("latin-1")
                if length == 1 and len(box) == 16:
                    length = int.from_bytes(box[8:16], "big")  # a 64-bit size follows the type
                if length < 8:
                    return None  # 0: runs to the end of the file; smaller: not a layout to judge here
                if pos + length > size:
                    return f"cut short: its '{kind}' box runs to byte {pos + length} but the file ends at byte {size}"
                pos += length
        elif head[:4] == _EBML:
            f.seek(4)
            header = _vint(f)  # the EBML header's size, then the Segment element after it
            if header is None:
                return None
            f.seek(4 + header[1] + header[0])
            if f.read(4) != _SEGMENT:
                return None
            segment = _vint(f)
            if segment is None or segment[2]:
                return None  # size not written (a live or piped recording): nothing to compare
            end = f.tell() + segment[0]
            if end > size:
                return f"cut short: its Matroska segment runs to byte {end} but the file ends at byte {size}"
        elif head[:4] == b"RIFF":
            end = 8 + int.from_bytes(head[4:8], "little")
            if end > size:
                return f"cut short: its RIFF chunk runs to byte {end} but the file ends at byte {size}"
    return None


def _vint(f) -> tuple[int, int, bool] | None:
    """An EBML variable-length size at the file's position: (value, bytes it took, all value bits set = unknown)."""
    first = f.read(1)
    if not first or first[0] == 0:
        return None
    n = 8 - first[0].bit_length() + 1  # the leading zeros say how many bytes follow
    rest = f.read(n - 1)
    if len(rest) != n - 1:
        return None
    value = first[0] & (0xFF >> n)
    for b in rest:
        value = (value << 8) | b
    return value, n, value == (1 << (7 * n)) - 1
