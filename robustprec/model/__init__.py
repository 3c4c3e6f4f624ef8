"""Decoder-only transformers (GPT-2 and Llama flavours), size presets and FLOP accounting.

Submodules are imported explicitly (`robustprec.model.transformer`) so that `presets` stays torch-free.
"""
