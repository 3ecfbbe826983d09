"""Masked diffusion LMs loaded in place, without their remote code (SPEC 2b, 2c): what LLaDA and Dream share.

A deployed masked diffusion LM (LLaDA, Dream) is a bidirectional transformer over its tokenizer's vocabulary whose
``[MASK]`` lies *inside* the vocabulary (``config.json`` ``mask_token_id``). basinlab runs it as a network of the
family convention (:mod:`basinlab.models.family`): :class:`BidirectionalLM` wraps ``transformers``' own Llama or
Qwen2 causal-LM module, called with an explicit all-visible 4D attention mask (full, non-causal attention: every
position sees every other), and returns ``logits [B, L, V]`` with ``V = vocab_size`` of the checkpoint; it is not
time-conditioned (``sigma`` is ignored). The forward process is :class:`~basinlab.diffusion.masked.MaskedProcess`
with ``mask_index = mask_token_id`` (SUBS: the mask logit is dropped, unmasked tokens are carried over).

A family (:class:`MaskedLMFamily`) says how its ``config.json`` becomes a ``transformers`` config, how its key
names map onto the module's (:class:`KeyMap`), and whether its logits are shifted (Dream's). Loading reads
``config.json`` and the safetensors shards (``model.safetensors``, or those listed by
``model.safetensors.index.json``), checks every key and shape against the network built on the ``meta`` device
(nothing allocated), weighs the weights against the device's free memory first
(:func:`basinlab.models.placement.placement`: one device, spread over every GPU, or refused), then assigns each
tensor on its device in bf16 (CUDA) or fp32 (CPU). Export writes the original key names and ``config.json`` back.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.models.family import ModelFamily

logger = logging.getLogger(__name__)

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


class KeyMap:
    """Official key names <-> the network's (``lm.`` + ``transformers``' names): pairs of module paths
    ``(official, network)`` with ``{i}`` for a layer number; a key is a path and ``.weight`` or ``.bias``."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self.pairs = pairs
        self._fwd = [(self._pattern(a), b) for a, b in pairs]
        self._back = [(self._pattern(b), a) for a, b in pairs]

    @staticmethod
    def _pattern(template: str) -> re.Pattern:
        return re.compile("^" + re.escape(template).replace(r"\{i\}", r"(?P<i>\d+)") + r"\.(?P<p>weight|bias)$")

    @staticmethod
    def _apply(rules: list[tuple[re.Pattern, str]], key: str) -> str | None:
        for pat, template in rules:
            m = pat.match(key)
            if m:
                found = m.groupdict()
                return template.replace("{i}", found.get("i") or "") + "." + found["p"]
        return None

    def to_module(self, key: str) -> str | None:
        """The network's name of an official key; ``None`` for a key the network has no place for."""
        return self._apply(self._fwd, key)

    def to_official(self, key: str) -> str | None:
        """The official name of a network key; ``None`` for a key the official layout has no place for."""
        return self._apply(self._back, key)


class BidirectionalLM(torch.nn.Module):
    """A ``transformers`` Llama/Qwen2 causal LM run with full attention: ``forward(z_t, sigma) -> logits [B, L, V]``
    (the family network convention). ``shift``: Dream's logits, the prediction for ``l`` read at ``l - 1``
    (position 0 at 0, SPEC 2c). ``config`` is the checkpoint's own ``config.json`` (what :meth:`arch` saves)."""

    time_conditioning = False
    #: accelerate's placement when the network is spread over devices (:func:`~basinlab.models.placement.dispatch`
    #: sets it); ``None``: on one device, which :class:`~basinlab.models.denoiser.NetworkDenoiser` moves it to
    hf_device_map: dict[str, Any] | None = None
    #: scores a text at its own length (no padding): the audit batches texts by length
    variable_length = True

    def __init__(self, lm: torch.nn.Module, config: dict[str, Any], family: str, vocab_size: int,
                 shift: bool) -> None:
        super().__init__()
        self.lm = lm
        self.config = dict(config)
        self.family = family
        self.vocab_size = int(vocab_size)
        self.shift = bool(shift)

    def forward(self, z_t: torch.Tensor, sigma: torch.Tensor | None = None) -> torch.Tensor:
        B, L = z_t.shape
        visible = torch.ones((1, 1, 1, 1), dtype=torch.bool, device=z_t.device).expand(B, 1, L, L)  # all seen
        logits = self.lm(input_ids=z_t, attention_mask=visible, use_cache=False).logits[..., : self.vocab_size]
        if self.shift:
            logits = torch.cat([logits[:, :1], logits[:, :-1]], dim=1)
        return logits

    def arch(self) -> dict[str, Any]:
        return {"config": dict(self.config)}


def require_transformers(family: str) -> None:
    """One line when ``transformers`` 5 (its Llama/Qwen2 modules with ``rope_parameters``) is not installed."""
    try:
        import transformers
    except ImportError:
        version = None
    else:
        version = transformers.__version__
    if version is None or int(version.split(".")[0]) < 5:
        raise BasinlabError(f"the {family} family runs on transformers >= 5 (found {version or 'none'}): "
                            "pip install 'basinlab[dlm]'")


def read_config(path: str | Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory as a dict, or one line saying what is wrong."""
    f = Path(path) / CONFIG
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BasinlabError(f"{path}: no {CONFIG}; give the model's own directory (config.json + "
                            "safetensors)") from None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise BasinlabError(f"{f}: not readable JSON ({str(exc).splitlines()[0]}); restore the file") from None
    if not isinstance(cfg, dict):
        raise BasinlabError(f"{f}: not a JSON object; restore the file")
    return cfg


def shard_files(path: str | Path) -> list[Path]:
    """The safetensors files of a checkpoint: those of ``model.safetensors.index.json``, else ``model.safetensors``."""
    p = Path(path)
    if (p / INDEX).is_file():
        try:
            weight_map = json.loads((p / INDEX).read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise BasinlabError(f"{p / INDEX}: not a safetensors index (no weight_map); restore the file") from None
    elif (p / SINGLE).is_file():
        names = [SINGLE]
    else:
        raise BasinlabError(f"{p}: no {SINGLE} or {INDEX}; give the model's own directory (safetensors weights)")
    missing = [n for n in names if not (p / n).is_file()]
    if missing:
        raise BasinlabError(f"{p}: shard {missing[0]} listed in {INDEX} is missing; download it again")
    return [p / n for n in names]


def _int(cfg: dict[str, Any], key: str, where: Any) -> int:
    value = cfg.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BasinlabError(f"{where}/{CONFIG}: {key} must be a non-negative integer, got {value!r}")
    return value


class MaskedLMFamily(ModelFamily):
    """A masked diffusion LM family loaded in place (SPEC 2c); a subclass gives :meth:`hf_config`, :attr:`keys`,
    :attr:`shift` and what of its ``config.json`` it cannot run (:meth:`check_config`)."""

    #: logits shifted one position (Dream)
    shift = False
    keys: KeyMap
    #: :meth:`load_pretrained` takes a ``device_map`` (:func:`load_network`)
    device_maps = True
    #: the modules that LoRA adapts (``basinlab.training.lora``; the names inside :class:`BidirectionalLM`)
    lora_targets = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

    # ---- what a subclass says ----------------------------------------------------------------------------------

    def check_config(self, cfg: dict[str, Any], where: Any) -> None:
        """Refuse, in one line, a ``config.json`` this family cannot run exactly."""

    def hf_config(self, cfg: dict[str, Any]) -> Any:
        """The ``transformers`` config of the module that runs this checkpoint."""
        raise NotImplementedError

    def causal_lm_class(self) -> type:
        raise NotImplementedError

    # ---- the network -------------------------------------------------------------------------------------------

    def vocab_and_mask(self, cfg: dict[str, Any], where: Any) -> tuple[int, int]:
        """``(V, mask id)`` from ``config.json``: the mask id inside the vocabulary (SPEC 2c)."""
        V, mask = _int(cfg, "vocab_size", where), _int(cfg, "mask_token_id", where)
        if not 0 <= mask < V:
            raise BasinlabError(f"{where}/{CONFIG}: mask_token_id {mask} lies outside the vocabulary [0, {V})")
        return V, mask

    def process_for(self, cfg: dict[str, Any], where: Any = "checkpoint") -> Any:
        """The masked process of the checkpoint: ``MaskedProcess(V, mask_index=mask_token_id)``."""
        from basinlab.diffusion.masked import MaskedProcess

        V, mask = self.vocab_and_mask(cfg, where)
        return MaskedProcess(V, mask_index=mask)

    def network(self, cfg: dict[str, Any], device: str | torch.device = "cpu", where: Any = "checkpoint",
                dtype: torch.dtype = torch.float32) -> BidirectionalLM:
        """A randomly initialised network for ``config.json`` ``cfg`` (on ``meta``: no memory, to load into)."""
        self.check_config(cfg, where)
        V, _ = self.vocab_and_mask(cfg, where)
        require_transformers(self.name)
        hf = self.hf_config(cfg)
        hf._attn_implementation = "sdpa"
        with torch.device(device):
            lm = self.causal_lm_class()(hf).to(dtype)
        for module in lm.modules():  # full attention even where no mask reaches the module
            if hasattr(module, "is_causal"):
                module.is_causal = False
        return BidirectionalLM(lm, cfg, self.name, V, self.shift)

    def rebuild(self, arch: dict[str, Any], vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        return self.network(dict(arch["config"]), where="checkpoint arch")

    def build(self, model_cfg: Any, vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        """Fine-tuning: the network of ``model.init`` with its weights (fp32 on the CPU; the trainer moves it)."""
        if not model_cfg.init:
            raise BasinlabError(f"model.family={self.name} trains from a checkpoint: give model.init=DIR (its own "
                                "directory: config.json + safetensors)")
        return load_network(self, model_cfg.init, device="cpu", dtype=torch.float32)

    def init_process(self, model_cfg: Any, data_vocab: int, seqs: torch.Tensor | None = None) -> Any:
        """The process a fine-tuning run of ``model.init`` uses (the checkpoint's, SPEC 2c); the data's tokens
        (vocabulary ``data_vocab``; ``seqs``, the training sequences) must lie inside the model's vocabulary and
        never be its mask."""
        process = self.process_for(read_config(model_cfg.init), model_cfg.init)
        self.check_data(process, data_vocab, seqs, f"model.init={model_cfg.init}")
        return process

    def check_data(self, process: Any, data_vocab: int, seqs: torch.Tensor | None, where: str) -> None:
        """One line when data of ``data_vocab`` tokens cannot go through the model's masked ``process``: a token id
        beyond its vocabulary, or the mask id among the sequences ``seqs`` (a clean text never holds it)."""
        if data_vocab > process.vocab_size:
            raise BasinlabError(f"{where}: the data's {data_vocab} token ids do not fit the model's vocabulary of "
                                f"{process.vocab_size}; use the model's own tokenizer (data.tokenizer=DIR/"
                                "tokenizer.json) or fewer tokens (data.markov_vocab)")
        if seqs is not None and bool((seqs == process.mask_index).any()):
            raise BasinlabError(f"{where}: the data hold the model's mask id {process.mask_index}, which a clean "
                                "text never holds (SPEC 2b); use data without it (data.markov_vocab below it)")

    def size_estimate(self, model_cfg: Any, n_outputs: int) -> tuple[int, int, int] | None:
        """``(parameters, layers, width)`` of ``model.init`` from its ``config.json`` (the network built on ``meta``:
        nothing allocated), for the trainer's memory check."""
        if not getattr(model_cfg, "init", None):
            return None
        net = self._meta_network(model_cfg.init)
        hf = net.lm.config
        return sum(p.numel() for p in net.parameters()), int(hf.num_hidden_layers), int(hf.hidden_size)

    def lora_parameters(self, model_cfg: Any, rank: int) -> int | None:
        """The adapters' parameters on :attr:`lora_targets` of ``model.init`` (counted on ``meta``)."""
        from basinlab.training.lora import adapter_parameters

        if not getattr(model_cfg, "init", None):
            return None
        return adapter_parameters(self._meta_network(model_cfg.init), rank, self.lora_targets)

    def _meta_network(self, path: str | Path) -> BidirectionalLM:
        net = self.network(read_config(path), device="meta", where=path)
        _tie(net)
        return net

    # ---- loading in place --------------------------------------------------------------------------------------

    def load_pretrained(self, path: str | Path, device: Any = "cpu", ema: bool = True, tokenizer: Any = None,
                        precision: str = "auto", batch_size: int | None = 512, device_map: Any = None) -> Any:
        """The checkpoint directory ``path`` as a :class:`~basinlab.training.checkpoint.TrainedModel` (SPEC 2c):
        bf16 on a GPU (unless ``precision="fp32"``), fp32 on a CPU; spread over every GPU when ``device`` cannot
        hold it but all can, or placed by ``device_map`` (``"auto"``, a device, or module names -> devices;
        :func:`load_network`)."""
        from basinlab.config import Config
        from basinlab.diffusion import get_schedule
        from basinlab.models import NetworkDenoiser, resolve_device
        from basinlab.models.placement import main_device
        from basinlab.training.checkpoint import TrainedModel

        dev = resolve_device(device)
        dtype = torch.bfloat16 if dev.type == "cuda" and precision != "fp32" else torch.float32
        net = load_network(self, path, device=dev, dtype=dtype, device_map=device_map)
        if net.hf_device_map:
            dev = main_device(net.hf_device_map)
        cfg = net.config
        process = self.process_for(cfg, path)
        schedule = get_schedule("loglinear", 1e-3)
        config = Config()
        config.model.family, config.train.process = self.name, process.name
        L = int(cfg.get("max_sequence_length") or cfg.get("max_position_embeddings") or 2048)
        denoiser = NetworkDenoiser(net, schedule, device=dev, precision=precision, batch_size=batch_size,
                                   process=process)
        tok = own_tokenizer(path, tokenizer, process.vocab_size)
        return TrainedModel(model=net, denoiser=denoiser, tokenizer=tok, schedule=schedule, config=config,
                            vocab_size=process.vocab_size, seq_len=L, step=0, path=Path(path), ema=ema,
                            process=process, meta={"family": self.name, "model_type": cfg.get("model_type")})

    # ---- export ------------------------------------------------------------------------------------------------

    def official_state(self, network: BidirectionalLM, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``state`` (the network's names) under the official key names; a tied head is written once."""
        out = {}
        for k, v in state.items():
            name = self.keys.to_official(k)
            if name is None:
                raise BasinlabError(f"cannot export {k}: the {self.name} layout has no place for it")
            out[name] = v
        return {k: v for k, v in out.items() if k not in self.tied_keys(network.config)}

    def tied_keys(self, cfg: dict[str, Any]) -> tuple[str, ...]:
        """Official names that a tied-embedding checkpoint does not store."""
        return ()

    def export(self, run: Any, out: str | Path, raw: bool = False) -> Path:
        """Write the run's weights in the official layout (``model.safetensors``, original key names, float32 as
        trained) and its ``config.json`` (the original's, plus a ``basinlab`` record of the source run, which the
        original config classes keep as an unknown field) into ``out``: the original code and
        :meth:`load_pretrained` read it back."""
        from safetensors.torch import save_file

        from basinlab.interop.checks import check_export_out, export_source
        from basinlab.io import atomic_write, atomic_write_text
        from basinlab.training.checkpoint import load_meta, load_weights, require_checkpoint

        ckpt = require_checkpoint(run)
        meta = load_meta(ckpt)
        if meta.get("family") != self.name:
            raise BasinlabError(f"{ckpt} is a {meta.get('family', 'dit')} run, not {self.name}: export it with its "
                                "own format")
        check_export_out(run, Path(out))  # never over files it did not write (issue 18)
        cfg = {k: v for k, v in meta["arch"]["config"].items() if k != "basinlab"}
        net = self.network(cfg, device="meta")
        state = {k: v.contiguous() for k, v in self.official_state(net, load_weights(ckpt, ema=not raw)).items()}
        dest = Path(out)
        dest.mkdir(parents=True, exist_ok=True)
        atomic_write(dest / SINGLE, lambda tmp: save_file(state, str(tmp), metadata={"format": "pt"}))
        record = {"source": export_source(run), "weights": "raw" if raw else "ema", "step": int(meta.get("step", 0))}
        atomic_write_text(dest / CONFIG, json.dumps({**cfg, "basinlab": record}, indent=2) + "\n")
        stale = dest / INDEX
        if stale.is_file():  # a sharded export there earlier would shadow the single file
            stale.unlink()
        _copy_beside(ckpt, dest)
        return dest


def own_tokenizer(path: str | Path, tokenizer: Any, vocab_size: int) -> Any:
    """The tokenizer of a checkpoint loaded in place: ``tokenizer`` (a ``Tokenizer`` or a path) when given, else
    the ``tokenizer.json`` beside the weights when basinlab can use it (PAD, BOS and EOS found; ids inside the
    vocabulary), else ``None`` (texts then go in as ids, ``--format ids``)."""
    from basinlab.training.checkpoint import load_tokenizer, tokenizer_vocab_size

    given = tokenizer is not None
    if not given and not (Path(path) / "tokenizer.json").is_file():
        return None
    try:
        tok = tokenizer if given and not isinstance(tokenizer, (str, Path)) else load_tokenizer(
            tokenizer if given else Path(path) / "tokenizer.json")
    except BasinlabError as exc:
        if given:
            raise
        logger.warning("not using %s/tokenizer.json (%s): give texts as token ids (--format ids)", path, exc)
        return None
    n = tokenizer_vocab_size(tok)
    if n is not None and n > vocab_size:
        raise BasinlabError(f"the tokenizer has {n} tokens, more than the vocabulary of {path} ({vocab_size}); "
                            "give the model's own tokenizer")
    return tok


def _copy_beside(ckpt: Path, dest: Path) -> None:
    """The files beside the weights of the run's ``model.init`` (tokenizer, generation config, the original code),
    when that directory is still there: the export is then a complete checkpoint of the original kind."""
    import shutil

    from basinlab.training.checkpoint import load_config_file

    init = load_config_file(ckpt).model.init
    if not init or not Path(init).is_dir():
        return
    for f in sorted(Path(init).iterdir()):
        if f.is_file() and f.name not in (CONFIG, INDEX) and not f.name.endswith(".safetensors"):
            shutil.copyfile(f, dest / f.name)


def load_network(family: MaskedLMFamily, path: str | Path, device: Any = "cpu",
                 dtype: torch.dtype = torch.float32, device_map: Any = None) -> BidirectionalLM:
    """The network of checkpoint ``path`` with its weights, on ``device`` in ``dtype``: config and keys checked
    and memory weighed (:func:`~basinlab.models.placement.placement`) before any tensor is read (one line for each
    problem). When ``device`` cannot hold it but every GPU together can, or when ``device_map`` is given (a map of
    module names to devices, a device, or ``"auto"``), each weight is read onto its device of the map and
    accelerate's hooks join the devices (:func:`~basinlab.models.placement.dispatch`; ``net.hf_device_map``)."""
    from basinlab.memory import human_bytes
    from basinlab.models import placement as place

    cfg = read_config(path)
    files = shard_files(path)
    net = family.network(cfg, device="meta", where=path, dtype=dtype)
    _tie(net)  # before counting and placing: a tied head is its embedding, counted once, placed with it
    n = sum(p.numel() for p in net.parameters())
    size = torch.empty((), dtype=dtype).element_size()
    if device_map is None:
        device_map = place.placement(n, size, torch.device(device), str(path))
    spread = device_map is not None
    device_map = place.resolve_device_map(net, device_map, dtype, str(path), no_split=net.lm._no_split_modules
                                          or ()) if spread else {"": device}
    logger.info("loading %s (%s) onto %s as %s", path, human_bytes(n * size),
                device_map if spread else device, dtype)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    state = _read_state(family, files, expected, lambda name: place.device_of(name, device_map), dtype)
    _tie_state(net, state, expected)
    missing = sorted(set(expected) - set(state))
    if missing:
        raise BasinlabError(f"{path}: no tensor for {family.keys.to_official(missing[0]) or missing[0]} "
                            f"({len(missing)} missing); the checkpoint is incomplete")
    net.load_state_dict(state, assign=True)
    _tie(net)
    _fresh_rotary(net, place.device_of("lm.model.rotary_emb", device_map))
    return place.dispatch(net, device_map) if spread else net


def _read_state(family: MaskedLMFamily, files: list[Path], expected: dict[str, tuple[int, ...]], device_of: Any,
                dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Every tensor of the safetensors ``files`` under the network's names, checked against ``expected`` (name ->
    shape), in ``dtype`` on ``device_of(name)``."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt", device="cpu") as fh:
                for key in fh.keys():
                    name = family.keys.to_module(key)
                    if name is None or name not in expected:
                        raise BasinlabError(f"{f}: unexpected tensor {key!r} for a {family.name} checkpoint of this "
                                            "config.json; is the directory another model's?")
                    t = fh.get_tensor(key)
                    if tuple(t.shape) != expected[name]:
                        raise BasinlabError(f"{f}: {key} has shape {tuple(t.shape)}, config.json implies "
                                            f"{expected[name]}; the weights and config.json disagree")
                    state[name] = t.to(device=device_of(name), dtype=dtype)
        except BasinlabError:
            raise
        except Exception as exc:  # safetensors' own errors: a truncated or foreign file
            raise BasinlabError(f"{f}: not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                                "download it again") from None
    return state


def _tie_state(net: BidirectionalLM, state: dict[str, torch.Tensor], expected: dict[str, Any]) -> None:
    """A tied head: the embedding's tensor stands for the head's, which the checkpoint does not store."""
    emb = "lm.model.embed_tokens.weight"
    if net.lm.config.tie_word_embeddings and emb in state and "lm.lm_head.weight" in expected:
        state.setdefault("lm.lm_head.weight", state[emb])


def _tie(net: BidirectionalLM) -> None:
    """A tied head is the embedding's parameter itself."""
    if net.lm.config.tie_word_embeddings:
        net.lm.lm_head.weight = net.lm.model.embed_tokens.weight


def _fresh_rotary(net: BidirectionalLM, device: Any) -> None:
    """The rotary embedding's ``inv_freq`` is a buffer outside the checkpoint: build it anew on ``device``
    (built on ``meta`` it would hold nothing)."""
    rotary = net.lm.model.rotary_emb
    net.lm.model.rotary_emb = type(rotary)(net.lm.config).to(device)
