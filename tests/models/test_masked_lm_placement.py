"""Where LLaDA and Dream load (issue 24): the memory decision (one device, spread over the GPUs, refused) with given
free-memory figures, and accelerate's placement (``device_map``) giving the plain load's logits exactly. Several GPUs
cannot be tested on a CPU: a map of several blocks on the CPU runs accelerate's hooks, the code path they use."""

from __future__ import annotations

import pytest
import torch

import basinlab
from basinlab.errors import BasinlabError
from basinlab.models.placement import placement
from tests.models.masked_lm_reference import write

GB = 10**9
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("n, size, device, free, expected", [
    (GB, 2, CUDA, [2.3 * GB], None),  # 2.2 GB asked for, 2.3 free
    (GB, 2, CUDA, [2.1 * GB, 0.2 * GB], "auto"),  # one GPU short, both together enough
    (GB, 4, CPU, [4.5 * GB], None),
])
def test_placement_fits_one_device_or_spreads_over_the_gpus(n, size, device, free, expected):
    assert placement(n, size, device, "m", free=free) == expected


@pytest.mark.parametrize("n, size, device, free, message", [
    (GB, 2, CUDA, [1.0 * GB, 1.0 * GB], r"need about 2.0 GB in bf16, more than the 953.7 MB free on cuda \(1.9 GB on "
                                        r"all 2 GPUs\); it would fit one GPU with 2.0 GB free in bf16"),
    (GB, 4, CPU, [4.3 * GB, 9 * GB], "more than the 4.0 GB free on cpu \\(.*\\); it would fit one GPU"),  # never spread
    (100 * GB, 2, CUDA, [80 * GB], "it would fit 3 80 GB GPUs in bf16"),
])
def test_placement_refuses_what_cannot_fit_in_one_line(n, size, device, free, message):
    with pytest.raises(BasinlabError, match=message) as err:
        placement(n, size, device, "m", free=free)
    assert "\n" not in str(err.value) and str(err.value).startswith("m: 1.00B parameters" if n == GB else "m: 100")


def test_diffusion_gemma_uses_the_same_placement():
    from basinlab.models import diffusion_gemma

    assert diffusion_gemma.placement is placement


def _blocks(model) -> dict[str, str]:
    """Every top-level block of the network on the CPU, one map entry each (accelerate's hooks join them)."""
    lm = model.model.lm
    names = [f"lm.model.{n}" for n, _ in lm.model.named_children() if n != "layers"]
    names += [f"lm.model.layers.{i}" for i in range(len(lm.model.layers))] + ["lm.lm_head"]
    return dict.fromkeys(names, "cpu")


@pytest.mark.parametrize("kind, options", [("llada", {"shards": 2}), ("llada", {"weight_tying": True}),
                                           ("dream", {})])
def test_a_placed_load_gives_the_plain_loads_logits(tmp_path, kind, options):
    ckpt = write(kind, tmp_path / kind, **options)
    plain = basinlab.load(ckpt, device="cpu")
    assert plain.model.hf_device_map is None
    z = torch.randint(0, 40, (3, 10), generator=torch.Generator().manual_seed(3))
    z[:, 4] = plain.process.mask_index
    want = plain.denoiser(z, 0.5)
    for device_map in ("auto", {"": "cpu"}, _blocks(plain)):
        placed = basinlab.load(ckpt, device="cpu", device_map=device_map)
        assert placed.model.hf_device_map  # NetworkDenoiser leaves it where accelerate put it
        assert torch.equal(placed.denoiser(z, 0.5), want)
        assert placed.model.lm.model.embed_tokens.weight.device.type == "cpu"
    assert hasattr(placed.model.lm.model.layers[0], "_hf_hook")  # the several-block map runs accelerate's hooks
    if options.get("weight_tying"):
        assert placed.model.lm.lm_head.weight is placed.model.lm.model.embed_tokens.weight


def test_bad_device_maps_are_refused_in_one_line(tmp_path):
    ckpt = write("llada", tmp_path / "llada")
    gpus = torch.cuda.device_count()
    cases = [({"lm.model.layers.0": "cpu"}, "device_map places no device for lm.model.embed_tokens.weight"),
             ({"": "disk"}, "do not fit the GPUs and the CPU's free memory together"),
             ({"": "gpu0"}, "device_map names 'gpu0', not a device"),
             ({"": f"cuda:{gpus}"}, f"but {gpus} GPUs are visible")]
    for device_map, message in cases:
        with pytest.raises(BasinlabError, match=message) as err:
            basinlab.load(ckpt, device_map=device_map)
        assert "\n" not in str(err.value)


def test_a_basinlab_run_refuses_a_device_map(tmp_path):
    from basinlab.config import load_config
    from basinlab.training.trainer import train

    cfg = load_config("demo", ["train.steps=1", "data.n_train=8", "data.markov_pool=100",
                               "data.n_test=8", "train.batch_size=8", "train.progress=false"])
    result = train(cfg, out_dir=tmp_path / "run")
    with pytest.raises(BasinlabError, match="is a basinlab run, which loads on one device; drop device_map"):
        basinlab.load(result.out_dir, device_map="auto")
