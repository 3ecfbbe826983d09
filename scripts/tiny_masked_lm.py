"""Write a tiny random LLaDA or Dream checkpoint in the official layout (config.json + safetensors), for tests and
the toy examples of docs/INTEROP.md: ``python scripts/tiny_masked_lm.py llada|dream DIR [--shards 2] [--seed 0]``.

The tensors are named and shaped as the released checkpoints' (LLaDA: ``model.transformer.*``; Dream: Qwen2's
names with q/k/v biases); the values are random (std 0.2, norms near 1), so logits are far from uniform.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

LLADA = {"model_type": "llada", "architectures": ["LLaDAModelLM"], "d_model": 32, "n_heads": 4, "n_kv_heads": 2,
         "n_layers": 2, "mlp_hidden_size": 48, "vocab_size": 48, "embedding_size": 64, "mask_token_id": 40,
         "eos_token_id": 41, "pad_token_id": 41, "max_sequence_length": 64, "rope_theta": 10000.0,
         "rms_norm_eps": 1e-5, "weight_tying": False, "include_bias": False, "block_type": "llama",
         "layer_norm_type": "rms", "activation_type": "silu", "rope": True, "alibi": False}
DREAM = {"model_type": "Dream", "architectures": ["DreamModel"], "hidden_size": 32, "num_attention_heads": 4,
         "num_key_value_heads": 2, "num_hidden_layers": 2, "intermediate_size": 48, "vocab_size": 48,
         "mask_token_id": 44, "pad_token_id": 45, "bos_token_id": 45, "eos_token_id": 45,
         "max_position_embeddings": 64, "rope_theta": 10000.0, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
         "hidden_act": "silu", "use_sliding_window": False}


def llada_tensors(cfg: dict, g: torch.Generator) -> dict[str, torch.Tensor]:
    d, h, f = cfg["d_model"], cfg["n_heads"], cfg["mlp_hidden_size"]
    kv = cfg["n_kv_heads"] * (d // h)
    E = cfg.get("embedding_size") or cfg["vocab_size"]
    t = {"model.transformer.wte.weight": _w(g, E, d), "model.transformer.ln_f.weight": _norm(g, d)}
    if not cfg.get("weight_tying"):
        t["model.transformer.ff_out.weight"] = _w(g, E, d)
    for i in range(cfg["n_layers"]):
        b = f"model.transformer.blocks.{i}."
        t.update({b + "q_proj.weight": _w(g, d, d), b + "k_proj.weight": _w(g, kv, d),
                  b + "v_proj.weight": _w(g, kv, d), b + "attn_out.weight": _w(g, d, d),
                  b + "ff_proj.weight": _w(g, f, d), b + "up_proj.weight": _w(g, f, d),
                  b + "ff_out.weight": _w(g, d, f), b + "attn_norm.weight": _norm(g, d),
                  b + "ff_norm.weight": _norm(g, d)})
    return t


def dream_tensors(cfg: dict, g: torch.Generator) -> dict[str, torch.Tensor]:
    d, h, f, V = cfg["hidden_size"], cfg["num_attention_heads"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (d // h)
    t = {"model.embed_tokens.weight": _w(g, V, d), "model.norm.weight": _norm(g, d)}
    if not cfg.get("tie_word_embeddings"):
        t["lm_head.weight"] = _w(g, V, d)
    for i in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{i}."
        t.update({b + "self_attn.q_proj.weight": _w(g, d, d), b + "self_attn.q_proj.bias": _w(g, d),
                  b + "self_attn.k_proj.weight": _w(g, kv, d), b + "self_attn.k_proj.bias": _w(g, kv),
                  b + "self_attn.v_proj.weight": _w(g, kv, d), b + "self_attn.v_proj.bias": _w(g, kv),
                  b + "self_attn.o_proj.weight": _w(g, d, d), b + "mlp.gate_proj.weight": _w(g, f, d),
                  b + "mlp.up_proj.weight": _w(g, f, d), b + "mlp.down_proj.weight": _w(g, d, f),
                  b + "input_layernorm.weight": _norm(g, d), b + "post_attention_layernorm.weight": _norm(g, d)})
    return t


def _w(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g) * 0.2


def _norm(g: torch.Generator, d: int) -> torch.Tensor:
    return 1.0 + 0.1 * torch.randn(d, generator=g)


def write(kind: str, out: str | Path, shards: int = 1, seed: int = 0, dtype: torch.dtype = torch.float32,
          **overrides) -> Path:
    """Write the checkpoint into ``out`` (``shards`` > 1: ``model-0000k-of-0000n.safetensors`` + the index);
    ``overrides``: config.json fields (a larger model: ``d_model=4096, n_heads=32, ...``); ``dtype`` of the
    tensors written (the released checkpoints are bf16)."""
    from safetensors.torch import save_file

    cfg = {**(LLADA if kind == "llada" else DREAM), **overrides}
    g = torch.Generator().manual_seed(seed)
    tensors = {k: v.to(dtype) for k, v in (llada_tensors if kind == "llada" else dream_tensors)(cfg, g).items()}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    if shards <= 1:
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
        return out
    names = sorted(tensors)
    weight_map = {}
    for k in range(shards):
        part = {n: tensors[n] for n in names[k::shards]}
        fname = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        save_file(part, str(out / fname), metadata={"format": "pt"})
        weight_map.update({n: fname for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("kind", choices=("llada", "dream"))
    ap.add_argument("out")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"wrote a tiny {args.kind} checkpoint to {write(args.kind, args.out, args.shards, args.seed)}")


if __name__ == "__main__":
    main()
