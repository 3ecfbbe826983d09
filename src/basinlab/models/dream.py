"""Dream (Dream-org; Dream-v0 7B, and the Dream-architecture DiffuCoder) as a model family loaded without its
remote code (SPEC 2b, 2c).

Dream's network is Qwen2 (Qwen2.5's weights and key names: ``model.embed_tokens``, ``model.layers.N.self_attn.
{q,k,v,o}_proj`` with q/k/v biases, ``mlp.{gate,up,down}_proj``, ``input_layernorm``, ``post_attention_layernorm``,
``model.norm``, ``lm_head``) run with full attention, so ``transformers``' Qwen2 computes it key for key. Its logits
are *shifted*, as Qwen2's next-token head it was initialised from: the prediction for position ``l`` is read at
``l - 1``, position 0 at 0 (Dream's own evaluation takes ``cat([logits[:, :1], logits[:, :-1]])``; SPEC 2c). The
mask is ``mask_token_id`` (151666 in the released checkpoints), inside the vocabulary; not time-conditioned.
"""

from __future__ import annotations

from typing import Any

from basinlab.errors import BasinlabError
from basinlab.models.masked_lm import CONFIG, KeyMap, MaskedLMFamily

#: the released checkpoints' mask id (the one read is always config.json's own ``mask_token_id``)
MASK_ID = 151666

_LAYER = "model.layers.{i}."
_MODULES = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
            "mlp.up_proj", "mlp.down_proj", "input_layernorm", "post_attention_layernorm")


class DreamFamily(MaskedLMFamily):
    """Dream checkpoints (``config.json`` ``model_type: Dream``) on ``transformers``' Qwen2 modules."""

    name = "dream"
    model_types = ("Dream", "dream")
    shift = True
    keys = KeyMap([("model.embed_tokens", "lm.model.embed_tokens"), ("model.norm", "lm.model.norm"),
                   ("lm_head", "lm.lm_head")] + [(_LAYER + m, "lm." + _LAYER + m) for m in _MODULES])

    def check_config(self, cfg: dict[str, Any], where: Any) -> None:
        for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size"):
            if not isinstance(cfg.get(key), int) or cfg[key] < 1:
                raise BasinlabError(f"{where}/{CONFIG}: {key} must be a positive integer, got {cfg.get(key)!r}")
        if cfg.get("use_sliding_window"):
            raise BasinlabError(f"{where}/{CONFIG}: use_sliding_window=true is a Dream variant basinlab does not run")
        if cfg.get("rope_scaling"):
            raise BasinlabError(f"{where}/{CONFIG}: rope_scaling={cfg['rope_scaling']!r} is not supported "
                                "(only the default rotary embedding)")

    def hf_config(self, cfg: dict[str, Any]) -> Any:
        from transformers import Qwen2Config

        heads = int(cfg["num_attention_heads"])
        return Qwen2Config(
            vocab_size=int(cfg["vocab_size"]), hidden_size=int(cfg["hidden_size"]),
            intermediate_size=int(cfg["intermediate_size"]), num_hidden_layers=int(cfg["num_hidden_layers"]),
            num_attention_heads=heads, num_key_value_heads=int(cfg.get("num_key_value_heads") or heads),
            hidden_act=str(cfg.get("hidden_act", "silu")),
            max_position_embeddings=int(cfg.get("max_position_embeddings") or 32768),
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            rope_parameters={"rope_type": "default", "rope_theta": float(cfg.get("rope_theta", 10000.0))},
            use_sliding_window=False, attention_dropout=0.0, use_cache=False,
            pad_token_id=None, bos_token_id=None, eos_token_id=None,
        )

    def causal_lm_class(self) -> type:
        from transformers import Qwen2ForCausalLM

        return Qwen2ForCausalLM

    def tied_keys(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        return ("lm_head.weight",) if cfg.get("tie_word_embeddings") else ()


#: the Dream family (``FAMILIES["dream"]``)
FAMILY = DreamFamily()
