"""An independent float32 reference of Duo's ``DIT.forward(x, sigma)`` (s-sahoo/duo, ``models/dit.py``).

Written from a reading of Duo's code, with Duo's state-dict key names, as plain functions over a dict of tensors:
no basinlab import, explicit attention (no SDPA), flash-attn's ``apply_rotary_emb_torch`` layout (cos/sin of half
the head size repeated as ``(2 d)``, "rotate half"), ``F.layer_norm`` without affine then ``* weight``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F


def duo_param_names(n_blocks: int) -> list[str]:
    """Duo's ``DIT.parameters()`` order (module registration order), i.e. ``ema.shadow_params`` order."""
    names = ["vocab_embed.embedding", "sigma_map.mlp.0.weight", "sigma_map.mlp.0.bias",
             "sigma_map.mlp.2.weight", "sigma_map.mlp.2.bias"]
    for i in range(n_blocks):
        names += [f"blocks.{i}.{n}" for n in (
            "norm1.weight", "attn_qkv.weight", "attn_out.weight", "norm2.weight", "mlp.0.weight", "mlp.0.bias",
            "mlp.2.weight", "mlp.2.bias", "adaLN_modulation.weight", "adaLN_modulation.bias")]
    names += ["output_layer.norm_final.weight", "output_layer.linear.weight", "output_layer.linear.bias",
              "output_layer.adaLN_modulation.weight", "output_layer.adaLN_modulation.bias"]
    return names


def duo_shapes(V: int, d: int, c: int, n_blocks: int, freq: int = 256) -> dict[str, tuple[int, ...]]:
    s = {"vocab_embed.embedding": (V, d), "sigma_map.mlp.0.weight": (c, freq), "sigma_map.mlp.0.bias": (c,),
         "sigma_map.mlp.2.weight": (c, c), "sigma_map.mlp.2.bias": (c,)}
    for i in range(n_blocks):
        b = f"blocks.{i}."
        s.update({b + "norm1.weight": (d,), b + "attn_qkv.weight": (3 * d, d), b + "attn_out.weight": (d, d),
                  b + "norm2.weight": (d,), b + "mlp.0.weight": (4 * d, d), b + "mlp.0.bias": (4 * d,),
                  b + "mlp.2.weight": (d, 4 * d), b + "mlp.2.bias": (d,),
                  b + "adaLN_modulation.weight": (6 * d, c), b + "adaLN_modulation.bias": (6 * d,)})
    s.update({"output_layer.norm_final.weight": (d,), "output_layer.linear.weight": (V, d),
              "output_layer.linear.bias": (V,), "output_layer.adaLN_modulation.weight": (2 * d, c),
              "output_layer.adaLN_modulation.bias": (2 * d,)})
    return s


def random_duo_params(V: int, d: int, c: int, n_blocks: int, n_heads: int, seed: int = 0) -> OrderedDict:
    """Every parameter random and non-trivial (norm gains around 1, adaLN and head non-zero), in Duo's order,
    plus the persistent rotary buffer ``rotary_emb.inv_freq``."""
    g = torch.Generator().manual_seed(seed)
    shapes = duo_shapes(V, d, c, n_blocks)
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for name in duo_param_names(n_blocks):
        shape = shapes[name]
        if "norm" in name:
            t = 1.0 + 0.3 * torch.randn(shape, generator=g)
        elif len(shape) == 2:
            t = torch.randn(shape, generator=g) / math.sqrt(shape[1])
        else:
            t = 0.2 * torch.randn(shape, generator=g)
        out[name] = t.float()
    hd = d // n_heads
    out["rotary_emb.inv_freq"] = 1.0 / (10_000 ** (torch.arange(0, hd, 2).float() / hd))
    return out


def _layer_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), [x.shape[-1]]) * w[None, None, :]


def _timestep(sigma: torch.Tensor, dim: int = 256) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = sigma[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def _rotary(x: torch.Tensor, cos_half: torch.Tensor, sin_half: torch.Tensor) -> torch.Tensor:
    # x: [B, S, H, D]; cos_half/sin_half: [S, D/2] -> "... d -> ... 1 (2 d)"
    cos = torch.cat([cos_half, cos_half], -1)[:, None, :]
    sin = torch.cat([sin_half, sin_half], -1)[:, None, :]
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


def duo_forward(p: dict, n_heads: int, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Logits of Duo's DIT (eval mode: dropout off) for token ids ``x [B, S]`` and ``sigma [B]``."""
    n_blocks = len({k.split(".")[1] for k in p if k.startswith("blocks.")})
    h = p["vocab_embed.embedding"][x]
    t = _timestep(sigma) @ p["sigma_map.mlp.0.weight"].T + p["sigma_map.mlp.0.bias"]
    t = F.silu(t) @ p["sigma_map.mlp.2.weight"].T + p["sigma_map.mlp.2.bias"]
    c = F.silu(t)
    B, S, d = h.shape
    pos = torch.arange(S).float()
    freqs = torch.einsum("i,j->ij", pos, p["rotary_emb.inv_freq"])
    cos_h, sin_h = freqs.cos(), freqs.sin()
    for i in range(n_blocks):
        b = lambda n, i=i: p[f"blocks.{i}.{n}"]  # noqa: E731
        mod = (c @ b("adaLN_modulation.weight").T + b("adaLN_modulation.bias"))[:, None]
        sh_a, sc_a, g_a, sh_m, sc_m, g_m = mod.chunk(6, dim=2)
        skip = h
        y = _layer_norm(h, b("norm1.weight")) * (1 + sc_a) + sh_a
        qkv = (y @ b("attn_qkv.weight").T).reshape(B, S, 3, n_heads, d // n_heads)
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        q, k = _rotary(q, cos_h, sin_h), _rotary(k, cos_h, sin_h)
        q, k, v = (u.transpose(1, 2) for u in (q, k, v))  # [B, H, S, D]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // n_heads), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, S, d)
        h = skip + g_a * (y @ b("attn_out.weight").T)
        y = _layer_norm(h, b("norm2.weight")) * (1 + sc_m) + sh_m
        y = F.gelu(y @ b("mlp.0.weight").T + b("mlp.0.bias"), approximate="tanh")
        h = h + g_m * (y @ b("mlp.2.weight").T + b("mlp.2.bias"))
    o = "output_layer."
    shift, scale = (c @ p[o + "adaLN_modulation.weight"].T + p[o + "adaLN_modulation.bias"])[:, None].chunk(2, dim=2)
    y = _layer_norm(h, p[o + "norm_final.weight"]) * (1 + scale) + shift
    return y @ p[o + "linear.weight"].T + p[o + "linear.bias"]
