"""``basinlab convert`` and ``basinlab export``: checkpoints of other projects in and out. The logic lives in
:mod:`basinlab.interop` (``duo``, ``mdlm``, ``hf``) and the model families; this module parses. The audit of given
texts is :mod:`basinlab.cli.audit`."""

from __future__ import annotations

import argparse

from basinlab.errors import BasinlabError
from basinlab.registry import FORMATS, WEIGHTS


def register(sub: argparse._SubParsersAction) -> None:
    _register_convert(sub)
    _register_export(sub)


def _register_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import a Duo/UDLM or MDLM checkpoint (Hugging Face directory or Lightning .ckpt) as a basinlab run",
        description=(
            "Convert a Duo, UDLM or MDLM checkpoint into a basinlab run directory that every command reads "
            "(--checkpoint DIR). SRC is a Hugging Face directory (config.json + model.safetensors with backbone.* "
            "keys) or a Lightning .ckpt of Duo's or MDLM's trainer (state_dict + ema); config.json's model_type "
            "(mdlm: a masked model) or the .ckpt's hyper-parameters say which. Nothing in SRC is executed."
        ),
        epilog="examples:\n  basinlab convert duo-lm1b/ --out runs/duo-lm1b --tokenizer bert-base-uncased\n"
               "  basinlab convert mdlm-owt/ --out runs/mdlm-owt --tokenizer gpt2/tokenizer.json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="Hugging Face directory or Lightning .ckpt file")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="config overrides for the run, e.g. data.source=text data.path=corpus.txt")
    p.add_argument("--out", required=True, metavar="DIR", help="the basinlab run directory to write")
    p.add_argument("--tokenizer", metavar="NAME_OR_PATH",
                   help="bert-base-uncased, or a tokenizer.json / vocab.txt (default: one in SRC; else ids only)")
    p.add_argument("--weights", choices=WEIGHTS.names(),
                   help="which weights the run uses (default: ema when the source has them)")
    p.add_argument("--n-heads", type=int, help="attention heads, when a .ckpt does not record them")
    p.add_argument("--model-type", choices=("duo", "mdlm"),
                   help="the source's family, when a .ckpt does not record it (default: detected)")
    p.set_defaults(func=cmd_convert)


def _register_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export", help="write a basinlab run in the Duo/UDLM or MDLM Hugging Face layout, or its family's own",
        description="Write a basinlab run as config.json + model.safetensors (backbone.* keys), the layout Duo's, "
                    "UDLM's (--format duo-hf, uniform runs) and MDLM's (--format mdlm-hf, masked runs) own samplers "
                    "and evaluations load; --format hf writes a fine-tuned deployed model (model.init: LLaDA, "
                    "Dream) in its own layout (original key names and config.json).",
        epilog="example:\n  basinlab export --checkpoint runs/m256 --out exports/m256 --format duo-hf",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", required=True, metavar="RUN", help="run directory or checkpoint directory")
    p.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    p.add_argument("--format", required=True, choices=FORMATS.names(), metavar="FORMAT",
                   help=f"the layout to write: {FORMATS.help()} (hf: a deployed family's run in its own layout, "
                        "e.g. the directory DiffusionGemmaForBlockDiffusion.from_pretrained reads)")
    p.add_argument("--model-type", default="duo", choices=("duo", "duo_base", "udlm"),
                   help="model_type written to config.json with --format duo-hf (default duo)")
    p.add_argument("--raw", action="store_true", help="export the raw weights instead of the EMA ones")
    p.set_defaults(func=cmd_export)


# ---- convert / export -----------------------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    from basinlab.interop import convert

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise BasinlabError(f"unexpected argument '{bad[0]}'; give one SRC, then key=value overrides")
    ckpt = convert(args.src, args.out, family=args.model_type, tokenizer=args.tokenizer, weights=args.weights,
                   overrides=args.overrides, n_heads=args.n_heads)
    print(f"converted {args.src} into {ckpt}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import inspect

    export = FORMATS.get(args.format)
    options = {"raw": args.raw}
    if "model_type" in inspect.signature(export).parameters:
        options["model_type"] = args.model_type
    dest = export(args.checkpoint, args.out, **options)
    print(f"exported {args.checkpoint} to {dest} (config.json, model.safetensors)")
    return 0
