"""What ``probe.gen_ppl_model`` must be before any probe runs (SPEC 5, "Generative perplexity"; issue 25).

:func:`check_gen_ppl_model` refuses, in one line, a scorer directory that :mod:`basinlab.probes.gen_ppl` would only
fail on after every other probe (or, worse, score through a randomly initialised head): no ``config.json`` or one
that is not a JSON object, no weights file, an architecture that is not a causal LM (a BERT encoder), a context
shorter than the samples it must score, no tokenizer, a tokenizer without an EOS token (gen-PPL pads with it and
counts each sample's first EOS), and a tokenizer that cannot encode texts like the samples (fewer than two tokens
each, or nothing but its unknown token). It reads the config and the tokenizer only, never the weights.

A name that is not a directory is resolved before this check by whoever offers built-in scorers; here a
directory is checked.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from basinlab.errors import BasinlabError

#: files ``from_pretrained`` reads weights from (one of them must be there)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
#: files a tokenizer is read from (one of them must be there)
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "tekken.json")
#: config fields that give a causal LM's context, in the order transformers' families use them
CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "n_ctx", "max_sequence_length", "seq_length")
#: tokens per scored chunk of :mod:`basinlab.probes.gen_ppl` (the GPT-2 family's context)
CHUNK = 1024


def _fail(path: Any, why: str) -> BasinlabError:
    return BasinlabError(f"probe.gen_ppl_model '{path}' {why}")


def _config(p: Path, path: Any) -> dict[str, Any]:
    try:
        cfg = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _fail(path, f"has a config.json that is not JSON ({str(exc).splitlines()[0][:80]}); save the model "
                          "again with model.save_pretrained(DIR)") from None
    if not isinstance(cfg, dict):
        raise _fail(path, "has a config.json that is not a JSON object; save the model again with "
                          "model.save_pretrained(DIR)")
    return cfg


def _causal_names() -> set[str]:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    names: set[str] = set()
    for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values():
        names.update([v] if isinstance(v, str) else v)
    return names


def _check_architecture(cfg: dict[str, Any], path: Any) -> None:
    """A causal LM: its ``architectures`` (what ``save_pretrained`` records) name a causal-LM class; without
    them its ``model_type`` has one. Anything else would be scored through a randomly initialised head."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs:
        if not set(archs) & _causal_names():
            raise _fail(path, f"is a {', '.join(map(str, archs))}, not a causal language model (an encoder or "
                              "another head would be scored through a randomly initialised LM head); give a causal "
                              "LM such as GPT-2")
    elif cfg.get("model_type") not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise _fail(path, f"has model_type {cfg.get('model_type')!r}, which has no causal LM in transformers; give "
                          "a causal LM such as GPT-2")


def _check_context(cfg: dict[str, Any], path: Any, seq_len: int) -> None:
    ctx = next((cfg[k] for k in CONTEXT_FIELDS if isinstance(cfg.get(k), int) and not isinstance(cfg[k], bool)),
               None)
    need = min(int(seq_len), CHUNK)
    if ctx is not None and ctx < need:
        raise _fail(path, f"has a context of {ctx} tokens, shorter than the samples it scores (L = {seq_len}, "
                          f"chunks of at most {CHUNK}); give a scorer with a context of at least {need}")


def _tokenizer(p: Path, path: Any) -> Any:
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        raise _fail(path, f"has no tokenizer (none of {', '.join(TOKENIZER_FILES[:3])}...); save one with "
                          "tokenizer.save_pretrained(DIR)")
    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, TypeError... for a missing tokenizer
        text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"has no tokenizer transformers can load ({text}); save one with "
                          "tokenizer.save_pretrained(DIR)") from None
    if not callable(tok) or not len(tok):
        raise _fail(path, "has no tokenizer transformers can load; save one with tokenizer.save_pretrained(DIR)")
    if tok.eos_token_id is None:
        raise _fail(path, "has a tokenizer without an EOS token (gen-PPL pads with it and counts each sample's "
                          "first EOS); set tokenizer.eos_token and save it again")
    return tok


def _check_encodes(tok: Any, texts: Sequence[str], path: Any, seq_len: int) -> None:
    """Texts like the samples must encode into at least two tokens (one scored) that are not all unknown."""
    try:
        ids = tok(list(texts), truncation=True, max_length=int(seq_len))["input_ids"]
    except Exception as exc:  # a tokenizer that cannot encode these characters at all
        text = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise _fail(path, f"cannot encode the samples' text ({text}); give a scorer whose tokenizer covers the "
                          "model's vocabulary") from None
    flat = [i for row in ids for i in row]
    unk = tok.unk_token_id
    if all(len(row) < 2 for row in ids) or (unk is not None and flat and all(i == unk for i in flat)):
        example = (texts[0][:40] + "...") if texts and len(texts[0]) > 40 else (texts[0] if texts else "")
        raise _fail(path, f"cannot encode the samples' text (e.g. '{example}' gives {len(ids[0]) if ids else 0} "
                          "token(s), or only its unknown token): no token would be scored; give a scorer whose "
                          "tokenizer covers the model's vocabulary")


def check_gen_ppl_model(path: str | os.PathLike, seq_len: int, texts: Sequence[str] | None = None) -> Path:
    """The scorer directory ``path``, refused in one line unless :mod:`basinlab.probes.gen_ppl` can score samples
    of length ``seq_len`` with it (module docstring); ``texts`` (decoded sequences of the model's data) must
    encode. Returns the directory."""
    from basinlab.probes.gen_ppl import check_scorer

    p = check_scorer(path)  # a directory with config.json, transformers installed
    cfg = _config(p, path)
    if not any((p / f).is_file() for f in WEIGHT_FILES):
        raise _fail(path, f"holds no weights ({' or '.join(WEIGHT_FILES[::2])}); save them with "
                          "model.save_pretrained(DIR)")
    _check_architecture(cfg, path)
    _check_context(cfg, path, seq_len)
    tok = _tokenizer(p, path)
    if texts:
        _check_encodes(tok, texts, path, seq_len)
    return p


__all__ = ["check_gen_ppl_model"]
