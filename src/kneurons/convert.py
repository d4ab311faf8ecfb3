"""Command line: convert a model's released files into a local directory that kneurons (and transformers) load.

    python -m kneurons.convert minigpt4 --vit eva_vit_g.pth --checkpoint pretrained_minigpt4_llama2_7b.pth \\
        --llm Llama-2-7b-chat-hf --out models/minigpt4-llama2-7b [--vision-config vision.json]

A bad input is one line on stderr naming the file and what is wrong, exit status 1, and no output directory.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from kneurons.errors import KneuronsError

FAMILIES = ("minigpt4",)  # families with a converter


def convert_model(spec: Mapping, out: str | Path) -> Path:
    """Convert the released files named by a ``model.convert`` mapping (``family`` and its paths) into ``out``."""
    if spec.get("family") != "minigpt4":
        raise KneuronsError(f"model.convert.family: {spec.get('family')!r} has no converter (known: {FAMILIES})")
    from kneurons.minigpt4.convert import MiniGPT4Sources, convert_minigpt4

    return convert_minigpt4(MiniGPT4Sources.from_mapping(spec), out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kneurons.convert", description=__doc__.splitlines()[0])
    families = parser.add_subparsers(dest="family", required=True)
    mg = families.add_parser("minigpt4", help="MiniGPT-4, Llama-2 variant (EVA ViT-g + llama_proj + Llama-2)")
    mg.add_argument("--vit", type=Path, required=True, help="eva_vit_g.pth: the EVA ViT's flat state dict")
    mg.add_argument("--checkpoint", type=Path, required=True, help="pretrained_minigpt4_llama2_7b.pth (llama_proj)")
    mg.add_argument("--llm", type=Path, required=True, help="a Llama-architecture HF directory with its tokenizer")
    mg.add_argument("--out", type=Path, required=True, help="the model directory to write (must not exist)")
    mg.add_argument("--vision-config", type=Path, help="a Blip2VisionConfig JSON replacing the ViT-g defaults")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.out.exists():
            raise KneuronsError(f"{args.out}: already exists; give a new directory")
        spec = {"family": args.family, "vit": args.vit, "checkpoint": args.checkpoint, "llm": args.llm}
        print(convert_model(spec | {"vision_config": args.vision_config}, args.out))
    except KneuronsError as e:
        print(f"kneurons: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
