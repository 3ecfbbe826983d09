"""Tiny local Hugging Face models for the gen-PPL scorer checks (issue 25): built with transformers' own classes
and saved with save_pretrained; nothing is downloaded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

WORDS = [str(i) for i in range(12)]
EOS = "<|endoftext|>"


def _tokenizer(words: list[str], eos: str | None = EOS, unk: str = EOS):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {w: i for i, w in enumerate(dict.fromkeys([unk, *([eos] if eos else []), *words]))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    kw = {"eos_token": eos} if eos else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, unk_token=unk, **kw), len(vocab)


def _gpt2(vocab: int, n_positions: int = 64):
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=vocab, n_positions=n_positions, n_embd=16,
                                                                n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0))


def build_scorers(base: Path) -> dict[str, str]:
    """``{NAME}`` -> a scorer directory: GOOD, and each way of being unusable."""
    import transformers

    out: dict[str, str] = {}

    def save(name: str, model, tok) -> Path:
        p = base / name.lower()
        model.save_pretrained(p)
        if tok is not None:
            tok.save_pretrained(p)
        out["{" + name + "}"] = str(p)
        return p

    tok, n = _tokenizer(WORDS)
    good = save("GOOD", _gpt2(n), tok)
    shutil.copytree(good, base / "good-copy")
    out["{GOOD2}"] = str(base / "good-copy")
    (save("NOWEIGHTS", _gpt2(n), tok) / "model.safetensors").unlink()
    save("NOTOK", _gpt2(n), None)
    noeos, n2 = _tokenizer(WORDS, eos=None, unk="<unk>")
    save("NOEOS", _gpt2(n2), noeos)
    save("SHORTCTX", _gpt2(n, n_positions=4), tok)
    (save("BADJSON", _gpt2(n), tok) / "config.json").write_text("{'n_positions': 64,")
    (save("LISTJSON", _gpt2(n), tok) / "config.json").write_text(json.dumps([1, 2]))
    bert = transformers.BertModel(transformers.BertConfig(vocab_size=n, hidden_size=16, num_hidden_layers=1,
                                                          num_attention_heads=2, intermediate_size=32,
                                                          max_position_embeddings=64))
    save("BERT", bert, tok)
    letters, n3 = _tokenizer(["a", "b", "c"])
    save("NOENCODE", _gpt2(n3), letters)
    return out
