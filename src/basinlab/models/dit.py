"""The denoising network: a bidirectional DiT with adaLN-zero conditioning on ``sigma_t`` (SPEC 2, 4).

As plain as nanoGPT's ``model.py``. ``DiT.forward(z_t, sigma_t)`` returns logits ``[B, L, V]`` whose softmax is
``x_theta``, the LEAVE-ONE-OUT prediction of each token (SPEC 4): nothing in the architecture enforces it, the
training objective teaches it (the network sees every noisy token, the current one included).

- token embedding (untied from the output head), no absolute positions: rotary embeddings in every attention;
- conditioning ``c = SiLU(MLP(sinusoidal(sigma_t)))``, with ``sigma_t = -log alpha_t`` (SPEC 2); the SiLU is
  applied once, here, as Duo does (DiT applies it once inside its adaLN layers instead);
- blocks: ``x += gate * Attn(modulate(LN(x)))``, ``x += gate * MLP(modulate(LN(x)))`` where shift, scale and
  gate come from ``c`` through a zero-initialised linear layer (adaLN-zero, as DiT), so every block starts as
  the identity; ``LN`` has a learnable gain, no bias and eps 1e-5, exactly Duo's ``LayerNorm``, so that Duo and
  UDLM checkpoints load into this network without any change to their weights (``basinlab.interop.duo``);
- final adaLN (zero-initialised) and a zero-initialised linear head, as Duo: at initialisation ``x_theta`` is
  uniform;
- attention through ``torch.nn.functional.scaled_dot_product_attention`` (bidirectional, no mask);
- dropout on the residual branches only (as Duo: none on the embedding), off in ``eval()``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

#: width of the sinusoidal embedding of ``sigma_t`` before the conditioning MLP (DiT's frequency_embedding_size)
FREQ_DIM = 256


def count_flops_per_token(
    n_params_per_token: int,
    n_layer: int,
    d_model: int,
    seq_len: int,
    n_params_per_sequence: int = 0,
    training: bool = True,
) -> float:
    """FLOPs per token of one training step (forward + backward), as in PaLM appendix B / nanoGPT's MFU.

    ``6 N + 12 n_layer d_model L`` for training, where ``N`` counts the parameters of the per-token matrix
    products (the blocks' attention and MLP weights and the untied output head; the input embedding is a lookup
    and costs nothing) and ``12 n_layer d L`` is the attention's ``QK^T`` and ``AV`` products (2 matmuls x 2
    FLOPs per multiply-add x d x L, times 3 for forward + backward). Parameters applied once per *sequence*
    (the adaLN modulation and the ``sigma_t`` MLP) add ``6 N_seq / L``: negligible, counted for honesty.
    ``training=False`` gives the forward pass alone, one third of that.
    """
    flops = 6.0 * n_params_per_token + 12.0 * n_layer * d_model * seq_len + 6.0 * n_params_per_sequence / seq_len
    return flops if training else flops / 3.0


def timestep_embedding(sigma: torch.Tensor, dim: int = FREQ_DIM, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[cos(sigma w_k), sin(sigma w_k)]`` of ``sigma_t`` ``[B]`` -> float32 ``[B, dim]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=sigma.device) / half)
    args = sigma.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """``MLP(sinusoidal(sigma_t))``; ``DiT.forward`` applies SiLU once to it to get ``c``, the adaLN input."""

    def __init__(self, d_cond: int, freq_dim: int = FREQ_DIM) -> None:
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, d_cond), nn.SiLU(), nn.Linear(d_cond, d_cond))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(sigma, self.freq_dim))


class Rotary(nn.Module):
    """Rotary position embeddings (RoFormer, GPT-NeoX "rotate half" layout) on ``[B, H, L, head_dim]``.

    The score ``<R_m q, R_n k>`` depends on positions only through ``n - m``.
    """

    def __init__(self, head_dim: int, seq_len: int, base: float = 10_000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary embeddings need an even head dimension, got {head_dim}")
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self._build(seq_len)

    def _build(self, seq_len: int) -> None:
        pos = torch.arange(seq_len, dtype=torch.float32, device=self.inv_freq.device)
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat([freqs, freqs], dim=-1)  # [L, head_dim]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def forward(self, q: torch.Tensor, k: torch.Tensor, offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        L = q.shape[-2]
        if offset + L > self.cos.shape[0]:
            self._build(offset + L)
        cos = self.cos[offset : offset + L]
        sin = self.sin[offset : offset + L]
        return _rotate(q, cos, sin), _rotate(k, cos, sin)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """``x cos + rotate_half(x) sin`` in float32, back in ``x``'s dtype."""
    xf = x.float()
    x1, x2 = xf.chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (xf * cos + rot * sin).to(x.dtype)


class LayerNorm(nn.Module):
    """Layer norm with a learnable gain and no bias, computed in float32 (Duo's ``LayerNorm``, eps 1e-5)."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.layer_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return (y * self.weight.float()).to(x.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x (1 + scale) + shift`` with per-sequence ``shift``, ``scale`` ``[B, 1, d]``."""
    return x * (1 + scale) + shift


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention with rotary positions, through SDPA (no mask: every token sees all)."""

    def __init__(self, d_model: int, n_head: int, seq_len: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_dim = d_model // n_head
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.rotary = Rotary(self.head_dim, seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.rotary(q, k)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=False)
        return self.proj(y.transpose(1, 2).reshape(B, L, d))


class MLP(nn.Module):
    def __init__(self, d_model: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.fc = nn.Linear(d_model, mlp_ratio * d_model)
        self.proj = nn.Linear(mlp_ratio * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Pre-norm transformer block with adaLN-zero: shift/scale/gate for attention and MLP from ``c``."""

    def __init__(self, d_model: int, n_head: int, d_cond: int, seq_len: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = LayerNorm(d_model)
        self.attn = SelfAttention(d_model, n_head, seq_len)
        self.norm2 = LayerNorm(d_model)
        self.mlp = MLP(d_model)
        self.adaLN = nn.Linear(d_cond, 6 * d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        mod = self.adaLN(c)[:, None, :]
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = mod.chunk(6, dim=-1)
        x = x + gate_a * self.dropout(self.attn(modulate(self.norm1(x), shift_a, scale_a)))
        x = x + gate_m * self.dropout(self.mlp(modulate(self.norm2(x), shift_m, scale_m)))
        return x


class FinalLayer(nn.Module):
    """Final adaLN (shift, scale) and the linear head to ``V`` logits, both zero-initialised."""

    def __init__(self, d_model: int, d_cond: int, vocab_size: int) -> None:
        super().__init__()
        self.norm = LayerNorm(d_model)
        self.adaLN = nn.Linear(d_cond, 2 * d_model)
        self.head = nn.Linear(d_model, vocab_size)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.adaLN(c)[:, None, :].chunk(2, dim=-1)
        return self.head(modulate(self.norm(x), shift, scale))


class DiT(nn.Module):
    """``DiT(z_t [B, L] long, sigma_t [B]) -> logits [B, L, V]``; ``log_softmax`` of them is ``log x_theta``.

    ``seq_len`` only sizes the rotary cache (longer inputs extend it). ``d_cond`` is the width of ``c``.
    ``vocab_size`` is the network's vocabulary (``V + 1`` for a masked process, whose ``[MASK]`` is an input and an
    output). ``time_conditioning=False`` conditions on ``sigma = 0`` whatever the time (MDLM's OpenWebText model).
    """

    def __init__(
        self,
        vocab_size: int,
        seq_len: int,
        n_layer: int = 4,
        d_model: int = 128,
        n_head: int = 4,
        d_cond: int = 64,
        dropout: float = 0.0,
        time_conditioning: bool = True,
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model={d_model} must be a multiple of n_head={n_head}")
        self.vocab_size = int(vocab_size)
        self.seq_len = int(seq_len)
        self.n_layer, self.d_model, self.n_head, self.d_cond = n_layer, d_model, n_head, d_cond
        self.dropout_p = float(dropout)
        self.time_conditioning = bool(time_conditioning)
        self.embed = nn.Embedding(vocab_size, d_model)
        self.sigma_map = TimestepEmbedder(d_cond)
        self.blocks = nn.ModuleList(DiTBlock(d_model, n_head, d_cond, seq_len, dropout) for _ in range(n_layer))
        self.final = FinalLayer(d_model, d_cond, vocab_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT initialisation: Xavier linears, N(0, 0.02) time MLP, adaLN-zero, zero head (as Duo)."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.embed.weight, std=0.02)
        for lin in (self.sigma_map.mlp[0], self.sigma_map.mlp[2]):
            nn.init.normal_(lin.weight, std=0.02)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN.weight)
            nn.init.zeros_(block.adaLN.bias)
        nn.init.zeros_(self.final.adaLN.weight)
        nn.init.zeros_(self.final.adaLN.bias)
        nn.init.zeros_(self.final.head.weight)
        nn.init.zeros_(self.final.head.bias)

    def forward(self, z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, L, V]`` for noisy tokens ``z`` (long ``[B, L]``) at noise level ``sigma`` (``[B]``)."""
        sigma = sigma.to(self.embed.weight.device)
        if not self.time_conditioning:
            sigma = torch.zeros_like(sigma)
        c = F.silu(self.sigma_map(sigma))
        x = self.embed(z)  # no dropout on the embedding: Duo has none (only on the residual branches)
        for block in self.blocks:
            x = block(x, c)
        return self.final(x, c)

    # ---- accounting -------------------------------------------------------------------------------------------

    def num_params(self, non_embedding: bool = False) -> int:
        """All parameters, or without the input token embedding (the output head is untied and kept)."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def param_groups(self) -> dict[str, int]:
        """Parameter counts by role: ``embedding``, ``blocks`` (attention + MLP), ``norm`` (LayerNorm gains),
        ``adaln``, ``cond``, ``head``."""
        groups = {"embedding": self.embed.weight.numel(), "blocks": 0, "norm": 0, "adaln": 0, "cond": 0, "head": 0}
        for name, p in self.named_parameters():
            if name.startswith("embed."):
                continue
            if ".norm" in name or name.startswith("final.norm"):
                groups["norm"] += p.numel()
            elif ".adaLN." in name or name.startswith("final.adaLN"):
                groups["adaln"] += p.numel()
            elif name.startswith("sigma_map."):
                groups["cond"] += p.numel()
            elif name.startswith("final.head"):
                groups["head"] += p.numel()
            else:
                groups["blocks"] += p.numel()
        return groups

    def flops_per_token(self, seq_len: int | None = None, training: bool = True) -> float:
        """FLOPs per token of a training step (or forward only), see :func:`count_flops_per_token`."""
        g = self.param_groups()
        return count_flops_per_token(
            n_params_per_token=g["blocks"] + g["head"],
            n_layer=self.n_layer,
            d_model=self.d_model,
            seq_len=seq_len or self.seq_len,
            n_params_per_sequence=g["adaln"] + g["cond"],
            training=training,
        )

    def arch(self) -> dict[str, int | float]:
        """The resolved architecture (what a checkpoint needs to rebuild the network)."""
        return {
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "n_layer": self.n_layer,
            "d_model": self.d_model,
            "n_head": self.n_head,
            "d_cond": self.d_cond,
            "dropout": self.dropout_p,
            "time_conditioning": self.time_conditioning,
        }

    def configure_optimizers(
        self, lr: float, betas: tuple[float, float], weight_decay: float, fused: bool = False
    ) -> torch.optim.AdamW:
        """AdamW with weight decay on the matrices only (embeddings, linears), none on biases and gains (as
        nanoGPT's ``configure_optimizers``)."""
        params = [p for p in self.parameters() if p.requires_grad]
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
        return torch.optim.AdamW(groups, lr=lr, betas=betas, **({"fused": True} if fused else {}))
