"""The fixed names and limits config keys accept (registered names live in :mod:`basinlab.registry`), and which
keys may change when a run or a sweep resumes."""

from __future__ import annotations

DATA_SOURCES = ("brown", "text", "datasets", "markov")
DATA_MODES = ("sentence", "wrap")
OBJECTIVES = ("nelbo", "ce_redrawn")
PRECISIONS = ("auto", "bf16", "fp32")
LR_DECAYS = ("none", "linear", "cosine")
#: seeds (``train.seed``, ``data.seed``, ``sweep.seeds``...) lie in ``[0, SEED_LIMIT)``: torch generators take 64 bits
#: and basinlab derives child seeds by small affine maps
SEED_LIMIT = 2**32
#: ``probe.quick``: about a minute of CPU for ``probe all`` on a ``micro`` model (Markov preset, L = 32): at most
#: 128 sequences per set, T = 25 and 64 generated samples (docs/STUDY.md, "Probe cost").
QUICK_M, QUICK_STEPS, QUICK_SAMPLES = 128, 25, 64
#: the reverse chains a probe can run: basinlab's ancestral chain (SPEC 3) or a model's own sampler (SPEC 2c)
SAMPLERS = ("ancestral", "entropy_bound")
#: ``train.tracker`` (basinlab.training.tracking, docs/TRACKING.md)
TRACKERS = ("none", "tensorboard", "wandb", "mlflow")
#: Keys that may change between a checkpoint (or a sweep directory) and its resumption: where files live and how
#: fast or verbosely the same numbers are computed, never what is computed. ``train.steps`` may grow for a single
#: run (training continues), not for a sweep (:data:`SWEEP_FIXED_KEYS`).
RESUMABLE_KEYS: dict[str, frozenset[str]] = {
    "data": frozenset({"cache_dir"}),
    "train": frozenset({"steps", "log_every", "ckpt_every", "progress", "device", "precision", "compile",
                        "grad_accum", "tracker"}),
    "probe": frozenset({"batch_size", "gen_ppl_model"}),  # the scorer's path may be fixed on a rerun (issue 25)
}
#: keys a sweep directory keeps although a single run may change them (SPEC 7: one step budget for every N)
SWEEP_FIXED_KEYS: dict[str, frozenset[str]] = {"train": frozenset({"steps"})}
