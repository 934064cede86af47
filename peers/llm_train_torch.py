#!/usr/bin/env python3
"""PyTorch / transformers on the training rows of `cargo bench --bench llm -- train`.

SmolLM2-135M (`LlamaForCausalLM` with the config of the SmolLM2-135M-Instruct GGUF, written out
below: 30 layers, C 576, hidden 1536, 9 query / 3 key-value heads of 64, vocab 49152, tied
embeddings, RMSNorm eps 1e-5, RoPE theta 100000), float32, transformers' random init, one
training step = forward with `labels`, backward, gradient clipping at 1.0, AdamW (lr 3e-4, betas
0.9 / 0.95, weight decay 0.1 on the matrices) at B = 4, T = 256 on `--threads` threads (default
2). Prints the median and min step time, tokens/s and the peak RSS of the process
(resource.getrusage) for each mode: without and with gradient checkpointing
(`gradient_checkpointing_enable()`), each in a fresh process so that the peaks are separate.

    pip install torch transformers
    python3 peers/llm_train_torch.py [--steps 4] [--batch 4] [--seq 256] [--mode plain|checkpointing|both]

Alternate it with `cargo bench --bench llm -- train` (peer, handgrad, peer, handgrad) and compare
ratios of medians: single passes on a shared 2-core machine can be off by a lot.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time

SMOLLM2_135M = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    head_dim=64,
    max_position_embeddings=8192,
    rms_norm_eps=1e-5,
    rope_theta=100000.0,
    tie_word_embeddings=True,
    hidden_act="silu",
    attention_bias=False,
    mlp_bias=False,
    bos_token_id=1,
    eos_token_id=2,
)


def run(mode, args):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = LlamaConfig(**SMOLLM2_135M)
    model = LlamaForCausalLM(cfg).float().train()
    if mode == "checkpointing":
        # transformers 5 renames gradient_checkpointing_enable (same behaviour)
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.config.use_cache = False
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-4, betas=(0.9, 0.95))
    b, t = args.batch, args.seq
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, cfg.vocab_size, (b, t), generator=g)

    def step():
        opt.zero_grad(set_to_none=False)
        out = model(input_ids=ids, labels=ids, use_cache=False)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return out.loss.item()

    step()  # warm-up (allocates the optimizer state)
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med, mn = statistics.median(times), min(times)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB
    print(f"torch {torch.__version__} SmolLM2-135M train {mode} B={b} T={t} threads={args.threads} "
          f"params={n_params} | step ms median {med * 1e3:.0f} min {mn * 1e3:.0f} | "
          f"tokens/s median {b * t / med:.0f} best {b * t / mn:.0f} | peak RSS {rss:.0f} MiB",
          flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["plain", "checkpointing", "both"], default="both")
    args = ap.parse_args()
    if args.mode != "both":
        run(args.mode, args)
        return
    # one process per mode: ru_maxrss is a per-process high-water mark
    for mode in ("plain", "checkpointing"):
        cmd = [sys.executable, os.path.abspath(__file__), "--mode", mode, "--steps", str(args.steps),
               "--batch", str(args.batch), "--seq", str(args.seq), "--threads", str(args.threads)]
        subprocess.run(cmd, check=True)


if __name__ == "__main__":
    main()
