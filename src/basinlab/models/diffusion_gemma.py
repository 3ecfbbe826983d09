"""DiffusionGemma as a model family (SPEC 2c): Google DeepMind's deployed uniform-noise diffusion LM, in place.

The network is transformers' own ``DiffusionGemmaForBlockDiffusion`` (never a copy of its code): a causal encoder
reads the prompt into a KV cache, a bidirectional decoder denoises a canvas of ``canvas_length`` tokens, the logits
are soft-capped with ``tanh``. :class:`DiffusionGemmaNetwork` gives it basinlab's calling convention
``network(z_t [B, L], sigma [B]) -> logits [B, L, V]`` (SPEC 2c):

- the probes' sequence is one canvas (``L = canvas_length``); its prompt, added inside and never corrupted, is
  ``[BOS]`` alone, or ``[BOS]`` + every earlier token of the text within :meth:`DiffusionGemmaNetwork.prompted`
  (the block layout of :mod:`basinlab.models.canvases`: a text fills canvases in order, the last one filled up
  with PAD, attended as in generation, never scored);
- ``x_theta = softmax`` of the soft-capped logits over the model's whole vocabulary (the uniform process of SPEC 2
  over ``V = text_config.vocab_size``); ``sigma`` is ignored: the model is not time-conditioned;
- self-conditioning is off (a zero signal, the model's own first denoising step): the leave-one-out entropy and
  the study's ancestral chain read ``x_theta(z_t)`` alone (SPEC 4).

:data:`FAMILY` loads a Hugging Face directory (``config.json`` ``model_type: diffusion_gemma``) after checking it
(:func:`check_directory`: the memory estimate of :func:`estimate_parameters` *before* any weight is read, the
weights' presence, names and shapes, NaN weights, the tokenizer's vocabulary), builds tiny networks of the same
architecture for the ``dgemma-demo`` preset, rebuilds a fine-tuned run's network from its ``meta.json`` and exports
it back (:func:`export_hf`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from basinlab.errors import BasinlabError
from basinlab.models.canvases import Canvases, lay_out
from basinlab.models.family import ModelFamily
from basinlab.models.placement import STRATEGIES, placement, resolve_device_map
from basinlab.training.checkpoint import TrainedModel

logger = logging.getLogger(__name__)

MODEL_TYPE = "diffusion_gemma"
#: the attention projections LoRA adapts (``train.lora_rank``; ``basinlab.training.lora``)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


# ---- the network -------------------------------------------------------------------------------------------------


class DiffusionGemmaNetwork(torch.nn.Module):
    """``DiffusionGemmaForBlockDiffusion`` behind basinlab's network convention (SPEC 2c; module docstring).

    ``n_outputs`` (default: the whole vocabulary) keeps the first ``n_outputs`` logits: a network built for a
    source of ``V`` states has two more ids (PAD, BOS) that it never predicts (:meth:`DiffusionGemmaFamily.build`).
    """

    time_conditioning = False

    def __init__(self, hf: torch.nn.Module, n_outputs: int | None = None) -> None:
        super().__init__()
        self.hf = hf
        text = hf.config.text_config
        self.vocab_size = int(n_outputs or text.vocab_size)
        self.bos_id, self.pad_id = int(text.bos_token_id), int(text.pad_token_id)
        self.canvas_length = int(hf.config.canvas_length)
        self._previous: list[torch.Tensor | None] | None = None  # a self-conditioned chain's last logits
        self._prompt: torch.Tensor | None = None  # the prompt of :meth:`prompted` (None: [BOS] alone)

    @property
    def hf_device_map(self) -> dict[str, Any] | None:
        """accelerate's placement of a model spread over several devices (``None``: one device)."""
        return getattr(self.hf, "hf_device_map", None)

    def forward(self, z_t: torch.Tensor, sigma: torch.Tensor | None = None,
                self_conditioning_logits: torch.Tensor | None = None) -> torch.Tensor:
        """Soft-capped logits ``[B, L, n_outputs]`` of the canvas ``z_t`` after the prompt (``[BOS]``, or the one
        of :meth:`prompted`)."""
        prompt = self.prompt_ids(z_t.shape[0], z_t.device)
        previous = self._previous[0] if self._previous is not None else None
        if self_conditioning_logits is None and previous is not None:
            if previous.shape[:2] != z_t.shape:
                raise BasinlabError(f"a self-conditioned chain of {tuple(previous.shape[:2])} canvases was called "
                                    f"with {tuple(z_t.shape)}: give the denoiser a batch_size >= the probe's")
            self_conditioning_logits = previous
        logits = self.hf(input_ids=prompt, decoder_input_ids=z_t,
                         self_conditioning_logits=self_conditioning_logits).logits
        if self._previous is not None:
            self._previous[0] = logits.detach()
        return logits[..., : self.vocab_size]

    def prompt_ids(self, batch: int, device: torch.device) -> torch.Tensor:
        """``[batch, P]``: the prompt every canvas of a call is denoised after (SPEC 2c), the same for each."""
        if self._prompt is None:
            return torch.full((batch, 1), self.bos_id, dtype=torch.long, device=device)
        return self._prompt.to(device).expand(batch, -1).contiguous()

    @contextlib.contextmanager
    def prompted(self, prompt: torch.Tensor):
        """Within it, every canvas is denoised after ``prompt`` (1-D ids; SPEC 2c: ``[BOS]`` + every earlier token
        of its text), in the forward and in the model's own sampler; any batch of canvases shares it."""
        ids = torch.as_tensor(prompt, dtype=torch.long).flatten()
        if ids.numel() == 0:
            raise BasinlabError("a DiffusionGemma prompt holds at least [BOS]; got an empty one")
        before, self._prompt = self._prompt, ids
        try:
            yield self
        finally:
            self._prompt = before

    @contextlib.contextmanager
    def self_conditioned(self):
        """Within it, each forward feeds the previous forward's logits to the model's self-conditioning input
        (``probe.self_conditioning``; the first call has none, as the model's sampler's first step)."""
        self._previous = [None]
        try:
            yield self
        finally:
            self._previous = None

    def own_sampler(self, name: str):
        """The model's own reverse chain ``name`` (``probe.sampler``): ``entropy_bound`` is transformers' entropy-
        bound sampler (``generate``), started from the corrupted canvas after the prompt (:meth:`prompted`), with
        about ``steps * t_start`` denoising steps and self-conditioning as the model's generation does (basinlab's
        chain options, e.g. greedy, do not apply); ``None`` for any other name."""
        return self._entropy_bound if name == "entropy_bound" else None

    @torch.no_grad()
    def _entropy_bound(self, z_t: torch.Tensor, t_start: float, steps: int,
                       generator: torch.Generator | None = None, **_: Any) -> torch.Tensor:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=z_t.device)) if generator else None
        with torch.random.fork_rng(devices=[z_t.device] if z_t.device.type == "cuda" else []):
            if seed is not None:
                torch.manual_seed(seed)
            prompt = self.prompt_ids(z_t.shape[0], z_t.device)
            out = self.hf.generate(input_ids=prompt, decoder_input_ids=z_t, max_new_tokens=z_t.shape[1],
                                   max_denoising_steps=max(1, round(steps * t_start)))
        seqs = getattr(out, "sequences", out)
        return seqs[:, -z_t.shape[1]:].clamp(max=self.vocab_size - 1)

    def arch(self) -> dict[str, Any]:
        """The transformers config (``to_dict``) and ``n_outputs``: what :meth:`DiffusionGemmaFamily.rebuild` reads."""
        return {"hf_config": self.hf.config.to_dict(), "n_outputs": self.vocab_size}

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``torch``'s, except that a tied weight (the decoder shares the encoder's layers and the LM head its
        embedding) may be given under one of its names only, as the trainer's EMA (over ``parameters()``) has it."""
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            own = self.state_dict(keep_vars=True)
            given = {id(own[k]) for k in state_dict if k in own}
            missing = [k for k in result.missing_keys if id(own[k]) not in given]
            if missing or result.unexpected_keys:
                raise RuntimeError(f"Error(s) in loading state_dict: missing keys {missing[:3]}, unexpected keys "
                                   f"{list(result.unexpected_keys)[:3]}")
        return result


# ---- the size of a config, before anything is built ---------------------------------------------------------------


def _text_layer_parameters(tc: dict[str, Any], full: bool) -> int:
    """Parameters of one text layer (attention, dense MLP, experts, router, norms) from ``text_config``."""
    h, n_heads = int(tc["hidden_size"]), int(tc["num_attention_heads"])
    head = int(tc.get("head_dim") or h // n_heads)
    kv = int(tc.get("num_key_value_heads") or n_heads)
    override = (tc.get("per_layer_config") or {}) if full else {}
    some = next(iter(override.values()), {}) if isinstance(override, dict) and override else {}
    head, kv = int(some.get("head_dim", head)), int(some.get("num_key_value_heads", kv))
    attention = 2 * h * n_heads * head + 2 * h * kv * head + 2 * head
    dense = 3 * h * int(tc.get("intermediate_size") or 0)
    experts = int(tc.get("num_experts") or 0)
    moe = experts * 3 * h * int(tc.get("moe_intermediate_size") or 0) + experts * h + h + experts if experts else 0
    return attention + dense + moe + 8 * h


def _vision_parameters(vc: dict[str, Any] | None) -> int:
    """Parameters of the vision tower (Gemma 4's; transformers' defaults where ``vision_config`` is absent)."""
    vc = vc or {}
    h, inter = int(vc.get("hidden_size", 768)), int(vc.get("intermediate_size", 3072))
    layers, patch = int(vc.get("num_hidden_layers", 16)), int(vc.get("patch_size", 16))
    table = 2 * int(vc.get("position_embedding_size", 10240)) * h
    return layers * (4 * h * h + 3 * h * inter + 4 * h) + table + 3 * patch * patch * h


def estimate_parameters(config: dict[str, Any]) -> int:
    """Parameters of a DiffusionGemma ``config.json`` (tied weights once), from the config alone (no import of
    transformers, no weights): what :func:`check_fits` weighs before loading. Within a few per cent of the count
    of the built model (tests/models/test_diffusion_gemma.py)."""
    tc = config.get("text_config") or {}
    try:
        h, n_layers, vocab = int(tc["hidden_size"]), int(tc["num_hidden_layers"]), int(tc["vocab_size"])
        types = tc.get("layer_types") or ["full_attention"] * n_layers
        layers = sum(_text_layer_parameters(tc, kind == "full_attention") for kind in types[:n_layers])
        self_cond = 3 * h * int(tc.get("intermediate_size") or 0) + h
        vision = _vision_parameters(config.get("vision_config"))
        h_vision = int((config.get("vision_config") or {}).get("hidden_size", 768))
    except (KeyError, TypeError, ValueError) as exc:
        raise BasinlabError(f"config.json: text_config lacks or garbles {exc}; it is not a DiffusionGemma config "
                            "that transformers writes (save_pretrained)") from None
    return vocab * h + layers + self_cond + h + vision + h_vision * h


# ---- checking a directory ------------------------------------------------------------------------------------------


def read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a DiffusionGemma directory, or one line."""
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise BasinlabError(f"{path}/config.json is unreadable ({exc}); write it with save_pretrained") from None
    if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
        raise BasinlabError(f"{path}/config.json is not a {MODEL_TYPE} config")
    return config


def _weight_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError):
            raise BasinlabError(f"{index} is unreadable; write the directory again with save_pretrained") from None
        return [path / n for n in names]
    return [path / "model.safetensors"]


def check_weights(path: Path, model: torch.nn.Module) -> None:
    """Every weight file present, and the names and shapes it holds those of the model that ``config.json``
    describes (a lying config is refused here, not by a traceback), before anything is loaded."""
    from safetensors import safe_open

    files = _weight_files(path)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise BasinlabError(f"{path}: weight file {missing[0]} is missing; a DiffusionGemma directory holds "
                            "config.json and model.safetensors (save_pretrained)")
    shapes: dict[str, tuple[int, ...]] = {}
    for f in files:
        try:
            with safe_open(str(f), framework="pt") as fh:
                for key in fh.keys():
                    shapes[key] = tuple(fh.get_slice(key).get_shape())
        except Exception as exc:  # safetensors raises its own error types for a damaged file
            raise BasinlabError(f"{f} is not a readable safetensors file ({str(exc).splitlines()[0][:120]}); "
                                "download or write it again") from None
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wrong = [(k, shapes[k], expected[k]) for k in expected if k in shapes and shapes[k] != expected[k]]
    if wrong:
        k, got, want = wrong[0]
        raise BasinlabError(f"{path}: config.json does not describe these weights ({k} is {list(got)} in the weights, "
                            f"{list(want)} by config.json); restore the config.json written with them")
    absent = [k for k in expected if k not in shapes and not _tied(model, k, shapes)]
    if absent:
        raise BasinlabError(f"{path}: the weights lack {absent[0]} (and {len(absent) - 1} more) that config.json's "
                            "model has; restore the config.json written with them")


def _tied(model: torch.nn.Module, key: str, present: dict[str, Any]) -> bool:
    own = model.state_dict(keep_vars=True)
    return any(own[k] is own[key] for k in present if k in own)


def check_finite(model: torch.nn.Module, path: Path) -> None:
    """No NaN or infinite weight (a damaged download would give NaN entropies silently)."""
    for name, p in model.named_parameters():
        if p.is_floating_point() and not bool(torch.isfinite(p).all()):
            raise BasinlabError(f"{path}: weight {name} holds NaN or infinite values; the directory is damaged: "
                                "download or write it again")


def check_tokenizer(tokenizer: Any, text_config: Any, where: str) -> None:
    """The tokenizer's vocabulary is the model's, and its PAD/BOS are the config's."""
    from basinlab.training.checkpoint import tokenizer_vocab_size

    size, vocab = tokenizer_vocab_size(tokenizer), int(text_config.vocab_size)
    if size is not None and size != vocab:
        raise BasinlabError(f"{where} has {size} tokens but the model's vocabulary has {vocab}; give the model's own "
                            "tokenizer.json (or --format ids)")
    pairs = (("PAD", tokenizer.pad_id, text_config.pad_token_id), ("BOS", tokenizer.bos_id, text_config.bos_token_id))
    bad = [f"{n} {a} in the tokenizer, {b} in config.json" for n, a, b in pairs if b is not None and a != int(b)]
    if bad:
        raise BasinlabError(f"{where} does not belong to this model ({bad[0]}); give the model's own tokenizer.json")


# ---- the family --------------------------------------------------------------------------------------------------


def hf_classes():
    """``(DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion)``, or one line when transformers lacks them."""
    try:
        from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise BasinlabError("DiffusionGemma needs transformers >= 5.25: pip install 'basinlab[dgemma]'") from None
    hf_logging.disable_progress_bar()  # basinlab's own progress, not a bar per load or save
    return DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion


def tiny_config(vocab_size: int, canvas_length: int, hidden: int = 64, layers: int = 2, heads: int = 2,
                experts: int = 4, pad_id: int = 0, bos_id: int = 2, eos_id: int = 1) -> Any:
    """A small DiffusionGemma config built with transformers' own config classes: a ``hidden``-wide text model of
    ``layers`` layers and ``experts`` experts (top 2), and a one-layer 16-wide vision tower (``vision_config=None``
    would build Gemma 4's 167M-parameter tower)."""
    from transformers import DiffusionGemmaTextConfig, Gemma4VisionConfig

    config_cls, _ = hf_classes()
    head = hidden // heads
    text = DiffusionGemmaTextConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=1, head_dim=head, global_head_dim=head,
        num_experts=experts, top_k_experts=min(2, experts), moe_intermediate_size=hidden // 2,
        enable_moe_block=True, sliding_window=canvas_length, max_position_embeddings=4 * canvas_length + 8,
        pad_token_id=pad_id, bos_token_id=bos_id, eos_token_id=eos_id,
        layer_types=["sliding_attention"] * (layers - 1) + ["full_attention"])
    vision = Gemma4VisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                num_key_value_heads=2, head_dim=8, patch_size=4, position_embedding_size=64)
    return config_cls(text_config=text, vision_config=vision, canvas_length=canvas_length)


class DiffusionGemmaFamily(ModelFamily):
    """``model.family: diffusion_gemma``; loads ``model_type: diffusion_gemma`` directories in place (SPEC 2c)."""

    name = MODEL_TYPE
    model_types = (MODEL_TYPE,)
    lora_targets = LORA_TARGETS

    def export(self, run: Any, out: str | Path, raw: bool = False) -> Path:
        """``basinlab export --format hf``: :func:`export_hf`."""
        return export_hf(run, out, raw=raw)

    def init_process(self, model_cfg: Any, data_vocab: int, seqs: torch.Tensor | None = None) -> Any:
        """Fine-tuning ``model.init``: the uniform process over the model's whole vocabulary (SPEC 2c), which the
        data's ids must fit."""
        from basinlab.diffusion.uniform import UniformProcess

        V = int(read_config(Path(model_cfg.init)).get("text_config", {}).get("vocab_size", 0))
        top = int(seqs.max()) if seqs is not None and seqs.numel() else data_vocab - 1
        if V < 1 or top >= V:
            raise BasinlabError(f"model.init={model_cfg.init} has a vocabulary of {V} tokens but the data hold id "
                                f"{top}; use data whose ids lie below it (data.markov_vocab)")
        return UniformProcess(V)

    def build(self, model_cfg: Any, vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        """With ``model.init``: that directory's network (:meth:`init_network`). Else a tiny DiffusionGemma of
        ``model.n_layer`` layers, ``model.d_model`` wide (``model.n_head`` heads), 4 experts, over the ``V`` states
        plus PAD (``V``) and BOS (``V + 1``), canvas ``L``: the ``dgemma-demo`` preset's network. It predicts the
        ``V`` states only (``n_outputs``)."""
        from basinlab.config import resolve_arch

        if getattr(model_cfg, "init", None):
            network = self.init_network(model_cfg.init, seq_len, torch.device("cpu"))
            if process.n_outputs != network.vocab_size:
                raise BasinlabError(f"model.init={model_cfg.init} predicts {network.vocab_size} tokens; the "
                                    f"{process.name} process needs {process.n_outputs}")
            return network

        arch = resolve_arch(model_cfg)
        V = int(process.n_outputs)
        config = tiny_config(V + 2, seq_len, hidden=int(arch["d_model"]), layers=max(2, int(arch["n_layer"])),
                             heads=int(arch["n_head"]), pad_id=V, bos_id=V + 1, eos_id=V)
        return DiffusionGemmaNetwork(hf_classes()[1](config), n_outputs=V)

    def rebuild(self, arch: dict[str, Any], vocab_size: int, seq_len: int, process: Any) -> torch.nn.Module:
        config_cls, model_cls = hf_classes()
        return DiffusionGemmaNetwork(model_cls(config_cls.from_dict(dict(arch["hf_config"]))),
                                     n_outputs=arch.get("n_outputs"))

    def init_network(self, path: str | Path, seq_len: int, device: torch.device) -> DiffusionGemmaNetwork:
        """The network of directory ``path`` in float32 on ``device``, to train from (``model.init``); its
        canvas must hold the data's sequences (``data.seq_len = canvas_length``)."""
        network = load_network(Path(path), device, torch.float32)
        if seq_len != network.canvas_length:
            raise BasinlabError(f"model.init={path}: the model's canvas holds {network.canvas_length} tokens but the "
                                f"data's sequences have {seq_len}; set data.seq_len={network.canvas_length}")
        return network

    #: :meth:`load_pretrained` takes a ``device_map`` (transformers' ``from_pretrained`` places it)
    device_maps = True

    def load_pretrained(self, path: str | Path, **options: Any) -> Any:
        return load_deployed(Path(path), **options)

    def size_estimate(self, model_cfg: Any, n_outputs: int) -> tuple[int, int, int] | None:
        return None  # checked from config.json before loading (placement)


def load_network(path: Path, device: torch.device, dtype: torch.dtype, device_map: Any = None
                 ) -> DiffusionGemmaNetwork:
    """Check ``path`` (memory first, then weights, then values) and load it with ``from_pretrained``.

    ``device_map``: the user's placement (a strategy such as ``"auto"``, a device, or module names -> devices,
    checked against the model's modules by :func:`~basinlab.models.placement.resolve_device_map`); without it the
    memory check decides (:func:`~basinlab.models.placement.placement`: one device, or ``"auto"`` over the GPUs)."""
    config = read_config(path)
    n_params = estimate_parameters(config)
    user_map = device_map
    device_map = device_map or placement(n_params, 2 if dtype == torch.bfloat16 else 4, device, str(path))
    config_cls, model_cls = hf_classes()
    try:
        hf_config = config_cls.from_pretrained(str(path))
    except (ValueError, TypeError, KeyError) as exc:
        raise BasinlabError(f"{path}/config.json is not a valid DiffusionGemma config: "
                            f"{str(exc).splitlines()[0][:160]}") from None
    with torch.device("meta"):
        skeleton = model_cls(hf_config)
    check_weights(path, skeleton)
    if user_map is not None and not (isinstance(user_map, str) and user_map in STRATEGIES):
        device_map = resolve_device_map(skeleton, user_map, dtype, str(path))
    del skeleton
    kwargs: dict[str, Any] = {"dtype": dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    hf = model_cls.from_pretrained(str(path), **kwargs)
    if device_map is None:
        hf.to(device)
    hf.eval()
    check_finite(hf, path)
    return DiffusionGemmaNetwork(hf)


def export_hf(run: str | Path, out: str | Path, raw: bool = False, **_: Any) -> Path:
    """Write a ``diffusion_gemma`` run (trained from ``model.init`` or built by the preset) as a directory that
    ``DiffusionGemmaForBlockDiffusion.from_pretrained`` loads with the same logits (``save_pretrained``, into a
    temporary directory first, then moved in file by file). ``config.json`` keeps the run it came from under
    ``basinlab``, so that exporting the same run again may replace it (and nothing else is overwritten)."""
    import os

    from basinlab.interop.checks import check_export_out, export_source
    from basinlab.training.checkpoint import load_trained

    dest = Path(out)
    check_export_out(run, dest)
    tm = load_trained(run, device="cpu", ema=not raw)
    if not isinstance(tm.model, DiffusionGemmaNetwork):
        raise BasinlabError(f"{run} is a {tm.meta.get('family', 'dit')} run; --format hf exports diffusion_gemma "
                            "runs (model.init=DIR or model.family=diffusion_gemma)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.tmp-{os.getpid()}"
    tm.model.hf.save_pretrained(str(tmp))
    config = json.loads((tmp / "config.json").read_text())
    config["basinlab"] = {"source": export_source(run), "weights": "raw" if raw else "ema", "step": tm.step}
    (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    dest.mkdir(exist_ok=True)
    for f in sorted(tmp.iterdir()):
        os.replace(f, dest / f.name)
    tmp.rmdir()
    return dest


# ---- a directory loaded in place (SPEC 2c): what --checkpoint DIR of probe, audit, sample and nll returns ------

TOKENIZER_FILE = "tokenizer.json"


@dataclass(repr=False)
class DeployedModel(TrainedModel):
    """A :class:`TrainedModel` of a directory loaded in place; its sequences are canvases, its texts laid out in
    them (:meth:`encode_lines`, SPEC 2c block layout)."""

    def dataset(self):
        raise BasinlabError(f"{self.path} is a deployed model, not a basinlab run: it has no training subset to "
                            "rebuild; give the texts (--members/--nonmembers/--texts), or fine-tune it first "
                            "(basinlab train CONFIG model.init=DIR)")

    def special_ids(self) -> list[int]:
        """PAD, BOS and EOS ids: never scored (the model's config, or its tokenizer's)."""
        text = self.model.hf.config.text_config
        eos = text.eos_token_id if isinstance(text.eos_token_id, list) else [text.eos_token_id]
        return sorted({int(i) for i in [text.pad_token_id, text.bos_token_id, *eos] if i is not None})

    def encode_lines(self, lines: list[str], fmt: str, where: str) -> Canvases:
        """The texts laid out in canvases (SPEC 2c block layout; :func:`~basinlab.models.canvases.lay_out`): each
        text, of any length, fills canvases of ``canvas_length`` in order, canvas ``k`` prompted by ``[BOS]`` and
        the text's earlier tokens, the last filled up with PAD (not scored)."""
        ids = [self._ids(line, fmt, where, i) for i, line in enumerate(lines, 1)]
        return lay_out(ids, self.seq_len, self.model.bos_id, self.model.pad_id, self.special_ids())

    def _ids(self, line: str, fmt: str, where: str, i: int) -> list[int]:
        if fmt == "text":
            if self.tokenizer is None:
                raise BasinlabError(f"{self.path} has no {TOKENIZER_FILE}: give token ids with --format ids")
            return list(self.tokenizer.encode(line))
        try:
            ids = [int(x) for x in line.split()]
        except ValueError:
            raise BasinlabError(f"{where} line {i}: not whitespace-separated integer token ids") from None
        bad = [x for x in ids if not 0 <= x < self.vocab_size]
        if bad:
            raise BasinlabError(f"{where} line {i}: token id {bad[0]} outside the vocabulary [0, {self.vocab_size})")
        return ids


def _tokenizer(path: Path, tokenizer: Any, text_config: Any):
    from basinlab.training.checkpoint import load_tokenizer

    if tokenizer is None and not (path / TOKENIZER_FILE).is_file():
        return None
    source = tokenizer if tokenizer is not None else path / TOKENIZER_FILE
    tok = load_tokenizer(source) if isinstance(source, (str, Path)) else source
    check_tokenizer(tok, text_config, f"tokenizer '{source}'" if isinstance(source, (str, Path)) else "the tokenizer")
    return tok


def load_deployed(path: Path, device: str | torch.device = "auto", ema: bool = True, tokenizer: Any = None,
                  precision: str = "auto", batch_size: int | None = 512, device_map: Any = None) -> DeployedModel:
    """Load directory ``path`` (fp32 on a CPU, bf16 on a GPU unless ``precision`` says otherwise; ``device_map``
    over several GPUs when one cannot hold it, or as the user places it: ``"auto"``, a device, or module names ->
    devices) with the uniform process over its whole vocabulary (SPEC 2c)."""
    from basinlab.config import Config
    from basinlab.diffusion import get_schedule
    from basinlab.diffusion.uniform import UniformProcess
    from basinlab.models import NetworkDenoiser, autocast_dtype, resolve_device

    dev = resolve_device(device)
    dtype = autocast_dtype(precision, dev) or torch.float32
    network = load_network(path, dev, dtype, device_map)
    text = network.hf.config.text_config
    tok = _tokenizer(path, tokenizer, text)
    V, L = network.vocab_size, network.canvas_length
    process = UniformProcess(V)
    schedule = get_schedule("loglinear", 1e-3)
    cfg = Config()
    cfg.data.seq_len = L
    first = next(network.parameters()).device
    denoiser = NetworkDenoiser(network, schedule, device=first, precision=precision, batch_size=batch_size,
                               process=process)
    meta = {"family": MODEL_TYPE, "vocab_size": V, "seq_len": L, "in_place": str(path)}
    return DeployedModel(model=network, denoiser=denoiser, tokenizer=tok, schedule=schedule, config=cfg,
                         vocab_size=V, seq_len=L, step=0, path=path, ema=ema, process=process, meta=meta)


#: the DiffusionGemma family (``FAMILIES["diffusion_gemma"]``)
FAMILY = DiffusionGemmaFamily()
