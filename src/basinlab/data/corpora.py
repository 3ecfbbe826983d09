"""Raw text corpora: lists of sentences that ``basinlab.data.sequences`` cuts into sequences (SPEC 1).

Sources (``DataConfig.source``):

- ``brown``: the Brown corpus embedded as package data (``data/brown/sentences.txt.gz``, 57,340 sentences,
  built by ``scripts/build_brown.py``; no npm at run time).
- ``text``: a UTF-8 file, one sentence per line; blank lines skipped.
- ``datasets``: any local file or directory the HF ``datasets`` library reads (``.txt``, ``.csv``, ``.tsv``,
  ``.json``, ``.jsonl``, ``.parquet``, ``.arrow``, a directory of such files, or a dataset saved with
  ``save_to_disk``); the text is in column ``DataConfig.text_field`` (``text`` for ``.txt`` files). ``datasets``
  is imported lazily: it is an optional dependency that GPU machines may lack.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import os
from importlib import resources
from pathlib import Path

from basinlab.config import DATA_SOURCES, DataConfig
from basinlab.errors import BasinlabError

BROWN_RESOURCE = "brown/sentences.txt.gz"
SOURCES = DATA_SOURCES

# File suffix -> `datasets` packaged builder (and extra keyword arguments).
_BUILDERS: dict[str, tuple[str, dict[str, str]]] = {
    ".txt": ("text", {}),
    ".text": ("text", {}),
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
    ".arrow": ("arrow", {}),
}


def cache_root(cfg: DataConfig) -> Path:
    """basinlab's cache directory: ``cfg.cache_dir``, else :func:`default_cache_root`."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_cache_root()


def default_cache_root() -> Path:
    """``$BASINLAB_CACHE``, else ``$XDG_CACHE_HOME/basinlab``, else ``~/.cache/basinlab``."""
    if os.environ.get("BASINLAB_CACHE"):
        return Path(os.environ["BASINLAB_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "basinlab"


def brown_bytes() -> bytes:
    """The embedded gzip file of Brown sentences, as bytes."""
    try:
        return resources.files("basinlab.data").joinpath(BROWN_RESOURCE).read_bytes()
    except FileNotFoundError as exc:
        raise BasinlabError(
            "the embedded Brown corpus (basinlab/data/brown/sentences.txt.gz) is missing; reinstall basinlab "
            "or run scripts/build_brown.py"
        ) from exc


@functools.lru_cache(maxsize=1)
def _brown_sentences() -> tuple[str, ...]:
    text = gzip.decompress(brown_bytes()).decode("utf-8")
    return tuple(line for line in text.splitlines() if line.strip())


def source_identity(cfg: DataConfig) -> dict[str, object]:
    """What identifies the raw corpus, for cache keys: a content hash for Brown, path + size + mtime for files."""
    if cfg.source == "brown":
        return {"source": "brown", "sha256": hashlib.sha256(brown_bytes()).hexdigest()}
    if cfg.source in ("text", "datasets"):
        path = _require_path(cfg)
        return {"source": cfg.source, "path": str(path.resolve()), "stat": file_stamp(path),
                "text_field": cfg.text_field if cfg.source == "datasets" else None}
    if cfg.source == "markov":
        return {"source": "markov"}
    raise BasinlabError(f"unknown data.source {cfg.source!r}; choose one of {', '.join(SOURCES)}")


def data_fingerprint(cfg: DataConfig) -> str | None:
    """sha256 of the raw corpus a run is trained on: the data file (every file, for a directory), or the embedded
    Brown corpus; ``None`` for Markov data (its source is saved with the checkpoint)."""
    if cfg.source == "brown":
        return hashlib.sha256(brown_bytes()).hexdigest()
    if cfg.source not in ("text", "datasets"):
        return None
    path = _require_path(cfg)
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else "").encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def file_stamp(path: Path) -> list[object]:
    """Size and mtime of a file, or of every file under a directory (sorted), to detect changed inputs."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return [[str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns] for p in files]
    st = path.stat()
    return [st.st_size, st.st_mtime_ns]


def _require_path(cfg: DataConfig) -> Path:
    if not cfg.path:
        raise BasinlabError(f"data.source={cfg.source} needs data.path (a file or directory)")
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise BasinlabError(f"data.path {cfg.path} does not exist")
    return path


def load_sentences(cfg: DataConfig) -> list[str]:
    """The sentences of ``cfg.source`` in their stored order, stripped, blank ones dropped (SPEC 1).

    Raises ``BasinlabError`` for an unknown source, a missing file, a missing column or an empty corpus.
    """
    if cfg.source == "brown":
        sentences = list(_brown_sentences())
    elif cfg.source == "text":
        sentences = _load_text(_require_path(cfg))
    elif cfg.source == "datasets":
        sentences = _load_datasets(_require_path(cfg), cfg.text_field, cache_root(cfg) / "hf_datasets")
    elif cfg.source == "markov":
        raise BasinlabError("data.source=markov has no sentences; build it with basinlab.data.build_dataset")
    else:
        raise BasinlabError(f"unknown data.source {cfg.source!r}; choose one of {', '.join(SOURCES)}")
    if not sentences:
        raise BasinlabError(f"data source {cfg.source} ({cfg.path or 'embedded'}) holds no non-blank sentences")
    return sentences


def _load_text(path: Path) -> list[str]:
    if path.is_dir():
        raise BasinlabError(f"data.path {path} is a directory; data.source=text needs a file, one sentence a line")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BasinlabError(f"data.path {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    return [s for s in (line.strip() for line in text.splitlines()) if s]


def _load_datasets(path: Path, text_field: str, hf_cache: Path) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise BasinlabError(
            "data.source=datasets needs the `datasets` package: pip install 'basinlab[datasets]'"
        ) from exc

    field = text_field
    try:
        if path.is_dir() and ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            ds = datasets.load_from_disk(str(path))
        elif path.is_dir():
            ds = datasets.load_dataset(str(path), cache_dir=str(hf_cache))
        else:
            suffix = path.suffix.lower()
            if suffix not in _BUILDERS:
                raise BasinlabError(
                    f"data.path {path}: unknown file type {suffix or '(none)'}; use one of {', '.join(_BUILDERS)}"
                )
            builder, kwargs = _BUILDERS[suffix]
            if builder == "text":
                field = "text"
            ds = datasets.load_dataset(builder, data_files=str(path), cache_dir=str(hf_cache), **kwargs)
    except BasinlabError:
        raise
    except Exception as exc:  # datasets raises many types; the user needs one line
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BasinlabError(f"`datasets` could not read data.path {path}: {msg}") from exc

    if isinstance(ds, datasets.DatasetDict):
        # Use the train split where there is one (basinlab cuts its own test set), else all splits in name order.
        splits = [ds["train"]] if "train" in ds else [ds[k] for k in sorted(ds)]
    else:
        splits = [ds]
    sentences: list[str] = []
    for split in splits:
        if field not in split.column_names:
            raise BasinlabError(
                f"data.path {path} has no column {field!r} (columns: {', '.join(split.column_names)}); "
                "set data.text_field"
            )
        for value in split[field]:
            if isinstance(value, str) and value.strip():
                sentences.append(value.strip())
    return sentences
