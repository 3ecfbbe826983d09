"""An independent float32 reference of MDLM's ``Diffusion.forward(x, sigma)`` with the SUBS parameterisation
(kuleshov-group/mdlm: ``models/dit.py`` ``DIT.forward``, ``diffusion.py`` ``_process_sigma`` and
``_subs_parameterization``).

Written from a reading of MDLM's code, with MDLM's state-dict key names, as plain functions over a dict of tensors:
no basinlab import; the qkv tensor packed as ``b s three h d`` as MDLM rearranges it; the rotary cache built as
MDLM's ``Rotary`` builds it (``cat(freqs, freqs)``, cos 1 / sin 0 on v) and applied as flash-attn's
``apply_rotary_emb_qkv_`` (non-interleaved, on q and k, from the first half of the cache); explicit attention;
``F.layer_norm`` without affine then ``* weight``; MDLM's ``-1e6`` for "minus infinity". MDLM's parameters have
Duo's names and shapes, so the random parameters come from :mod:`tests.interop.duo_reference`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

NEG_INFINITY = -1000000.0  # MDLM's self.neg_infinity


def _rotary_cache(seq_len: int, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MDLM's ``Rotary.forward``: cos/sin ``[1, S, 3, 1, D]``, identity on v."""
    t = torch.arange(seq_len).type_as(inv_freq)
    freqs = torch.einsum("i,j->ij", t, inv_freq.clone())
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
    sin = emb.sin()[None, :, None, None, :].repeat(1, 1, 3, 1, 1)
    cos[:, :, 2, :, :].fill_(1.0)
    sin[:, :, 2, :, :].fill_(0.0)
    return cos, sin


def _apply_rotary_qkv(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``apply_rotary_pos_emb`` of MDLM: flash-attn's ``apply_rotary_emb_qkv_(qkv, cos[.., :D/2], sin[.., :D/2])``,
    i.e. ``x * cos + rotate_half(x) * sin`` on q and k with the half tables repeated, v untouched."""
    cos_h = cos[0, :, 0, 0, : cos.shape[-1] // 2]
    sin_h = sin[0, :, 0, 0, : sin.shape[-1] // 2]
    c = torch.cat([cos_h, cos_h], -1)[None, :, None, :]
    s = torch.cat([sin_h, sin_h], -1)[None, :, None, :]
    out = qkv.clone()
    for i in (0, 1):
        x = qkv[:, :, i]
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        out[:, :, i] = x * c + torch.cat((-x2, x1), dim=-1) * s
    return out


def _layer_norm(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(x.float(), [x.shape[-1]]) * w[None, None, :]


def _timestep_embedding(t: torch.Tensor, dim: int = 256, max_period: int = 10000) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def dit_forward(p: dict, n_heads: int, indices: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """MDLM's ``DIT.forward(indices, sigma)`` in eval mode (dropout off): logits ``[B, S, V + 1]``."""
    n_blocks = len({k.split(".")[1] for k in p if k.startswith("blocks.")})
    x = p["vocab_embed.embedding"][indices]
    h = _timestep_embedding(sigma) @ p["sigma_map.mlp.0.weight"].T + p["sigma_map.mlp.0.bias"]
    c = F.silu(F.silu(h) @ p["sigma_map.mlp.2.weight"].T + p["sigma_map.mlp.2.bias"])
    B, S, d = x.shape
    cos, sin = _rotary_cache(S, p["rotary_emb.inv_freq"])
    for i in range(n_blocks):
        w = {k[len(f"blocks.{i}."):]: v for k, v in p.items() if k.startswith(f"blocks.{i}.")}
        mod = (c @ w["adaLN_modulation.weight"].T + w["adaLN_modulation.bias"])[:, None]
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=2)
        x_skip = x
        y = _layer_norm(x, w["norm1.weight"]) * (1 + scale_msa) + shift_msa
        qkv = (y @ w["attn_qkv.weight"].T).reshape(B, S, 3, n_heads, d // n_heads)  # 'b s (three h d)'
        qkv = _apply_rotary_qkv(qkv, cos, sin)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))  # [B, H, S, D]
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // n_heads), dim=-1)  # flash-attn's scale
        y = (att @ v).transpose(1, 2).reshape(B, S, d)
        x = x_skip + gate_msa * (y @ w["attn_out.weight"].T)
        y = _layer_norm(x, w["norm2.weight"]) * (1 + scale_mlp) + shift_mlp
        y = F.gelu(y @ w["mlp.0.weight"].T + w["mlp.0.bias"], approximate="tanh") @ w["mlp.2.weight"].T
        x = x + gate_mlp * (y + w["mlp.2.bias"])
    o = {k[len("output_layer."):]: v for k, v in p.items() if k.startswith("output_layer.")}
    shift, scale = (c @ o["adaLN_modulation.weight"].T + o["adaLN_modulation.bias"])[:, None].chunk(2, dim=2)
    y = _layer_norm(x, o["norm_final.weight"]) * (1 + scale) + shift
    return y @ o["linear.weight"].T + o["linear.bias"]


def process_sigma(sigma: torch.Tensor, time_conditioning: bool) -> torch.Tensor:
    """MDLM's ``_process_sigma``: squeeze, and zeros without time conditioning."""
    if sigma.ndim > 1:
        sigma = sigma.squeeze(-1)
    if not time_conditioning:
        sigma = torch.zeros_like(sigma)
    return sigma


def subs_parameterization(logits: torch.Tensor, xt: torch.Tensor, mask_index: int) -> torch.Tensor:
    """MDLM's ``_subs_parameterization``, line by line."""
    logits = logits.clone()
    logits[:, :, mask_index] += NEG_INFINITY
    logits = logits - torch.logsumexp(logits, dim=-1, keepdim=True)
    unmasked_indices = xt != mask_index
    logits[unmasked_indices] = NEG_INFINITY
    logits[unmasked_indices, xt[unmasked_indices]] = 0
    return logits


def mdlm_forward(p: dict, n_heads: int, x: torch.Tensor, sigma: torch.Tensor, time_conditioning: bool,
                 mask_index: int) -> torch.Tensor:
    """MDLM's ``Diffusion.forward(x, sigma)`` with ``parameterization: subs``: log-probabilities ``[B, S, V + 1]``."""
    sigma = process_sigma(sigma, time_conditioning)
    logits = dit_forward(p, n_heads, x, sigma)
    return subs_parameterization(logits, x, mask_index)
