"""Corpora: the embedded default (Python standard-library sources), text files or folders, Parquet files with
a text column (streamed), and pre-tokenized `.bin` files. Tokenized corpora are cached by fingerprint."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import sysconfig
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robustprec.data.tokenizer import Tokenizer
from robustprec.errors import DataError

_SKIP_DIRS = {
    "test",
    "tests",
    "idlelib",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
    "ensurepip",
}
_ENCODE_CHUNK = 1 << 20


@dataclass(frozen=True)
class Corpus:
    """A tokenized corpus: a flat token array (often a read-only memmap) and where it came from."""

    tokens: np.ndarray
    source: str
    fingerprint: str
    tokenizer: str

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def default_cache_dir() -> Path:
    return Path(os.environ.get("ROBUSTPREC_CACHE", Path.home() / ".cache" / "robustprec"))


# ---------------------------------------------------------------- sources: each yields documents as bytes


def stdlib_files(max_bytes: int) -> list[Path]:
    """The standard library's `.py` files in sorted order, up to `max_bytes` in total."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(
            d for d in dirnames if d not in _SKIP_DIRS and not d.startswith(("config-", "."))
        )
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    files.sort(key=lambda p: p.relative_to(root).as_posix())
    chosen, total = [], 0
    for f in files:
        size = f.stat().st_size
        if total + size > max_bytes:
            break
        chosen.append(f)
        total += size
    return chosen


def text_files(root: Path) -> list[Path]:
    """A file, or every regular non-hidden file below a folder, in sorted order."""
    if root.is_file():
        return [root]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return sorted(out, key=lambda p: p.relative_to(root).as_posix())


def _read_files(files: list[Path]) -> Iterator[bytes]:
    for f in files:
        yield f.read_bytes()


def _read_parquet(files: list[Path], column: str) -> Iterator[bytes]:
    import pyarrow.parquet as pq

    for f in files:
        try:
            pf = pq.ParquetFile(f)
        except Exception as e:
            raise DataError(f"cannot read Parquet file {str(f)!r}: {e}") from None
        names = pf.schema_arrow.names
        if column not in names:
            raise DataError(
                f"Parquet file {str(f)!r} has no {column!r} column (columns: {', '.join(names)}); set data.text_column"
            )
        for batch in pf.iter_batches(batch_size=1024, columns=[column]):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text.encode("utf-8") if isinstance(text, str) else bytes(text)


def _manifest(files: list[Path]) -> list[tuple[str, int, int]]:
    return [(str(f.resolve()), (st := f.stat()).st_size, st.st_mtime_ns) for f in files]


def _resolve_source(data_cfg: Any) -> tuple[str, str, list[Path]]:
    """Return (kind, description, files) for the configured data path."""
    if not data_cfg.path:
        return (
            "embedded",
            f"embedded: Python {sys.version.split()[0]} standard library",
            stdlib_files(data_cfg.embedded_max_bytes),
        )
    root = Path(data_cfg.path).expanduser()
    if not root.exists():
        raise DataError(f"data.path {data_cfg.path!r} does not exist")
    kind = data_cfg.format
    if root.is_file():
        files = [root]
        if kind == "auto":
            kind = {".parquet": "parquet", ".bin": "bin"}.get(root.suffix.lower(), "text")
    else:
        files = text_files(root)
        if kind == "auto":
            parquet = [f for f in files if f.suffix.lower() == ".parquet"]
            kind, files = ("parquet", parquet) if parquet else ("text", files)
        elif kind == "parquet":
            files = [f for f in files if f.suffix.lower() == ".parquet"]
        elif kind == "bin":
            files = [f for f in files if f.suffix.lower() == ".bin"]
    if not files:
        raise DataError(f"data.path {data_cfg.path!r} holds no {kind} files (the corpus is empty)")
    return kind, f"{kind}: {data_cfg.path}", files


def bin_max_token(data_cfg: Any) -> int | None:
    """The largest token id of a pre-tokenized (`.bin`) corpus, read without tokenizing (None for other kinds)."""
    if not data_cfg.path:
        return None
    kind, _, files = _resolve_source(data_cfg)
    if kind != "bin":
        return None
    itemsize = np.dtype(data_cfg.bin_dtype).itemsize
    tops = [
        int(np.memmap(f, dtype=data_cfg.bin_dtype, mode="r").max())
        for f in files
        if f.stat().st_size >= itemsize
    ]
    return max(tops) if tops else None


# ---------------------------------------------------------------- loading and caching


def _load_bin(files: list[Path], dtype: str, description: str, tokenizer: Tokenizer) -> Corpus:
    arrays = []
    for f in files:
        if f.stat().st_size % np.dtype(dtype).itemsize:
            raise DataError(f"{str(f)!r} is not a whole number of {dtype} tokens (data.bin_dtype)")
        if f.stat().st_size:
            arrays.append(np.memmap(f, dtype=dtype, mode="r"))
    if not arrays:
        raise DataError(f"corpus {description!r} is empty (0 tokens)")
    tokens = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
    fingerprint = hashlib.sha256(json.dumps(_manifest(files)).encode()).hexdigest()[:16]
    return Corpus(tokens, description, fingerprint, f"pre-tokenized ({dtype})")


def _tokenize_to(path: Path, docs: Iterator[bytes], tokenizer: Tokenizer) -> tuple[int, str]:
    """Stream-tokenize documents into a flat binary file; return (token count, content sha256)."""
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    digest, count = hashlib.sha256(), 0
    with open(path, "wb") as fh:
        for doc in docs:
            pieces = [doc] if len(doc) <= _ENCODE_CHUNK else _split_lines(doc)
            for piece in pieces:
                ids = tokenizer.encode(piece).astype(dtype, copy=False)
                fh.write(ids.tobytes())
                digest.update(ids.tobytes())
                count += ids.size
            if tokenizer.eot_id is not None and doc:
                eot = np.asarray([tokenizer.eot_id], dtype=dtype).tobytes()
                fh.write(eot)
                digest.update(eot)
                count += 1
    return count, digest.hexdigest()


def _split_lines(doc: bytes) -> list[bytes]:
    out, start = [], 0
    while start < len(doc):
        end = doc.rfind(b"\n", start, start + _ENCODE_CHUNK)
        end = start + _ENCODE_CHUNK if end <= start else end + 1
        out.append(doc[start:end])
        start = end
    return out


def load_corpus(data_cfg: Any, tokenizer: Tokenizer) -> Corpus:
    """Load (tokenizing and caching if needed) the corpus named by a DataConfig."""
    kind, description, files = _resolve_source(data_cfg)
    if kind == "bin":
        return _load_bin(files, data_cfg.bin_dtype, description, tokenizer)
    key_src = {
        "kind": kind,
        "files": _manifest(files),
        "tokenizer": tokenizer.name,
        "column": data_cfg.text_column,
    }
    if isinstance(tokenizer.name, str) and tokenizer.name.startswith("hf:"):
        key_src["tokenizer_file"] = hashlib.sha256(Path(data_cfg.tokenizer).read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:24]
    cache = Path(data_cfg.cache_dir).expanduser() if data_cfg.cache_dir else default_cache_dir() / "tokens"
    cache.mkdir(parents=True, exist_ok=True)
    bin_path, meta_path = cache / f"{key}.bin", cache / f"{key}.json"
    if not (bin_path.exists() and meta_path.exists()):
        docs = _read_parquet(files, data_cfg.text_column) if kind == "parquet" else _read_files(files)
        tmp = bin_path.with_suffix(f".tmp{os.getpid()}")
        try:
            count, content = _tokenize_to(tmp, docs, tokenizer)
            dtype = "uint16" if tokenizer.vocab_size <= 65536 else "uint32"
            os.replace(tmp, bin_path)
        finally:
            tmp.unlink(missing_ok=True)
        meta_tmp = meta_path.with_suffix(f".tmp{os.getpid()}")
        meta_tmp.write_text(
            json.dumps({"tokens": count, "dtype": dtype, "content_sha256": content, "source": description})
        )
        os.replace(meta_tmp, meta_path)
    meta = json.loads(meta_path.read_text())
    if meta["tokens"] == 0:
        raise DataError(f"corpus {description!r} is empty (0 tokens)")
    tokens = np.memmap(bin_path, dtype=meta["dtype"], mode="r")
    return Corpus(tokens, description, meta["content_sha256"][:16], tokenizer.name)
