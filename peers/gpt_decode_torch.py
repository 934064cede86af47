#!/usr/bin/env python3
"""PyTorch (HF transformers GPT2LMHeadModel) on the GPT-2 124M decode rows of `cargo bench --bench gpt`.

Random-init GPT-2 small (the weights' values do not change the timings), batch 1, KV cache:
- greedy decoding of 50 new tokens after an 8-token prompt, one token per forward (a bare loop:
  no `generate()` overhead) → new tokens/s;
- prompt processing: one 256-token prompt through the model with the cache on → prompt tokens/s;
in float32, bfloat16 and float16 (`model.to(dtype)`), and with int8 weights (the projections as
`nn.Linear` through `torch.ao.quantization.quantize_dynamic`, PyTorch's CPU int8 path; skipped
with a message where this torch has no such function). For each reduced type it also prints the
largest |logit − f32 logit| along the f32 greedy run (the same tokens fed to both) and how many
greedy tokens agree with f32's, as the bench does for handgrad's F16 / BF16 / Q8_0 weights.

    pip install torch transformers
    python3 peers/gpt_decode_torch.py [--threads 2] [--repeats 5] [--dtypes f32,bf16,f16,int8]

Alternate it with `cargo bench --bench gpt -- --no-train --threads=2 gpt2` (peer, handgrad,
peer, handgrad) and compare ratios of medians: single passes on a shared 2-core machine can be
off by a lot.
"""
import argparse
import os
import statistics
import sys
import time
import warnings


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--new", type=int, default=50, help="greedy tokens decoded per repeat")
    ap.add_argument("--prompt", type=int, default=256, help="prompt tokens for prompt processing")
    ap.add_argument("--dtypes", default="f32,bf16,f16,int8")
    args = ap.parse_args()
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(args.threads)
    warnings.filterwarnings("ignore")  # torch.ao's deprecation notices
    import torch
    import transformers
    from transformers import GPT2Config, GPT2LMHeadModel

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    print(f"# torch {torch.__version__} transformers {transformers.__version__} threads={args.threads} "
          f"cpu capability={torch.backends.cpu.get_cpu_capability()}")

    torch.manual_seed(0)
    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    base = GPT2LMHeadModel(cfg).eval()
    prompt = [(i * 13 + 5) % cfg.vocab_size for i in range(8)]
    long = [(i * 7919 + 11) % cfg.vocab_size for i in range(args.prompt)]

    def new_api(m):
        with torch.inference_mode():
            return hasattr(m(input_ids=torch.tensor([prompt[:1]]), use_cache=True), "cache")

    def step(m, ids, out, api):
        if out is None:
            return m(input_ids=ids, use_cache=True)
        if api:
            return m(input_ids=ids, cache=out.cache, use_cache=True)
        return m(input_ids=ids, past_key_values=out.past_key_values, use_cache=True)

    def greedy(m, api, teacher=None):
        """(tokens, per-step last logits as float32) of a cached greedy decode."""
        seq, logits = list(prompt), []
        with torch.inference_mode():
            out = step(m, torch.tensor([prompt]), None, api)
            for i in range(args.new):
                last = out.logits[0, -1].float()
                logits.append(last)
                nxt = int(last.argmax()) if teacher is None else teacher[len(prompt) + i]
                seq.append(nxt)
                out = step(m, torch.tensor([[nxt]]), out, api)
            logits.append(out.logits[0, -1].float())
        return seq, logits

    def timed(fn):
        fn()
        s = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            fn()
            s.append(time.perf_counter() - t)
        return statistics.median(s), min(s)

    want_seq, want = None, None
    for name in args.dtypes.split(","):
        if name == "int8":
            m = int8_model(torch, base)
            if m is None:
                print("int8: this torch has no torch.ao.quantization.quantize_dynamic; skipped")
                continue
        else:
            dtype = {"f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[name]
            m = GPT2LMHeadModel(cfg).eval()
            m.load_state_dict(base.state_dict())
            m = m.to(dtype)
        api = new_api(m)
        seq, logits = greedy(m, api)
        note = ""
        if want is None:
            want_seq, want = seq, logits
        else:
            _, forced = greedy(m, api, teacher=want_seq)
            dev = max(float((a - b).abs().max()) for a, b in zip(want, forced))
            scale = max(float(a.abs().max()) for a in want)
            agree = 0
            for a, b in zip(seq[len(prompt):], want_seq[len(prompt):]):
                if a != b:
                    break
                agree += 1
            note = f",max_abs_dlogit_vs_f32={dev:.1e},max_abs_logit={scale:.2f},greedy_agree={agree}/{args.new}"
        med, best = timed(lambda: greedy(m, api))
        print(f"torch,gpt2,{name},threads={args.threads},greedy_8+{args.new},batch=1,"
              f"tok_per_s_median={args.new / med:.1f},tok_per_s_best={args.new / best:.1f}{note}", flush=True)

        def prefill():
            with torch.inference_mode():
                m(input_ids=torch.tensor([long]), use_cache=True)
        med, best = timed(prefill)
        print(f"torch,gpt2,{name},threads={args.threads},prompt_{args.prompt},"
              f"tok_per_s_median={args.prompt / med:.1f},tok_per_s_best={args.prompt / best:.1f}", flush=True)


def int8_model(torch, base):
    """`base` with every `Conv1D` as an `nn.Linear` (weight transposed), dynamically quantized to
    int8 weights; the tied `lm_head` included. None when the function is missing."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    import copy
    from transformers.pytorch_utils import Conv1D

    m = copy.deepcopy(base)
    for parent in list(m.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                lin = torch.nn.Linear(child.weight.shape[0], child.weight.shape[1])
                lin.weight.data = child.weight.data.t().contiguous()
                lin.bias.data = child.bias.data.clone()
                setattr(parent, name, lin)
    head = torch.nn.Linear(m.lm_head.in_features, m.lm_head.out_features, bias=False)
    head.weight.data = m.lm_head.weight.data.clone()
    m.lm_head = head
    return quantize_dynamic(m, {torch.nn.Linear}, dtype=torch.qint8).eval()


if __name__ == "__main__":
    sys.exit(main())
