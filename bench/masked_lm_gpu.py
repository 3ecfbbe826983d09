"""LLaDA / Dream loaded in place on a GPU (issue 24): load time and memory of a random checkpoint at the released
width (LLaDA-8B's d_model 4096, 32 heads, MLP 12,288, vocabulary 126,464; Dream-7B's) with fewer layers, bf16
against fp32 log-probabilities, and the audit's time per text.

    python bench/masked_lm_gpu.py --family llada --layers 2        # on the GPU machine (about a minute)
    python bench/masked_lm_gpu.py --toy                            # the tiny checkpoint on a CPU: checks the script

Prints one line per measurement (for docs/PERFORMANCE.md, "LLaDA and Dream on a GPU").
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import tiny_masked_lm

WIDE = {"llada": {"d_model": 4096, "n_heads": 32, "n_kv_heads": 32, "mlp_hidden_size": 12288, "vocab_size": 126464,
                  "embedding_size": 126464, "mask_token_id": 126336, "rope_theta": 500000.0,
                  "max_sequence_length": 4096},
        "dream": {"hidden_size": 3584, "num_attention_heads": 28, "num_key_value_heads": 4, "intermediate_size": 18944,
                  "vocab_size": 152064, "mask_token_id": 151666, "rope_theta": 1000000.0,
                  "max_position_embeddings": 131072}}
LAYERS = {"llada": "n_layers", "dream": "num_hidden_layers"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=("llada", "dream"), default="llada")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--texts", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--toy", action="store_true", help="the tiny checkpoint on the CPU")
    args = ap.parse_args()
    from basinlab.probes.audit import audit
    from basinlab.training.checkpoint import load_trained

    device = "cpu" if args.toy else "cuda"
    over = {} if args.toy else {**WIDE[args.family], LAYERS[args.family]: args.layers}
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        ckpt = tiny_masked_lm.write(args.family, Path(tmp) / "ckpt", shards=2, dtype=torch.bfloat16, **over)
        print(f"wrote a random {args.family} checkpoint ({over or 'tiny'}) in {time.perf_counter() - t:.1f} s")
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        tm = load_trained(ckpt, device=device, batch_size=args.batch)
        n = sum(p.numel() for p in tm.model.parameters())
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")
        print(f"loaded {n / 1e9:.2f}B parameters onto {device} as {next(tm.model.parameters()).dtype} in "
              f"{time.perf_counter() - t:.1f} s; peak GPU memory {peak:.2f} GiB")
        V = min(tm.process.mask_index, 32000)
        seqs = torch.randint(0, V, (args.texts, args.length), generator=torch.Generator().manual_seed(0))
        z = seqs.clone()
        z[:, ::7] = tm.process.mask_index
        low = tm.denoiser(z, 0.5)
        ref = load_trained(ckpt, device=device, precision="fp32", batch_size=args.batch)
        high = ref.denoiser(z, 0.5)
        del ref
        keep = torch.isfinite(high) & (z == tm.process.mask_index).unsqueeze(-1)
        agree = (low.argmax(-1) == high.argmax(-1))[z == tm.process.mask_index].float().mean()
        print(f"bf16 against fp32 log-probs at the masked positions: max |diff| {(low - high)[keep].abs().max():.3g}, "
              f"argmax agreement {agree:.3f}")
        t = time.perf_counter()
        audit(tm.denoiser, seqs, ts=(0.25,), steps=25, nelbo_times=4, batch_size=args.batch)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t
        print(f"audit of {args.texts} texts of {args.length} tokens (T = 25, batch {args.batch}): {dt:.1f} s, "
              f"{dt / args.texts:.2f} s per text; peak GPU memory "
              f"{torch.cuda.max_memory_allocated() / 2**30 if device == 'cuda' else float('nan'):.2f} GiB")


if __name__ == "__main__":
    main()
