"""Small, valid, deterministic stand-in contents: what a missing input file or a fetched URL holds.

* `kind_of_name(name)`: the kind of content a file name or URL asks for ("image", "audio",
  "text", "csv", "json", ...), by its extension, else by words in it ("photo", "speech");
* `make(kind, ext)`: (bytes, MIME type) of that kind, encoded as `ext` where that matters:
  a 64x64 RGB gradient (PNG/JPEG/... through PIL when the exec env has it, else a PNG
  written here), one second of a 440 Hz tone, 16 kHz mono 16-bit WAV (FLAC/OGG through
  soundfile when present), a few lines of English text, a 5-row CSV whose columns are
  `feature_0..feature_2, target`, a JSON object shaped like an AutoTrain tabular config
  (`features`, `target`) with a `text` field, a float32 .npy vector of 512 zeros, a
  one-page PDF, an HTML page.

Standard library only (PIL and soundfile are used only when the snippet's env has them):
this runs inside the sandboxed interpreter.
"""

import io
import json
import math
import struct
import wave
import zlib

IMAGE_EXTS = {"jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm", "jfif", "ico"}
AUDIO_EXTS = {"wav", "flac", "mp3", "ogg", "oga", "opus", "m4a", "aac", "wma", "aiff", "aif", "au", "webm"}
TEXT_EXTS = {"txt", "md", "rst", "log", "text", "srt", "vtt", "py", "rttm", "lst", "tok"}
MODEL_EXTS = {"joblib", "pkl", "pickle", "pt", "pth", "bin", "ckpt", "h5", "hdf5", "keras", "onnx", "sav",
              "safetensors", "model", "pb", "tflite", "zip"}
OTHER_KINDS = {"csv": "csv", "tsv": "tsv", "json": "json", "jsonl": "jsonl", "ndjson": "jsonl", "yaml": "yaml",
               "yml": "yaml", "npy": "npy", "pdf": "pdf", "html": "html", "htm": "html", "xml": "xml"}

_WORDS = (("image", ("image", "img", "photo", "picture", "pic", "png", "jpg", "jpeg", "frame", "scan")),
          ("audio", ("audio", "sound", "speech", "voice", "wav", "mp3", "flac", "music", "song")))

WIDTH = HEIGHT = 64
SAMPLE_RATE = 16000

_CACHE = {}


def extension(name):
    """The lower-cased extension of a path or URL (no query, fragment or dot), or ''."""
    name = name.split("?", 1)[0].split("#", 1)[0].rstrip("/")
    base = name.rsplit("/", 1)[-1]
    return base.rsplit(".", 1)[1].lower() if "." in base else ""


def kind_of_extension(ext):
    if ext in IMAGE_EXTS:
        return "image"
    if ext in AUDIO_EXTS:
        return "audio"
    if ext in TEXT_EXTS:
        return "text"
    if ext in MODEL_EXTS:
        return "model"
    return OTHER_KINDS.get(ext)


def kind_of_name(name, default=None):
    """What `name` (a path or URL) holds, by its extension, else by the words in it."""
    kind = kind_of_extension(extension(name))
    if kind is not None:
        return kind
    lowered = name.lower()
    for found, words in _WORDS:
        if any(word in lowered for word in words):
            return found
    return default


# -- images -----------------------------------------------------------------

def _pixels():
    rows = []
    for y in range(HEIGHT):
        row = bytearray()
        for x in range(WIDTH):
            row += bytes((x * 4 % 256, y * 4 % 256, (x + y) * 2 % 256))
        rows.append(bytes(row))
    return rows


def _png(rows):
    raw = b"".join(b"\x00" + row for row in rows)

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", WIDTH, HEIGHT, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


_PIL_FORMATS = {"jpg": "JPEG", "jpeg": "JPEG", "jfif": "JPEG", "bmp": "BMP", "gif": "GIF", "tif": "TIFF",
                "tiff": "TIFF", "webp": "WEBP", "ppm": "PPM", "pgm": "PPM", "ico": "ICO"}
_MIME = {"JPEG": "image/jpeg", "BMP": "image/bmp", "GIF": "image/gif", "TIFF": "image/tiff", "WEBP": "image/webp",
         "PPM": "image/x-portable-pixmap", "ICO": "image/x-icon"}


def _image(ext):
    rows = _pixels()
    fmt = _PIL_FORMATS.get(ext)
    if fmt is not None:
        try:
            from PIL import Image

            buffer = io.BytesIO()
            Image.frombytes("RGB", (WIDTH, HEIGHT), b"".join(rows)).save(buffer, format=fmt)
            return buffer.getvalue(), _MIME[fmt]
        except Exception:  # no PIL, or no encoder for the format: a PNG opens anywhere
            pass
    return _png(rows), "image/png"


# -- audio ------------------------------------------------------------------

def _tone():
    return [int(8000 * math.sin(2 * math.pi * 440 * i / SAMPLE_RATE)) for i in range(SAMPLE_RATE)]


def _wav():
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(struct.pack(f"<{SAMPLE_RATE}h", *_tone()))
    return buffer.getvalue()


_SF_FORMATS = {"flac": ("FLAC", "audio/flac"), "ogg": ("OGG", "audio/ogg"), "oga": ("OGG", "audio/ogg")}


def _audio(ext):
    if ext in _SF_FORMATS:
        fmt, mime = _SF_FORMATS[ext]
        try:
            import numpy
            import soundfile

            buffer = io.BytesIO()
            soundfile.write(buffer, numpy.array(_tone(), dtype="int16"), SAMPLE_RATE, format=fmt)
            return buffer.getvalue(), mime
        except Exception:
            pass
    # WAV otherwise: libsndfile, audioread and ffmpeg read it whatever the file is called.
    return _wav(), "audio/wav"


# -- text and tables ----------------------------------------------------------

TEXT = ("The quick brown fox jumps over the lazy dog.\n"
        "This is a stand-in text file made by the sandbox: the real file was not there.\n"
        "Hugging Face models read sentences like this one.\n")
COLUMNS = ["feature_0", "feature_1", "feature_2"]
# The stand-in table's rows: the three feature values and the binary target (CSV files and placeholders.py)
ROWS = [(0.5 * i, i * 3, 1.0 - 0.1 * i, i % 2) for i in range(5)]


def _table(sep):
    lines = [sep.join(COLUMNS + ["target"])]
    for a, b, c, target in ROWS:
        lines.append(sep.join([f"{a:.1f}", str(b), f"{c:.1f}", str(target)]))
    return ("\n".join(lines) + "\n").encode()


def _json_object():
    return {"features": list(COLUMNS), "target": "target", "text": TEXT.splitlines()[0]}


def _npy():
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (512,), }"
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1") + b"\x00" * 2048


def _pdf():
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>"]
    out, offsets = bytearray(b"%PDF-1.4\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


HTML = ("<!DOCTYPE html>\n<html><head><title>Stand-in page</title></head><body>\n"
        "<h1>Stand-in page</h1>\n<p>" + TEXT.replace("\n", " ").strip() + "</p>\n</body></html>\n")


def make(kind, ext=""):
    """(bytes, MIME type) of a stand-in of `kind`, encoded as `ext` says where that matters."""
    key = (kind, ext)
    if key not in _CACHE:
        _CACHE[key] = _make(kind, ext)
    return _CACHE[key]


def _make(kind, ext):
    if kind == "image":
        return _image(ext)
    if kind == "audio":
        return _audio(ext)
    if kind == "csv":
        return _table(","), "text/csv"
    if kind == "tsv":
        return _table("\t"), "text/tab-separated-values"
    if kind == "json":
        return json.dumps(_json_object(), indent=1).encode(), "application/json"
    if kind == "jsonl":
        row = _json_object()
        return "".join(json.dumps({**row, "id": i}) + "\n" for i in range(3)).encode(), "application/jsonl"
    if kind == "yaml":
        return ("features:\n" + "".join(f"- {c}\n" for c in COLUMNS) + "target: target\n").encode(), "application/yaml"
    if kind == "npy":
        return _npy(), "application/octet-stream"
    if kind == "pdf":
        return _pdf(), "application/pdf"
    if kind == "xml":
        return b'<?xml version="1.0"?>\n<document><text>' + TEXT.splitlines()[0].encode() + b"</text></document>\n", \
            "application/xml"
    if kind == "model":
        return b"", "application/octet-stream"  # loaders of model files answer a stand-in model
    if kind == "html":
        return HTML.encode(), "text/html; charset=utf-8"
    return TEXT.encode(), "text/plain; charset=utf-8"


def served():
    """Every stand-in body made so far in this run (to tell a stand-in handed to the wrong reader)."""
    return {data for data, _mime in _CACHE.values() if data}


def sniff(data):
    """The kind of `data`, from its first bytes: 'image', 'audio' or None."""
    head = bytes(data[:16])
    if head.startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")) or \
            (head.startswith(b"RIFF") and head[8:12] == b"WEBP"):
        return "image"
    if (head.startswith(b"RIFF") and head[8:12] == b"WAVE") or head.startswith((b"fLaC", b"OggS", b"ID3")):
        return "audio"
    return None


__all__ = ["make", "kind_of_name", "kind_of_extension", "extension", "served", "sniff"]
