"""A checkpoint's metadata as one typed record (``meta.json``): what rebuilds its denoiser, and where it came from.

:class:`CheckpointMeta` is written by the trainer and by the converters (``basinlab.interop``) and read by
:func:`~basinlab.training.checkpoint.load_trained`. On disk it is the flat JSON object basinlab has always written
(``arch``, ``vocab_size``, ``seq_len``, ``schedule``, ``eps``, ``process``... and the provenance keys beside them),
so older checkpoints load: a missing ``process`` is uniform, a missing ``time_conditioning`` in ``arch`` is on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from basinlab.errors import BasinlabError
from basinlab.registry import DEFAULT_PROCESS

#: the keys of the record proper; every other key of ``meta.json`` is provenance (``extra``)
FIELDS = ("arch", "vocab_size", "seq_len", "schedule", "eps", "process", "process_options", "tokenizer", "step",
          "family")


@dataclass
class CheckpointMeta:
    """Process, architecture, schedule and tokenizer of a checkpoint (SPEC 2, 2b), and its provenance.

    ``arch`` is ``DiT.arch()`` (its ``vocab_size`` is the network's, ``process.n_outputs``); ``vocab_size`` is
    ``V``, the clean tokens; ``tokenizer`` names the tokenizer the data were cut with (``None`` for Markov data;
    the tokenizer itself is ``tokenizer.json`` beside it); ``extra`` holds provenance (``n_train``, ``objective``,
    ``data_sha256``, ``data_file``, ``basinlab`` version, ``converted_from``...)."""

    arch: dict[str, Any]
    vocab_size: int
    seq_len: int
    schedule: str = "loglinear"
    eps: float = 1e-3
    process: str = DEFAULT_PROCESS
    process_options: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    step: int = 0
    family: str = "dit"
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat ``meta.json`` object (provenance keys beside the record's)."""
        out = dict(self.extra)
        out.update(arch=dict(self.arch), vocab_size=int(self.vocab_size), seq_len=int(self.seq_len),
                   schedule=self.schedule, eps=float(self.eps), process=self.process,
                   process_options=dict(self.process_options), tokenizer=self.tokenizer, step=int(self.step),
                   family=self.family)
        return out

    @classmethod
    def from_dict(cls, meta: dict[str, Any], where: Any = "checkpoint") -> CheckpointMeta:
        """Parse a ``meta.json`` object; one line naming the missing key when it cannot rebuild a denoiser."""
        missing = [k for k in ("arch", "vocab_size", "seq_len") if k not in meta]
        if missing:
            raise BasinlabError(f"{where}: meta.json lacks {', '.join(missing)}; the checkpoint is damaged: retrain")
        return cls(
            arch=dict(meta["arch"]), vocab_size=int(meta["vocab_size"]), seq_len=int(meta["seq_len"]),
            schedule=str(meta.get("schedule") or "loglinear"), eps=float(meta.get("eps", 1e-3)),
            process=str(meta.get("process") or DEFAULT_PROCESS),
            process_options=dict(meta.get("process_options") or {}),
            tokenizer=meta.get("tokenizer"), step=int(meta.get("step", 0)), family=str(meta.get("family") or "dit"),
            extra={k: v for k, v in meta.items() if k not in FIELDS},
        )

    def forward_process(self):
        """The :class:`~basinlab.diffusion.forward.ForwardProcess` the network was trained with."""
        from basinlab.diffusion import get_process

        try:
            return get_process(self.process, self.vocab_size, **self.process_options)
        except (ValueError, TypeError) as exc:
            raise BasinlabError(f"checkpoint process {self.process!r}: {exc}") from None

    def model_family(self):
        """The :class:`~basinlab.models.family.ModelFamily` of the network (SPEC 2c)."""
        from basinlab.models.family import get_family

        return get_family(self.family)

    def noise_schedule(self):
        """The schedule (SPEC 2)."""
        from basinlab.diffusion import get_schedule

        try:
            return get_schedule(self.schedule, self.eps)
        except ValueError as exc:
            raise BasinlabError(f"checkpoint schedule: {exc}") from None
