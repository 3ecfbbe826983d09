"""Token sequences for training and probing: the pool, the nested training subsets and the test set (SPEC 1).

``build_dataset(cfg)`` turns a ``DataConfig`` into a ``SequenceData``:

1. Text sources: the sentences are shuffled once by ``cfg.seed``; the first ones form the test part (``n_test``
   sentences in ``sentence`` mode; in ``wrap`` mode enough sentences for ``n_test`` windows, counted by
   whitespace words, a lower bound on tokens), the rest the training part. The tokeniser is trained on the
   training part only, then both parts are tokenised and cut into sequences of length ``L``:
   ``sentence``: ``[BOS] tokens [EOS] [PAD]...`` (tokens cut to ``L - 2``); ``wrap``: each sentence followed by
   ``[EOS]``, concatenated, cut into windows ``[BOS] + (L - 2) tokens + [EOS]``; the training windows are then
   shuffled (seeded). Sentence-level splitting keeps test text out of the tokeniser and the training windows.
2. Markov source: ``markov_pool`` i.i.d. sequences from ``MarkovSource`` drawn with a generator seeded by
   ``cfg.seed`` (already exchangeable, so no further shuffle); the first ``n_test`` are the test set.
3. Rows of the training part equal to any test row are dropped, so "unseen" means unseen. ``train(N)`` is
   ``train_pool[:N]``: subsets are nested.

Processed tensors are cached (``torch.save``, atomic) in ``<cache>/data/`` keyed by a hash of the fields that
determine them (not ``n_train``); ``<cache>`` is ``cfg.cache_dir``, else ``$BASINLAB_CACHE``, else
``~/.cache/basinlab``. Trained tokenisers are cached in ``<cache>/tokenizers/``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from basinlab.config import DATA_MODES, DataConfig, validate_data
from basinlab.data.corpora import cache_root, data_fingerprint, load_sentences, source_identity
from basinlab.data.markov import MarkovSource
from basinlab.data.tokenizer import Tokenizer, get_tokenizer, tokenizer_identity
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write, write_error

#: how a ``[MASK]`` of a masked model's corrupted input (an id ``>= V``, SPEC 2b) is displayed
MASK_TEXT = "[MASK]"

MODES = DATA_MODES
CACHE_FORMAT = 2  # 2: the blob holds the data fingerprint


@dataclass
class SequenceData:
    """The sequences of one data configuration (SPEC 1).

    ``train_pool`` ``[P, L]``: the training part of the pool, shuffled once; ``test`` ``[n_test, L]``: the fixed
    held-out set, disjoint from ``train_pool`` (no shared row). PAD/BOS/EOS ids are ``None`` for Markov data.
    """

    train_pool: torch.Tensor
    test: torch.Tensor
    vocab_size: int
    tokenizer: Tokenizer | None = None
    pad_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    source: MarkovSource | None = None
    n_train: int = 1024
    mode: str = "sentence"
    fingerprint: str | None = None  # sha256 of the raw corpus (``corpora.data_fingerprint``); a run records it

    @property
    def seq_len(self) -> int:
        """``L``."""
        return int(self.train_pool.shape[1])

    @property
    def pool_size(self) -> int:
        """``P``, the largest ``N`` available."""
        return int(self.train_pool.shape[0])

    def train(self, n: int | None = None) -> torch.Tensor:
        """The training subset ``D_N`` = the first ``N`` rows of the pool (nested, SPEC 1); ``N`` defaults to
        ``cfg.n_train``."""
        n = self.n_train if n is None else int(n)
        if n < 0:
            raise BasinlabError(f"N={n} must be >= 0")
        if n > self.pool_size:
            raise BasinlabError(
                f"N={n} exceeds the training pool of {self.pool_size} sequences; lower data.n_train or add data"
            )
        return self.train_pool[:n]

    def special_ids(self) -> list[int]:
        """PAD, BOS, EOS ids (empty for Markov data): the positions probes never count (SPEC 1)."""
        return [i for i in (self.pad_id, self.bos_id, self.eos_id) if i is not None]

    def real_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """Bool mask, same shape as ``seqs``: True on real tokens, False on PAD/BOS/EOS (all True for Markov)."""
        special = self.special_ids()
        if not special:
            return torch.ones_like(seqs, dtype=torch.bool)
        return ~torch.isin(seqs, torch.tensor(special, dtype=seqs.dtype, device=seqs.device))

    def attention_mask(self, seqs: torch.Tensor) -> torch.Tensor:
        """Bool mask, same shape as ``seqs``: False on PAD only (BOS and EOS count), the attention mask of the study's
        dataloader, over which its NELBO averages (the ``paper`` protocol; all True without PAD)."""
        if self.pad_id is None:
            return torch.ones_like(seqs, dtype=torch.bool)
        return seqs != self.pad_id

    def decode(self, seqs: torch.Tensor) -> list[str]:
        """Text of each row of ``seqs`` (``[B, L]`` or ``[L]``); Markov rows as space-separated states."""
        rows = seqs.detach().cpu().reshape(-1, seqs.shape[-1]).tolist()
        if self.tokenizer is None:
            return [" ".join(str(t) if t < self.vocab_size else MASK_TEXT for t in row) for row in rows]
        return [self._decode_text(row) for row in rows]

    def _decode_text(self, row: list[int]) -> str:
        """A row's text; ``[MASK]`` (an id ``>= V``: a masked model's corrupted input, SPEC 2b) shown as such."""
        parts, run = [], []
        for t in row + [None]:
            if t is not None and t < self.vocab_size:
                run.append(t)
                continue
            if run:
                parts.append(self.tokenizer.decode(run))
                run = []
            if t is not None:
                parts.append(MASK_TEXT)
        return " ".join(p for p in parts if p)

    def pieces(self, seq: torch.Tensor) -> list[str]:
        """One display string per position of ``seq`` ``[L]``: token pieces for text, state ids for Markov data."""
        ids = seq.detach().cpu().reshape(-1).tolist()
        if self.tokenizer is None:
            return [str(i) if i < self.vocab_size else MASK_TEXT for i in ids]
        if any(i >= self.vocab_size for i in ids):
            return [p if i < self.vocab_size else MASK_TEXT
                    for i, p in zip(ids, self.tokenizer.pieces([0 if i >= self.vocab_size else i for i in ids]),
                                    strict=True)]
        return self.tokenizer.pieces(ids)

    def random(self, m: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``m`` sequences uniform over ``V`` at every position, long ``[m, L]`` (the ``random`` set, SPEC 5)."""
        return torch.randint(0, self.vocab_size, (m, self.seq_len), generator=generator, dtype=torch.long)


def _markov_source(cfg: DataConfig) -> MarkovSource:
    return MarkovSource(vocab_size=cfg.markov_vocab, successors=cfg.markov_successors, seed=cfg.markov_seed)


def cache_key(cfg: DataConfig, markov: MarkovSource | None = None) -> str:
    """Hash of everything that determines the processed tensors (not ``n_train``: subsets are nested)."""
    fields: dict[str, object] = {
        "format": CACHE_FORMAT,
        "source": source_identity(cfg),
        "seq_len": cfg.seq_len,
        "n_test": cfg.n_test,
        "seed": cfg.seed,
    }
    if cfg.source == "markov":
        markov = markov or _markov_source(cfg)
        digest = hashlib.sha256(markov.pi.numpy().tobytes() + markov.P.numpy().tobytes()).hexdigest()
        fields["markov"] = [cfg.markov_vocab, cfg.markov_successors, cfg.markov_seed, cfg.markov_pool, digest]
    else:
        fields["mode"] = cfg.mode
        fields["tokenizer"] = tokenizer_identity(cfg)
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:20]


def cache_path(cfg: DataConfig, markov: MarkovSource | None = None) -> Path:
    """Where ``build_dataset`` caches ``cfg``'s tensors: ``<cache>/data/<source>-<mode>-L<L>-<key>.pt``."""
    mode = "markov" if cfg.source == "markov" else cfg.mode
    return cache_root(cfg) / "data" / f"{cfg.source}-{mode}-L{cfg.seq_len}-{cache_key(cfg, markov)}.pt"


def build_dataset(cfg: DataConfig) -> SequenceData:
    """The ``SequenceData`` of ``cfg`` (SPEC 1), from the cache when an identical build is there.

    Deterministic given ``cfg``. Raises ``BasinlabError`` for an unknown source or mode, a missing file, an
    empty corpus, or a corpus too small for ``n_test``.
    """
    validate_data(cfg)
    markov = _markov_source(cfg) if cfg.source == "markov" else None
    path = cache_path(cfg, markov)
    blob = _load_cache(path)
    if blob is None:
        _check_cache_dir(path.parent)  # before the long build, not after it
        blob = _build_markov(cfg, markov) if markov is not None else _build_text(cfg)
        blob["fingerprint"] = data_fingerprint(cfg)
        atomic_write(path, lambda tmp: torch.save(blob, tmp))
    tok = Tokenizer.from_str(blob["tokenizer"]) if blob.get("tokenizer") else None
    return SequenceData(
        train_pool=blob["train_pool"].long(),
        test=blob["test"].long(),
        vocab_size=int(blob["vocab_size"]),
        tokenizer=tok,
        pad_id=tok.pad_id if tok else None,
        bos_id=tok.bos_id if tok else None,
        eos_id=tok.eos_id if tok else None,
        source=markov,
        n_train=cfg.n_train,
        mode="markov" if markov is not None else cfg.mode,
        fingerprint=blob.get("fingerprint"),
    )


def _check_cache_dir(where: Path) -> None:
    """One line, not a traceback, when the cache cannot be written: a file in the way, no permission."""
    exc = write_error(where, create=True)
    if exc is not None:
        raise BasinlabError(
            f"cannot write the data cache in '{where}' ({exc.strerror or exc}); set data.cache_dir (or "
            "$BASINLAB_CACHE) to a writable directory"
        )


def _load_cache(path: Path) -> dict | None:
    if not path.exists():
        return None
    try:
        blob = torch.load(path, weights_only=True)
    except Exception:  # a truncated or foreign file: rebuild and overwrite it
        return None
    if not isinstance(blob, dict) or blob.get("format") != CACHE_FORMAT:
        return None
    return blob


def _blob(train_pool: np.ndarray | torch.Tensor, test: np.ndarray | torch.Tensor, vocab_size: int,
          tok: Tokenizer | None) -> dict:
    return {
        "format": CACHE_FORMAT,
        "train_pool": torch.as_tensor(train_pool).to(torch.int32).contiguous(),
        "test": torch.as_tensor(test).to(torch.int32).contiguous(),
        "vocab_size": int(vocab_size),
        "tokenizer": tok.to_str() if tok is not None else "",
    }


def _row_view(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel()


def drop_rows_in(pool: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``pool`` without the rows equal to any row of ``ref`` (order kept)."""
    if len(pool) == 0 or len(ref) == 0:
        return pool
    return pool[~np.isin(_row_view(pool), _row_view(ref))]


def _build_markov(cfg: DataConfig, markov: MarkovSource) -> dict:
    if cfg.markov_pool <= cfg.n_test:
        raise BasinlabError(
            f"data.markov_pool={cfg.markov_pool} must exceed data.n_test={cfg.n_test} to leave a training pool"
        )
    g = torch.Generator().manual_seed(cfg.seed)
    pool = markov.sample(cfg.markov_pool, cfg.seq_len, generator=g).numpy()
    test, train = pool[: cfg.n_test], pool[cfg.n_test :]
    return _blob(_train_part(train, test, cfg), test, markov.vocab_size, None)


def _n_test_sentences(shuffled: list[str], cfg: DataConfig) -> int:
    """How many leading sentences form the test part: ``n_test`` in sentence mode; in wrap mode enough for
    ``n_test`` windows of ``L - 2`` tokens, counting whitespace words + 1 EOS (no tokeniser makes fewer)."""
    if cfg.mode == "sentence":
        return cfg.n_test
    need, have = cfg.n_test * (cfg.seq_len - 2), 0
    for k, s in enumerate(shuffled):
        if have >= need:
            return k
        have += len(s.split()) + 1
    return len(shuffled)


def _build_text(cfg: DataConfig) -> dict:
    sentences = load_sentences(cfg)
    g = torch.Generator().manual_seed(cfg.seed)
    perm = torch.randperm(len(sentences), generator=g).tolist()
    shuffled = [sentences[i] for i in perm]
    k = _n_test_sentences(shuffled, cfg)
    if k >= len(shuffled):
        raise BasinlabError(
            f"the corpus ({len(sentences)} sentences) is too small for data.n_test={cfg.n_test} test sequences "
            f"in {cfg.mode} mode plus a training pool; lower data.n_test or add data"
        )
    test_sents, train_sents = shuffled[:k], shuffled[k:]
    tok = get_tokenizer(cfg, train_sents, cache_root(cfg))
    ids = tok.encode_batch(test_sents + train_sents, max_tokens=cfg.seq_len - 2 if cfg.mode == "sentence" else None)
    test_ids, train_ids = ids[:k], ids[k:]
    L = cfg.seq_len
    if cfg.mode == "sentence":
        test = _sentence_rows(test_ids, L, tok)
        train = _sentence_rows(train_ids, L, tok)
    else:
        test = _wrap_windows(test_ids, L, tok)
        if len(test) < cfg.n_test:  # only for a tokeniser that drops words
            raise BasinlabError(
                f"wrap mode made {len(test)} test windows, fewer than data.n_test={cfg.n_test}; lower data.n_test"
            )
        test = test[: cfg.n_test]
        train = _wrap_windows(train_ids, L, tok)
        train = train[torch.randperm(len(train), generator=g).numpy()]
    return _blob(_train_part(train, test, cfg), test, tok.vocab_size, tok)


def _train_part(train: np.ndarray, test: np.ndarray, cfg: DataConfig) -> np.ndarray:
    """The training rows minus exact duplicates of test rows (SPEC 1); at least one must be left."""
    train = drop_rows_in(train, test)
    if len(train) == 0:
        raise BasinlabError(
            f"no training sequences are left once the {cfg.n_test} test sequences and their duplicates are taken "
            "out; add data or lower data.n_test"
        )
    return train


def _sentence_rows(ids: list[list[int]], L: int, tok: Tokenizer) -> np.ndarray:
    """``[BOS] tokens[:L-2] [EOS] [PAD]...`` per sentence, int64 ``[n, L]``."""
    n = len(ids)
    lens = np.fromiter((min(len(x), L - 2) for x in ids), dtype=np.int64, count=n)
    out = np.full((n, L), tok.pad_id, dtype=np.int64)
    out[:, 0] = tok.bos_id
    if lens.sum() > 0:
        flat = np.fromiter((t for x in ids for t in x[: L - 2]), dtype=np.int64, count=int(lens.sum()))
        rows = np.repeat(np.arange(n), lens)
        starts = np.cumsum(lens) - lens
        cols = 1 + np.arange(len(flat)) - np.repeat(starts, lens)
        out[rows, cols] = flat
    out[np.arange(n), lens + 1] = tok.eos_id
    return out


def _wrap_windows(ids: list[list[int]], L: int, tok: Tokenizer) -> np.ndarray:
    """Sentences each followed by ``[EOS]``, concatenated, cut into ``[BOS] + (L-2) tokens + [EOS]``; the
    incomplete tail is dropped. int64 ``[n, L]``."""
    total = sum(len(x) + 1 for x in ids)
    stream = np.fromiter((t for x in ids for t in (*x, tok.eos_id)), dtype=np.int64, count=total)
    n = total // (L - 2)
    body = stream[: n * (L - 2)].reshape(n, L - 2)
    out = np.empty((n, L), dtype=np.int64)
    out[:, 0] = tok.bos_id
    out[:, 1:-1] = body
    out[:, -1] = tok.eos_id
    return out


def encode_texts(texts: list[str], tokenizer: Tokenizer, seq_len: int) -> torch.Tensor:
    """Each text as one sequence in the sentence layout ``[BOS] tokens[:L-2] [EOS] [PAD]...`` (SPEC 1), long
    ``[n, L]``: how ``basinlab audit`` reads user texts (a text longer than ``L - 2`` tokens is cut)."""
    if seq_len < 3:
        raise BasinlabError(f"sequences of length {seq_len} leave no room for [BOS] text [EOS]")
    return torch.from_numpy(_sentence_rows(tokenizer.encode_batch(list(texts)), seq_len, tokenizer))
