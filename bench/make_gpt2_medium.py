"""Writes a GPT-2-medium-shaped state dict (~1.4 GB float32) with real PyTorch, for bench/run.sh.

Usage: python bench/make_gpt2_medium.py OUT.pth
Shapes follow GPT-2 medium (24 layers, d_model 1024, vocab 50257, context 1024), with the
Conv1D weight layout huggingface uses.
"""

import sys

import torch


def main(out):
    torch.manual_seed(0)
    d, n_layer, vocab, ctx = 1024, 24, 50257, 1024
    sd = {}
    sd["wte.weight"] = torch.randn(vocab, d) * 0.02
    sd["wpe.weight"] = torch.randn(ctx, d) * 0.01
    for i in range(n_layer):
        p = f"h.{i}."
        sd[p + "ln_1.weight"] = torch.ones(d)
        sd[p + "ln_1.bias"] = torch.zeros(d)
        sd[p + "attn.c_attn.weight"] = torch.randn(d, 3 * d) * 0.02
        sd[p + "attn.c_attn.bias"] = torch.zeros(3 * d)
        sd[p + "attn.c_proj.weight"] = torch.randn(d, d) * 0.02
        sd[p + "attn.c_proj.bias"] = torch.zeros(d)
        sd[p + "ln_2.weight"] = torch.ones(d)
        sd[p + "ln_2.bias"] = torch.zeros(d)
        sd[p + "mlp.c_fc.weight"] = torch.randn(d, 4 * d) * 0.02
        sd[p + "mlp.c_fc.bias"] = torch.zeros(4 * d)
        sd[p + "mlp.c_proj.weight"] = torch.randn(4 * d, d) * 0.02
        sd[p + "mlp.c_proj.bias"] = torch.zeros(d)
    sd["ln_f.weight"] = torch.ones(d)
    sd["ln_f.bias"] = torch.zeros(d)
    torch.save(sd, out)
    total = sum(t.numel() * t.element_size() for t in sd.values())
    print(f"wrote {out}: {len(sd)} tensors, {total / 1e9:.2f} GB")


if __name__ == "__main__":
    main(sys.argv[1])
