"""Placeholder inputs: a free name that says it is an input is bound to a stand-in of that kind.

APIBench's example code often leaves the input to the user: `summarizer(article_text)`,
`Image.open(image_path)`, `requests.get(image_url)`, `train_test_split(X, y)`. Such an
answer is right and fails only for want of its input. In hermetic mode, before the
snippet runs, a name is bound when the snippet reads it but never binds it anywhere (no
assignment, import, def, class, argument, loop, with, except or match target), it is not
a builtin, the snippet never calls it, and its words say what it holds:

* `X`, `X_train`, `X_test`, ... : a 5x3 table (a pandas DataFrame with the columns of the
  stand-in CSV when pandas is there, else a numpy array, else lists); `y`, `y_train`,
  ...: 5 binary labels;
* `sr`, `sampling_rate`, `audio_sampling_rate`, ...: 16000;
* a name with `url`/`uri`/`link`: an https URL on example.com whose extension is the kind
  its other words name (`image_url` -> .jpg), which the network stand-ins answer;
* a name with `path`/`file`/`filename`/`fname`: a file made in the work folder, of the kind
  its other words name (image, audio, csv, json, pdf; text otherwise). Model, checkpoint,
  weights, folder, output and save paths are not bound: what they hold is not known;
* `image`/`img`/`photo`/`picture`: a 64x64 RGB PIL image (a stand-in image file's path
  without PIL); `audio`/`speech`/`waveform`/...: one second of a 440 Hz tone at 16 kHz as
  a float32 numpy array (a WAV file's path without numpy);
* `df`/`dataframe`/`table`: the table above;
* `text`/`sentence`/`question`/`context`/`article`/`document`/`query`/`prompt`/`term`/
  `review`/...: an English sentence (a question for `question`/`query`).
Plural names (`image_paths`, `texts`, `sentences`) get a list of two.

Every other free name stays unbound, so a missing import (`torch` without `import torch`),
a helper the snippet never defined (`preprocess_image(...)`, called) or an object it forgot
to make (`feature_extractor`) still fails with NameError. A snippet with `from m import *`
gets no bindings (the star may define any name). Each binding is recorded in STAND_INS as
["name", name, kind]. The static tier is unchanged: pyflakes still reports these names.

Standard library only (PIL, numpy and pandas are used only when the snippet's env has them).
"""

import ast
import builtins
import io
import math
import re

from . import content
from .answers import record_stand_in
from .inputs import stand_in_path

_SAMPLE_RATE_NAMES = {"sr", "fs", "rate"}
_URL_WORDS = {"url", "urls", "uri", "uris", "link", "links", "href"}
_PATH_WORDS = {"path", "paths", "file", "files", "filepath", "filepaths", "filename", "filenames", "fname"}
_UNKNOWN_PATH_WORDS = {"model", "checkpoint", "ckpt", "weights", "dir", "directory", "folder", "output", "out",
                       "save", "cache", "repo", "config"}
_IMAGE_WORDS = {"image", "images", "img", "imgs", "photo", "photos", "picture", "pictures", "pic", "pics"}
_AUDIO_WORDS = {"audio", "audios", "speech", "waveform", "waveforms", "sound", "sounds", "voice", "wav", "recording"}
_TABLE_WORDS = {"df", "dataframe", "table"}
_FILE_KIND_WORDS = (("image", _IMAGE_WORDS), ("audio", _AUDIO_WORDS), ("csv", {"csv", "table", "tabular"}),
                    ("json", {"json"}), ("pdf", {"pdf"}))
_EXT_OF_KIND = {"image": "jpg", "audio": "wav", "csv": "csv", "json": "json", "pdf": "pdf", "text": "txt"}
_QUESTION_WORDS = {"question", "questions", "query", "queries"}
_TEXT_WORDS = _QUESTION_WORDS | {
    "text", "texts", "sentence", "sentences", "context", "contexts", "article", "articles", "document", "documents",
    "doc", "docs", "prompt", "prompts", "term", "terms", "message", "messages", "review", "reviews", "passage",
    "passages", "paragraph", "paragraphs", "summary", "title", "caption", "utterance", "dialogue", "conversation",
    "comment", "comments", "tweet", "tweets", "story", "description", "input", "inputs", "phrase", "phrases",
    "word", "words", "string", "content", "news", "essay", "email", "transcript"}
_SENTENCES = ("The quick brown fox jumps over the lazy dog.", "Hugging Face models read sentences like this one.")
_QUESTIONS = ("What does the fox jump over?", "What do the models read?")
_X_NAME = re.compile(r"^X(_[A-Za-z0-9]+)?$|^x_(train|test|val|valid|eval)$")
_Y_NAME = re.compile(r"^y(_(train|test|val|valid|eval|true))?$")


def words(name):
    """The lower-cased words of a snake_case or camelCase name."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w.lower() for w in re.split(r"[_\d]+", spaced) if w]


def free_names(tree):
    """Names the module reads but never binds in any scope, and never calls; None with a star import."""
    bound, loaded, called = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if alias.name == "*":
                    return None
                bound.add(alias.asname or alias.name.split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bound.add(node.name)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            bound.update(node.names)
        elif type(node).__name__ in ("MatchAs", "MatchStar") and getattr(node, "name", None):
            bound.add(node.name)
        elif type(node).__name__ == "MatchMapping" and getattr(node, "rest", None):
            bound.add(node.rest)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            called.add(node.func.id)
    return sorted(loaded - bound - called - set(dir(builtins)))


def _plural(found):
    return any(w.endswith("s") and w != "news" for w in found)


def _table():
    rows = [[a, float(b), c] for a, b, c, _target in content.ROWS]
    try:
        import pandas

        return pandas.DataFrame(rows, columns=content.COLUMNS)
    except Exception:
        pass
    try:
        import numpy

        return numpy.array(rows, dtype="float32")
    except Exception:
        return rows


def _labels():
    labels = [target for *_features, target in content.ROWS]
    try:
        import numpy

        return numpy.array(labels)
    except Exception:
        return labels


def _path_of(name, kind):
    stem = re.sub(r"[^A-Za-z0-9_]", "_", name)[:60] or "input"
    path = f"{stem}.{_EXT_OF_KIND[kind]}"
    return stand_in_path(path, kind) or path


def _image(name):
    try:
        from PIL import Image

        data, _mime = content.make("image", "png")
        return Image.open(io.BytesIO(data)).convert("RGB")
    except Exception:
        return _path_of(name, "image")


def _audio(name):
    try:
        import numpy

        n = content.SAMPLE_RATE
        return numpy.array([0.25 * math.sin(2 * math.pi * 440 * i / n) for i in range(n)], dtype="float32")
    except Exception:
        return _path_of(name, "audio")


def stand_in_for(name):
    """(value, kind) to bind `name` to, or None to leave it unbound."""
    if _X_NAME.match(name):
        return _table(), "table"
    if _Y_NAME.match(name):
        return _labels(), "labels"
    found = set(words(name))
    if not found:
        return None
    if name.lower() in _SAMPLE_RATE_NAMES or {"sampling", "rate"} <= found or {"sample", "rate"} <= found:
        return content.SAMPLE_RATE, "sampling rate"
    many = _plural(found & (_URL_WORDS | _PATH_WORDS | _IMAGE_WORDS | _AUDIO_WORDS | _TEXT_WORDS))
    kind = next((k for k, ws in _FILE_KIND_WORDS if found & ws), None)
    if found & _URL_WORDS:
        ext = _EXT_OF_KIND.get(kind or "", "html")
        urls = [f"https://example.com/{name}-{i}.{ext}" for i in range(2 if many else 1)]
        return (urls if many else urls[0]), "url"
    if found & _PATH_WORDS:
        if found & _UNKNOWN_PATH_WORDS:
            return None
        kind = kind or "text"
        paths = [_path_of(f"{name}_{i}" if many else name, kind) for i in range(2 if many else 1)]
        return (paths if many else paths[0]), f"{kind} path"
    if found & _IMAGE_WORDS:
        return ([_image(name), _image(name)] if many else _image(name)), "image"
    if found & _AUDIO_WORDS:
        return ([_audio(name), _audio(name)] if many else _audio(name)), "audio"
    if found & _TABLE_WORDS:
        return _table(), "table"
    if found & _TEXT_WORDS:
        pool = _QUESTIONS if found & _QUESTION_WORDS else _SENTENCES
        return (list(pool) if many else pool[0]), "text"
    return None


def bind(tree, namespace):
    """Bind the placeholder inputs of the parsed snippet `tree` in `namespace` (its module globals)."""
    for name in free_names(tree) or ():
        if name in namespace:
            continue
        try:
            found = stand_in_for(name)
        except Exception:  # a broken optional library: the name stays unbound, the snippet's NameError says why
            found = None
        if found is not None:
            namespace[name], kind = found
            record_stand_in("name", name, kind)
