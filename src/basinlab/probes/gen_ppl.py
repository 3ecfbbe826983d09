"""Generative perplexity and unigram entropy of generated samples (SPEC 5, "Generative perplexity").

As the study's code (and Duo's and MDLM's ``metrics.py``) computes them:

- ``gen_ppl``: the samples are decoded to text, retokenised with the *scorer's* tokenizer (a local Hugging Face
  causal LM directory, ``probe.gen_ppl_model``, or the built-in ``smollm2`` of :mod:`basinlab.probes.scorers`;
  GPT-2 large in the papers; nothing is downloaded), padded with its
  EOS when it has no PAD and truncated to the diffusion model's length ``L``, and scored in chunks of the scorer's
  context (1024 tokens). Each token after the first is scored by ``-log p(token | prefix)``; the tokens counted are
  every non-EOS token and the first EOS of a row (padding after it is not). ``gen_ppl = exp(Σ NLL / Σ counted)``
  (``gen_nll`` its log), its interval from the per-sample NLLs weighted by their counted tokens, through ``exp``;
- ``sample_entropy``: per sample, the entropy (nats) of the unigram distribution of its own token ids (every
  position), ``-Σ_v (c_v / L) log(c_v / L)``; mean over samples.

Unlike the study's code every sample is scored (it drops the last partial batch).
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch

from basinlab.errors import BasinlabError
from basinlab.probes.results import ProbeResult, summarize
from basinlab.probes.scorers import INSTALL_HINT, resolve_scorer

log = logging.getLogger(__name__)
PROBE = "gen_ppl"
#: Tokens per scored chunk (the GPT-2 family's context).
CONTEXT = 1024


def check_scorer(path: str | os.PathLike) -> Path:
    """``probe.gen_ppl_model`` must be a built-in name (``smollm2``, :mod:`basinlab.probes.scorers`) or a local
    directory holding a Hugging Face model and tokenizer, and the ``transformers`` package must be installed; one
    clear line otherwise (checked before any probe runs). Returns the directory."""
    resolved = resolve_scorer(path)
    if resolved is None:
        raise BasinlabError(f"probe.gen_ppl_model={path}: no scorer model is installed; {INSTALL_HINT}")
    p = Path(resolved).expanduser()
    if not p.is_dir() or not (p / "config.json").is_file():
        raise BasinlabError(f"probe.gen_ppl_model '{path}' is not a local Hugging Face model directory (no "
                            "config.json); save one with model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)")
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise BasinlabError("probe.gen_ppl_model needs the transformers package: pip install 'basinlab[genppl]'") \
            from None
    return p


def unigram_entropy(samples: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each row's unigram distribution of token ids, float64 ``[S]``."""
    out = torch.empty(samples.shape[0], dtype=torch.float64)
    for i, row in enumerate(samples):
        _, counts = torch.unique(row, return_counts=True)
        out[i] = torch.special.entr(counts.to(torch.float64) / counts.sum()).sum()
    return out


def load_scorer(path: str | os.PathLike, device: torch.device | str = "cpu") -> tuple:
    """The tokenizer (padding with its EOS when it has no PAD) and the causal LM (eval mode, on ``device``) of the
    scorer ``path`` (:func:`check_scorer`); logs the seconds it took (docs/PERFORMANCE.md: under 5 s for ``smollm2``
    once cached)."""
    t0 = time.perf_counter()
    p = check_scorer(path)
    import transformers

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    tok = transformers.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True).to(device).eval()
    except Exception as exc:  # damaged or mismatched weights (safetensors, torch, transformers errors): one line
        text = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise BasinlabError(f"probe.gen_ppl_model '{path}': cannot load its weights ({text})") from None
    log.info("gen_ppl scorer %s loaded in %.1f s", p, time.perf_counter() - t0)
    return tok, model


def score_texts(texts: list[str], path: str | os.PathLike, max_length: int, batch_size: int = 32,
                device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Per text: the summed NLL of its counted tokens and their number (float64 ``[S]`` each) under the causal LM
    at ``path`` (module docstring)."""
    tok, model = load_scorer(path, device)
    eos = tok.eos_token_id
    nll = torch.zeros(len(texts), dtype=torch.float64)
    count = torch.zeros(len(texts), dtype=torch.float64)
    with torch.inference_mode():
        for b0 in range(0, len(texts), batch_size):
            enc = tok(texts[b0:b0 + batch_size], return_tensors="pt", return_token_type_ids=False, padding=True,
                      truncation=True, max_length=max_length)
            ids, attn = enc["input_ids"].to(device), enc["attention_mask"].to(device)
            for chunk, mask in zip(ids.split(CONTEXT, dim=-1), attn.split(CONTEXT, dim=-1), strict=True):
                logits = model(chunk, attention_mask=mask).logits.to(torch.float64)
                token_nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), chunk[:, 1:],
                                                              reduction="none")
                first_eos = (chunk == eos).cumsum(-1) == 1
                counted = (first_eos | (chunk != eos))[:, 1:].to(torch.float64)
                nll[b0:b0 + chunk.shape[0]] += (token_nll * counted).sum(1).cpu()
                count[b0:b0 + chunk.shape[0]] += counted.sum(1).cpu()
    return nll, count


def gen_ppl(samples: torch.Tensor, texts: list[str], scorer: str | os.PathLike, *, batch_size: int = 32,
            max_length: int | None = None, device: torch.device | str = "cpu") -> ProbeResult:
    """Rows ``gen_ppl``, ``gen_nll`` and ``sample_entropy`` (set ``generated``) of ``samples [S, L]`` (token ids of
    the diffusion model) and ``texts`` (their decoded text). ``.arrays``: ``nll``, ``n_tokens``,
    ``sample_entropy`` ``[S]``."""
    if len(texts) != samples.shape[0]:
        raise BasinlabError(f"gen_ppl: {len(texts)} texts for {samples.shape[0]} samples")
    nll, count = score_texts(texts, scorer, max_length or samples.shape[1], batch_size, device)
    if not float(count.sum()):
        raise BasinlabError(f"probe.gen_ppl_model '{scorer}' encodes every sample into fewer than two tokens: no "
                            "token was scored; give a scorer whose tokenizer covers the model's vocabulary")
    res = ProbeResult()
    per = torch.where(count > 0, nll / count.clamp_min(1), math.nan)
    stats = summarize(per, weights=count)
    total = float(count.sum())
    stats["value"] = float(nll.sum()) / total if total > 0 else None
    res.add(PROBE, "generated", None, "gen_nll", stats)
    ppl = {"value": None if stats["value"] is None else math.exp(stats["value"]), "n": stats["n"]}
    if stats.get("ci_low") is not None:
        ppl.update(ci_low=math.exp(stats["ci_low"]), ci_high=math.exp(stats["ci_high"]))
    res.add(PROBE, "generated", None, "gen_ppl", ppl)
    ent = unigram_entropy(samples.cpu())
    res.add(PROBE, "generated", None, "sample_entropy", summarize(ent))
    res.arrays.update(nll=nll, n_tokens=count, sample_entropy=ent)
    return res
