"""Trainer throughput: robustprec's DeepSpeed trainer vs a plain PyTorch loop on the same model and batches.

    python benchmarks/trainer.py --preset tiny --backends fp32,bf16 --steps 40 [--seq-len 128] [--batch 16]

Prints a table (tokens/s, MFU where the peak is known, ratio to the plain loop) and the device.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from robustprec.config import load_config
from robustprec.data.batches import BatchStream, split_tokens
from robustprec.data.corpus import load_corpus
from robustprec.data.tokenizer import load_tokenizer
from robustprec.model.presets import resolve_spec
from robustprec.model.transformer import build_model
from robustprec.numerics.backends import make_backend
from robustprec.provenance import device_name
from robustprec.train.loop import train


def plain_loop(cfg, steps: int, device: torch.device) -> float:
    """tokens/s of a minimal loop: same model and numerics backend, fused AdamW on GPU, no engine, no records."""
    tok = load_tokenizer(cfg.data.tokenizer)
    corpus = load_corpus(cfg.data, tok)
    train_tokens, _ = split_tokens(corpus.tokens, cfg.data.eval_fraction, cfg.train.seq_len)
    stream = BatchStream(train_tokens, cfg.train.seq_len, cfg.train.global_batch_size, 0)
    model = build_model(resolve_spec(cfg.model, tok.vocab_size, cfg.train.seq_len), seed=0)
    numerics = make_backend(cfg.numerics, device)
    numerics.prepare_model(model)
    model.to(device)
    if cfg.train.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=device.type == "cuda")
    tokens, elapsed = 0, 0.0
    for step in range(steps):
        rows = torch.from_numpy(stream.global_batch_at(step)).to(device)
        tic = time.perf_counter()
        for mb in rows.split(cfg.train.micro_batch_size):
            loss = model(mb[:, :-1], mb[:, 1:])["loss"] * (cfg.train.micro_batch_size / len(rows))
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        float(loss)
        if step > 0:
            tokens += rows.numel() - rows.shape[0]
            elapsed += time.perf_counter() - tic
    return tokens / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--backends", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--micro", type=int, default=0, help="micro-batch size (default: the whole batch)")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--data", default="", help="corpus path (default: embedded)")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for backend in args.backends.split(","):
        overrides = [
            f"model.preset={args.preset}", f"numerics.backend={backend}", f"train.steps={args.steps}",
            f"train.seq_len={args.seq_len}", f"train.global_batch_size={args.batch}",
            f"train.micro_batch_size={args.micro or args.batch}", f"train.eval_interval={10 * args.steps}",
            "train.eval_sequences=8", "train.sharpness.sequences=8", f"train.compile={args.compile}",
            f"data.path={args.data}", "train.divergence.stop_early=false",
        ]  # fmt: skip
        cfg = load_config(None, overrides)
        with tempfile.TemporaryDirectory() as tmp:
            summary = train(cfg, Path(tmp) / "run")
        plain = plain_loop(cfg, args.steps, device)
        # same FLOPs per token and peak, so the plain loop's MFU scales with its tokens/s
        ours, mfu = summary["tokens_per_s"], summary["mfu"]
        rows.append((backend, ours, plain, mfu, mfu * plain / ours if mfu else None))
    print(f"\ndevice: {device_name(device.type)}, preset {args.preset}, "
          f"seq {args.seq_len}, batch {args.batch}, steps {args.steps}, compile {args.compile}")  # fmt: skip
    print("| backend | robustprec tok/s | plain loop tok/s | ratio | robustprec MFU | plain MFU |")
    print("|---|---|---|---|---|---|")
    for b, ours, plain, mfu, pmfu in rows:
        fm = lambda v: f"{100 * v:.1f}%" if v else "-"  # noqa: E731
        print(f"| {b} | {ours:,.0f} | {plain:,.0f} | {ours / plain:.2f} | {fm(mfu)} | {fm(pmfu)} |")


if __name__ == "__main__":
    main()
