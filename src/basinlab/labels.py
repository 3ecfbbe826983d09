"""The typed name of what a result row was measured on: a trained network or an exact oracle, and its process.

Results files keep one string per run in their ``model`` column (``micro``, ``micro@masked``, ``oracle:markov``,
``oracle:empirical@masked``): the model's name, ``oracle:`` for an exact oracle (SPEC 6), and ``@PROCESS`` for a
forward process other than the default one (:data:`basinlab.registry.DEFAULT_PROCESS`), so that the uniform rows
keep their historical names. :class:`ModelLabel` is that string parsed once; code asks it, never the string.
A leaf: imports only the registry.
"""

from __future__ import annotations

from dataclasses import dataclass

from basinlab.registry import DEFAULT_PROCESS

ORACLE_PREFIX = "oracle:"


@dataclass(frozen=True, order=True)
class ModelLabel:
    """``name`` (a preset/family name, or an oracle kind), whether it ``is_oracle``, and its ``process``
    (``None``: the default process)."""

    name: str
    is_oracle: bool = False
    process: str | None = None

    DEFAULT_PROCESS = DEFAULT_PROCESS

    @classmethod
    def parse(cls, text: object) -> ModelLabel:
        """``'oracle:empirical@masked'`` -> ``ModelLabel('empirical', True, 'masked')``."""
        base, _, process = str(text).partition("@")
        oracle = base.startswith(ORACLE_PREFIX)
        name = base[len(ORACLE_PREFIX):] if oracle else base
        return cls(name, oracle, None if process in ("", DEFAULT_PROCESS) else process)

    @classmethod
    def network(cls, name: str, process: str | None = None) -> ModelLabel:
        return cls(name, False, None if process in (None, DEFAULT_PROCESS) else process)

    @classmethod
    def oracle(cls, kind: str, process: str | None = None) -> ModelLabel:
        return cls(kind, True, None if process in (None, DEFAULT_PROCESS) else process)

    @property
    def process_name(self) -> str:
        """The forward process, the default one spelt out."""
        return self.process or DEFAULT_PROCESS

    def process_or(self, fallback: str) -> str:
        """The label's own process when it names one, else ``fallback`` (e.g. the config's ``train.process``)."""
        return self.process or fallback

    @property
    def base(self) -> str:
        """The label without its process (``oracle:markov`` for ``oracle:markov@masked``)."""
        return f"{ORACLE_PREFIX}{self.name}" if self.is_oracle else self.name

    @property
    def slug(self) -> str:
        """A directory-safe form: ``oracle-markov-masked``, ``micro``."""
        parts = (["oracle"] if self.is_oracle else []) + [self.name] + ([self.process] if self.process else [])
        return "-".join(parts)

    def __str__(self) -> str:
        return self.base + (f"@{self.process}" if self.process else "")
