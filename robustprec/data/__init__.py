"""Corpora, tokenizers and deterministic batch streams."""
