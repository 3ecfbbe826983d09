"""LLaDA (GSAI-ML; 8B Base/Instruct, 1.5) as a model family loaded without its remote code (SPEC 2b, 2c).

LLaDA's network is OLMo's "llama" block run with full attention: per block ``x += attn_out(attn(rope(q_proj,
k_proj), v_proj)(attn_norm(x)))`` and ``x += ff_out(silu(ff_proj(h)) * up_proj(h))`` with ``h = ff_norm(x)``
(RMS norms, rotary embedding with ``rope_theta``, grouped heads ``n_kv_heads``), then ``ln_f`` and the head
``ff_out`` (``wte`` when ``weight_tying``). That is ``transformers``' Llama, key for key::

    model.transformer.wte / ln_f / ff_out             -> embed_tokens / norm / lm_head
    model.transformer.blocks.N.q_proj, k_proj, v_proj -> layers.N.self_attn.q_proj, k_proj, v_proj
    model.transformer.blocks.N.attn_out               -> layers.N.self_attn.o_proj
    model.transformer.blocks.N.ff_proj, up_proj, ff_out -> layers.N.mlp.gate_proj, up_proj, down_proj
    model.transformer.blocks.N.attn_norm, ff_norm     -> layers.N.input_layernorm, post_attention_layernorm

The mask is ``mask_token_id`` (126336 in the released checkpoints), inside the vocabulary; logits are not shifted;
not time-conditioned. A ``config.json`` asking for a variant this mapping does not compute exactly (biases, ALiBi,
another block or norm type, QK norms, embedding or logit scaling, block groups) is refused in one line.
"""

from __future__ import annotations

from typing import Any

from basinlab.errors import BasinlabError
from basinlab.models.masked_lm import CONFIG, KeyMap, MaskedLMFamily

#: the released checkpoints' mask id (the one read is always config.json's own ``mask_token_id``)
MASK_ID = 126336

#: config.json settings the mapping onto Llama computes exactly: (key, accepted values; absent is accepted)
SUPPORTED = (
    ("block_type", ("llama",)),
    ("layer_norm_type", ("rms",)),
    ("activation_type", ("silu", "swiglu")),
    ("rope", (True,)),
    ("alibi", (False,)),
    ("include_bias", (False,)),
    ("include_qkv_bias", (False,)),
    ("attention_layer_norm", (False,)),
    ("input_emb_norm", (False,)),
    ("scale_logits", (False,)),
    ("clip_qkv", (None,)),
    ("block_group_size", (1,)),
    ("multi_query_attention", (None, False)),
    ("layer_norm_with_affine", (True,)),
    ("bias_for_layer_norm", (None, False)),
)


class LLaDAFamily(MaskedLMFamily):
    """LLaDA checkpoints (``config.json`` ``model_type: llada``) on ``transformers``' Llama modules."""

    name = "llada"
    model_types = ("llada",)
    keys = KeyMap([
        ("model.transformer.wte", "lm.model.embed_tokens"),
        ("model.transformer.ln_f", "lm.model.norm"),
        ("model.transformer.ff_out", "lm.lm_head"),
        ("model.transformer.blocks.{i}.q_proj", "lm.model.layers.{i}.self_attn.q_proj"),
        ("model.transformer.blocks.{i}.k_proj", "lm.model.layers.{i}.self_attn.k_proj"),
        ("model.transformer.blocks.{i}.v_proj", "lm.model.layers.{i}.self_attn.v_proj"),
        ("model.transformer.blocks.{i}.attn_out", "lm.model.layers.{i}.self_attn.o_proj"),
        ("model.transformer.blocks.{i}.ff_proj", "lm.model.layers.{i}.mlp.gate_proj"),
        ("model.transformer.blocks.{i}.up_proj", "lm.model.layers.{i}.mlp.up_proj"),
        ("model.transformer.blocks.{i}.ff_out", "lm.model.layers.{i}.mlp.down_proj"),
        ("model.transformer.blocks.{i}.attn_norm", "lm.model.layers.{i}.input_layernorm"),
        ("model.transformer.blocks.{i}.ff_norm", "lm.model.layers.{i}.post_attention_layernorm"),
    ])

    def check_config(self, cfg: dict[str, Any], where: Any) -> None:
        for key, ok in SUPPORTED:
            if key in cfg and cfg[key] not in ok:
                raise BasinlabError(f"{where}/{CONFIG}: {key}={cfg[key]!r} is a LLaDA variant basinlab does not run "
                                    f"(supported: {', '.join(map(repr, ok))})")
        for key in ("d_model", "n_heads", "n_layers"):
            if not isinstance(cfg.get(key), int) or cfg[key] < 1:
                raise BasinlabError(f"{where}/{CONFIG}: {key} must be a positive integer, got {cfg.get(key)!r}")
        if cfg["d_model"] % cfg["n_heads"]:
            raise BasinlabError(f"{where}/{CONFIG}: d_model={cfg['d_model']} is not a multiple of "
                                f"n_heads={cfg['n_heads']}")
        emb = cfg.get("embedding_size") or cfg.get("vocab_size")
        if isinstance(emb, int) and isinstance(cfg.get("vocab_size"), int) and emb < cfg["vocab_size"]:
            raise BasinlabError(f"{where}/{CONFIG}: embedding_size={emb} is smaller than vocab_size")

    def hf_config(self, cfg: dict[str, Any]) -> Any:
        from transformers import LlamaConfig

        d, heads = int(cfg["d_model"]), int(cfg["n_heads"])
        hidden = cfg.get("mlp_hidden_size") or int(cfg.get("mlp_ratio", 4) * d)
        return LlamaConfig(
            vocab_size=int(cfg.get("embedding_size") or cfg["vocab_size"]), hidden_size=d,
            intermediate_size=int(hidden), num_hidden_layers=int(cfg["n_layers"]), num_attention_heads=heads,
            num_key_value_heads=int(cfg.get("n_kv_heads") or heads), hidden_act="silu",
            max_position_embeddings=int(cfg.get("max_sequence_length") or 4096),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-5)), tie_word_embeddings=bool(cfg.get("weight_tying")),
            rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
            attention_bias=False, mlp_bias=False, attention_dropout=0.0, use_cache=False,
            pad_token_id=None, bos_token_id=None, eos_token_id=None,
        )

    def causal_lm_class(self) -> type:
        from transformers import LlamaForCausalLM

        return LlamaForCausalLM

    def tied_keys(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        return ("model.transformer.ff_out.weight",) if cfg.get("weight_tying") else ()


#: the LLaDA family (``FAMILIES["llada"]``)
FAMILY = LLaDAFamily()
