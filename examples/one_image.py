"""One image from Python: find bear's knowledge neurons in a synthetic image, ablate them, caption, save the heatmap.

The image is the first of the split with one bear whose caption names it (stage 2 needs that position).

Run after the embedded default (`snakemake --cores 2`), from the repository root:

    python examples/one_image.py                  # the trained captioner and its held-out split
    python examples/one_image.py --model DIR --annotations A.json --images DIR --knowledge bear --out DIR
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kneurons import KnowledgeNeurons, Settings
from kneurons.captions import mentions
from kneurons.coco import image_records, load_coco


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/embedded-captioner")
    ap.add_argument("--annotations", default="results/synth/annotations/instances_val.json")
    ap.add_argument("--images", default="results/synth/val")
    ap.add_argument("--knowledge", default="bear")
    ap.add_argument("--activation", default="q0.99", help="stage-1 threshold (a number, or a quantile like q0.99)")
    ap.add_argument("--out", default="results/examples")
    args = ap.parse_args()

    kn = KnowledgeNeurons.load(args.model)  # the embedded default's prompt: "<image>The image shows a"
    records = image_records(load_coco(args.annotations), args.images)
    alone = [r for r in records if [a.category for a in r.annotations].count(args.knowledge) == 1]
    named = [r for r, c in zip(alone, kn.caption([r.path for r in alone]), strict=True) if mentions(c, args.knowledge)]
    if not named:  # stage 2 needs the position where the caption predicts k
        raise SystemExit(f"no image with one {args.knowledge} in {args.annotations} has a caption that names it")
    record = named[0]
    box = next(a.bbox for a in record.annotations if a.category == args.knowledge)

    found = kn.find(record.path, args.knowledge, box=box, settings=Settings(activation=args.activation))
    ours = found.neurons("ours")
    print(f"image {record.id}: {found.caption!r}; inpainted: {found.inpainted_caption!r}")
    print(f"C^k: {int(found.candidates.sum())} candidates, N_k: {len(ours)} neurons, e.g. {ours[:5]}")
    with kn.ablate(ours):
        print("N_k ablated:       ", kn.caption([record.path])[0])
    with kn.ablate(found.neurons("ours_control")):
        print("its control ablated:", kn.caption([record.path])[0])
    for neuron, tokens in zip(ours[:3], kn.decode(ours[:3]), strict=False):
        print(f"L{neuron[0]} #{neuron[1]} promotes {tokens}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kn.heatmap(found).savefig(out / f"{args.knowledge}_{record.id}.png", dpi=120)
    print(f"heatmap: {out / f'{args.knowledge}_{record.id}.png'}")


if __name__ == "__main__":
    main()
