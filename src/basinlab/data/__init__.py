"""Data for basinlab (SPEC 1): raw corpora, tokenisers, the pool of sequences and the Markov source.

``datasets`` is imported lazily (inside ``load_sentences``), so importing this package stays light.
"""

from basinlab.data.corpora import load_sentences
from basinlab.data.markov import MarkovSource
from basinlab.data.sequences import SequenceData, build_dataset
from basinlab.data.tokenizer import Tokenizer

__all__ = ["MarkovSource", "SequenceData", "Tokenizer", "build_dataset", "load_sentences"]
