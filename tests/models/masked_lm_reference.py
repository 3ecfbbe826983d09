"""A float64 restatement of LLaDA's and Dream's forward pass, written from their published architecture (not from
basinlab's code): what tests/models/test_llada.py and test_dream.py compare the loaded networks with."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import tiny_masked_lm

write = tiny_masked_lm.write


def official_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for f in sorted(Path(path).glob("*.safetensors")):
        out.update({k: v.double() for k, v in load_file(str(f)).items()})
    return out


def _rms(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    return w * x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps)


def _rope(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotary embedding, halves rotated (``[x1, x2] -> [x1 cos - x2 sin, x2 cos + x1 sin]``); x: [B, H, L, hd]."""
    L, hd = x.shape[-2], x.shape[-1]
    inv = 1.0 / theta ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos(), ang.cos()], -1), torch.cat([ang.sin(), ang.sin()], -1)
    x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def _block(x, t, names, heads, kv_heads, theta, eps):
    B, L, d = x.shape
    hd = d // heads
    h = _rms(x, t[names["attn_norm"]], eps)

    def proj(n, k):
        y = h @ t[names[n] + ".weight"].T
        bias = t.get(names[n] + ".bias")
        return (y if bias is None else y + bias).view(B, L, k, hd).transpose(1, 2)

    q, k, v = proj("q", heads), proj("k", kv_heads), proj("v", kv_heads)
    q, k = _rope(q, theta), _rope(k, theta)
    k, v = k.repeat_interleave(heads // kv_heads, 1), v.repeat_interleave(heads // kv_heads, 1)
    att = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, -1) @ v  # full attention: no mask
    x = x + att.transpose(1, 2).reshape(B, L, d) @ t[names["o"]].T
    h = _rms(x, t[names["ff_norm"]], eps)
    return x + (torch.nn.functional.silu(h @ t[names["gate"]].T) * (h @ t[names["up"]].T)) @ t[names["down"]].T


def llada_logits(cfg: dict, t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """LLaDA: logits [B, L, vocab_size] in float64 (no shift)."""
    x = t["model.transformer.wte.weight"][ids]
    for i in range(cfg["n_layers"]):
        b = f"model.transformer.blocks.{i}."
        names = {"attn_norm": b + "attn_norm.weight", "q": b + "q_proj", "k": b + "k_proj", "v": b + "v_proj",
                 "o": b + "attn_out.weight", "ff_norm": b + "ff_norm.weight", "gate": b + "ff_proj.weight",
                 "up": b + "up_proj.weight", "down": b + "ff_out.weight"}
        x = _block(x, t, names, cfg["n_heads"], cfg["n_kv_heads"], cfg["rope_theta"], cfg["rms_norm_eps"])
    x = _rms(x, t["model.transformer.ln_f.weight"], cfg["rms_norm_eps"])
    head = t["model.transformer.wte.weight"] if cfg.get("weight_tying") else t["model.transformer.ff_out.weight"]
    return (x @ head.T)[..., : cfg["vocab_size"]]


def dream_logits(cfg: dict, t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """Dream: logits [B, L, V] in float64, shifted (position l read at l - 1, position 0 at 0)."""
    x = t["model.embed_tokens.weight"][ids]
    for i in range(cfg["num_hidden_layers"]):
        b = f"model.layers.{i}."
        names = {"attn_norm": b + "input_layernorm.weight", "q": b + "self_attn.q_proj",
                 "k": b + "self_attn.k_proj", "v": b + "self_attn.v_proj", "o": b + "self_attn.o_proj.weight",
                 "ff_norm": b + "post_attention_layernorm.weight", "gate": b + "mlp.gate_proj.weight",
                 "up": b + "mlp.up_proj.weight", "down": b + "mlp.down_proj.weight"}
        x = _block(x, t, names, cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["rope_theta"],
                   cfg["rms_norm_eps"])
    x = _rms(x, t["model.norm.weight"], cfg["rms_norm_eps"])
    head = t["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else t["lm_head.weight"]
    logits = x @ head.T
    return torch.cat([logits[:, :1], logits[:, :-1]], 1)


def loo_log_probs(logits_fn, cfg: dict, t: dict[str, torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """``log p(x_l | x_{-l})`` over the vocabulary for every ``l``: position ``l`` masked alone, the mask logit
    removed (SPEC 2c); float64 [B, L, V]."""
    B, L = ids.shape
    mask = cfg["mask_token_id"]
    out = torch.empty(B, L, cfg["vocab_size"], dtype=torch.float64)
    for pos in range(L):
        z = ids.clone()
        z[:, pos] = mask
        logits = logits_fn(cfg, t, z)[:, pos].clone()
        logits[:, mask] = float("-inf")
        out[:, pos] = torch.log_softmax(logits, -1)
    return out


LOGITS = {"llada": llada_logits, "dream": dream_logits}


def check_logits(kind: str, ckpt: Path, model, ids: torch.Tensor) -> None:
    """The loaded network's log-softmax equals the float64 architecture's to 1e-5."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    ref = torch.log_softmax(LOGITS[kind](cfg, official_tensors(ckpt), ids), -1)
    with torch.no_grad():
        got = torch.log_softmax(model.model(ids, torch.zeros(ids.shape[0])).double(), -1)
    assert torch.allclose(got, ref, atol=1e-5, rtol=0), (got - ref).abs().max()


def check_leave_one_out(kind: str, ckpt: Path, model, ids: torch.Tensor) -> None:
    """The masked process's leave-one-out conditional through the denoiser equals the architecture's with
    position ``l`` masked alone (mask logit removed) to 1e-5; the mask token gets no mass."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    ref = loo_log_probs(LOGITS[kind], cfg, official_tensors(ckpt), ids)
    got = model.process.leave_one_out(model.denoiser, ids, torch.full((ids.shape[0],), 1e-5, dtype=torch.float64))
    keep = torch.isfinite(ref)
    assert torch.equal(keep, torch.isfinite(got)) and not keep[..., cfg["mask_token_id"]].any()
    assert torch.allclose(got.double()[keep], ref[keep], atol=1e-5, rtol=0)
