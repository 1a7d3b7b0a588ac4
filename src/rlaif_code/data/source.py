"""Where the Gorilla files come from: --data DIR > $RLAIF_DATA > a download cache.

The layout under DIR is Gorilla's own split into api/, apibench/, questions/ and
responses/ (the layout of the shared reference copy). Online users get the same
files fetched from Gorilla's public repository into a cache on first use.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from pathlib import Path

from rlaif_code.core.artifacts import InputError

GORILLA_RAW = "https://raw.githubusercontent.com/ShishirPatil/gorilla/main/"

HUBS = ("hf", "tf", "th")
HUB_NAMES = {"hf": "huggingface", "tf": "tensorflowhub", "th": "torchhub"}

# Relative path in our layout -> path in Gorilla's repository.
_REMOTE: dict[str, str] = {
    "api/huggingface_api.jsonl": "data/api/huggingface_api.jsonl",
    "api/tensorflowhub_api.jsonl": "data/api/tensorflowhub_api.jsonl",
    "api/torchhub_api.jsonl": "data/api/torchhub_api.jsonl",
    "apibench/huggingface_train.json": "data/apibench/huggingface_train.json",
    "apibench/huggingface_eval.json": "data/apibench/huggingface_eval.json",
    "apibench/tensorflow_train.json": "data/apibench/tensorflow_train.json",
    "apibench/tensorflow_eval.json": "data/apibench/tensorflow_eval.json",
    "apibench/torchhub_train.json": "data/apibench/torchhub_train.json",
    "apibench/torchhub_eval.json": "data/apibench/torchhub_eval.json",
}
for _kind in ("0_shot", "bm25", "oracle"):
    _REMOTE[f"questions/questions_huggingface_{_kind}.jsonl"] = (
        f"eval/eval-data/questions/huggingface/questions_huggingface_{_kind}.jsonl")
for _kind in ("FT_0_shot", "FT_oracle", "RT_bm25"):
    _REMOTE[f"responses/response_huggingface_Gorilla_{_kind}.jsonl"] = (
        f"eval/eval-data/responses/huggingface/response_huggingface_Gorilla_{_kind}.jsonl")
for _kind in ("FT_0_shot", "FT_oracle"):
    _REMOTE[f"responses/response_torchhub_Gorilla_{_kind}.jsonl"] = (
        f"eval/eval-data/responses/torchhub/response_torchhub_Gorilla_{_kind}.jsonl")


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlaif-code" / "gorilla"


class DataSource:
    """Resolves relative Gorilla file paths to local files, downloading only into the cache."""

    def __init__(self, root: Path, *, downloads: bool) -> None:
        self.root = root
        self.downloads = downloads

    @classmethod
    def resolve(cls, data: str | Path | None = None) -> "DataSource":
        if data:
            root = Path(data)
            if not root.is_dir():
                raise InputError(f"data directory not found: {root} (given with --data); it must hold "
                                 "Gorilla's api/, apibench/, questions/, responses/ folders")
            return cls(root, downloads=False)
        env = os.environ.get("RLAIF_DATA")
        if env:
            root = Path(env)
            if not root.is_dir():
                raise InputError(f"data directory not found: {root} (from $RLAIF_DATA)")
            return cls(root, downloads=False)
        return cls(default_cache_dir(), downloads=True)

    def has(self, relpath: str) -> bool:
        return (self.root / relpath).is_file()

    def path(self, relpath: str) -> Path:
        local = self.root / relpath
        if local.is_file():
            return local
        remote = _REMOTE.get(relpath)
        if not self.downloads:
            hint = f"; it is published at {GORILLA_RAW}{remote}" if remote else ""
            raise InputError(f"missing data file {local}{hint} (or unset --data/$RLAIF_DATA to download "
                             "Gorilla's files into the cache)")
        if remote is None:
            raise InputError(f"missing data file {local} and no public source is known for '{relpath}'")
        # RLAIF_DATA_URL points at a mirror with the same layout as Gorilla's repository.
        base = os.environ.get("RLAIF_DATA_URL", GORILLA_RAW).rstrip("/") + "/"
        self._download(base + remote, local)
        return local

    @staticmethod
    def _download(url: str, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_suffix(dest.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as handle:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
        except (urllib.error.URLError, OSError) as err:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot download {url} into {dest}: {err}. Offline? Point --data or "
                             "$RLAIF_DATA at a copy of Gorilla's data (api/, apibench/, questions/, "
                             "responses/)") from err
        os.replace(tmp, dest)
