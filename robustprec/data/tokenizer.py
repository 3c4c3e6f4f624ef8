"""Tokenizers: byte-level by default; a Hugging Face `tokenizer.json` as an option."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from robustprec.errors import DataError


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eot_id: int | None

    def encode(self, text: bytes) -> np.ndarray: ...


class ByteTokenizer:
    """One token per byte (vocabulary 256). Documents are separated by byte 0, which text never contains."""

    name = "byte"
    vocab_size = 256
    eot_id: int | None = 0

    def encode(self, text: bytes) -> np.ndarray:
        return np.frombuffer(text, dtype=np.uint8).astype(np.uint16)


class HFTokenizer:
    """A `tokenizers` tokenizer loaded from a local `tokenizer.json` (no hub access)."""

    def __init__(self, path: str) -> None:
        p = Path(path)
        if not p.is_file():
            raise DataError(
                f"tokenizer file {path!r} not found (data.tokenizer is 'byte' or a tokenizer.json path)"
            )
        try:
            from tokenizers import Tokenizer as _Tok
        except ImportError:
            raise DataError(
                "data.tokenizer needs the 'tokenizers' package: pip install 'robustprec[tokenizers]'"
            ) from None
        self._tok = _Tok.from_file(str(p))
        self.name = f"hf:{p.name}"
        self.vocab_size = self._tok.get_vocab_size()
        self.eot_id = next(
            (
                i
                for t in ("<|endoftext|>", "</s>", "<eos>", "[SEP]")
                if (i := self._tok.token_to_id(t)) is not None
            ),
            None,
        )

    def encode(self, text: bytes) -> np.ndarray:
        ids = self._tok.encode(text.decode("utf-8", errors="replace"), add_special_tokens=False).ids
        return np.asarray(ids, dtype=np.uint32 if self.vocab_size > 65535 else np.uint16)


def load_tokenizer(spec: str) -> Tokenizer:
    """`byte` or a path to a tokenizer.json."""
    return ByteTokenizer() if spec == "byte" else HFTokenizer(spec)
