"""Paper scale on a GPU, in one run: a random-weight LLaVA-1.5-7B built from configs (Llama-2-7B decoder, CLIP
ViT-L/14-336 tower, P = 576; and the same tower at 112 px, P = 64), nothing downloaded. For each P and dtype it
measures per-caption ``generate`` (transformers, one row at a time) against the project's batched perturbation
path (ms per caption and their ratio), the prompt pass's FLOPs against the card's peak (a large matmul in that
dtype: how far from the roofline), and the peak memory of each model rule's work (activations and GradCAM, both
in rule dumps, which peaks at the larger of the two; perturb).
It writes one JSON (default bench/results/gpu_scale.json).

Usage: python bench/gpu_scale.py [--device cuda] [--dtypes float16 bfloat16] [--rows 256] [--batch 64]
       [--naive-rows 16] [--shapes llava-1.5-7b] [--out bench/results/gpu_scale.json]
The tests run it with --shapes tiny on the CPU (so it cannot rot); on a CPU memory peaks are not measured (null).
Random weights give random captions: the timings, FLOPs and memory are the real model's, the captions are not.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from kneurons.dumps import gradcam, image_activations
from kneurons.families import family_for
from kneurons.generation import image_inputs
from kneurons.io import write_json
from kneurons.models import LoadedModel, decoder_act_fns
from kneurons.perturb import layer_units, perturbed_captions
from kneurons.protocol import ABLATION, NOISE, Perturbation
from kneurons.synth.captioner import CaptionerSettings, build_processor, build_tokenizer

# name: vision (hidden, intermediate, layers, heads, patch), decoder (hidden, intermediate, layers, heads, vocab)
SHAPES = {
    "llava-1.5-7b": {"vision": (1024, 4096, 24, 16, 14), "decoder": (4096, 11008, 32, 32, 32064)},
    "tiny": {"vision": (32, 64, 2, 2, 14), "decoder": (64, 128, 2, 2, 256)},
}
SIDES = {576: 336, 64: 112}  # P -> image side in px (14 px patches)
PROMPT = "<image>The image shows a"
CAPTION, WORD = "bear on the grass .", "bear"


def build(shape: dict, side: int, device: str, dtype: torch.dtype) -> LoadedModel:
    """The random-weight LLaVA of ``shape`` at ``side`` px, made on ``device`` in ``dtype``, with a LlavaProcessor."""
    vh, vff, vl, vheads, patch = shape["vision"]
    h, ff, layers, heads, vocab = shape["decoder"]
    tok = build_tokenizer([f"the image shows a {CAPTION}"])
    processor = build_processor(tok, CaptionerSettings(image_size=side, patch_size=patch))
    p = (side // patch) ** 2
    vision = CLIPVisionConfig(
        hidden_size=vh,
        intermediate_size=vff,
        num_hidden_layers=vl,
        num_attention_heads=vheads,
        image_size=side,
        patch_size=patch,
    )
    text = LlamaConfig(
        vocab_size=max(vocab, len(tok)),
        hidden_size=h,
        intermediate_size=ff,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=p,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = LlavaForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval().requires_grad_(False)
    model.generation_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    return LoadedModel(
        model=model,
        processor=processor,
        path=Path(f"<random {side} px>"),
        family=family_for("llava", "bench"),
        act_fns=decoder_act_fns(model),
        image_token_id=int(config.image_token_id),
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _peak(device: str, work) -> float | None:
    """The peak memory (GiB) allocated while ``work()`` runs, above what was allocated before (CUDA only)."""
    if not device.startswith("cuda"):
        work()
        return None
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    work()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - base) / 2**30, 3)


def prompt_flops(shape: dict, p: int, tokens: int) -> float:
    """FLOPs of one prompt pass of ``tokens`` tokens (p of them image tokens): vision tower over p + 1 patches,
    projector, decoder (projections, gated FFN, attention scores) and the LM head at the last position."""
    vh, vff, vl, _, _ = shape["vision"]
    h, ff, layers, _, vocab = shape["decoder"]
    vision = vl * (p + 1) * 2 * (4 * vh * vh + 2 * vh * vff) + vl * 4 * (p + 1) ** 2 * vh
    projector = p * 2 * (vh * h + h * h)
    decoder = layers * (tokens * 2 * (4 * h * h + 3 * h * ff) + 2 * tokens * tokens * h)  # causal: half of 4 T² h
    return float(vision + projector + decoder + 2 * h * vocab)


def matmul_peak(device: str, dtype: torch.dtype, n: int) -> float:
    """The card's practical peak: FLOP/s of an n x n matmul in ``dtype`` (best of 5)."""
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    best = float("inf")
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def measure(loaded: LoadedModel, shape: dict, p: int, args, device: str, dtype: torch.dtype) -> dict:
    """Every figure of one (P, dtype)."""
    rng = np.random.default_rng(0)
    side = SIDES[p]
    images = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(8)]
    units = layer_units(
        [[layer, 17 * j + layer] for layer in range(loaded.n_layers) for j in range(3)], loaded.n_layers
    )
    kinds = [Perturbation(NOISE, level, seed) for seed in range(4) for level in (1.0, 3.0)] + [Perturbation(ABLATION)]
    rows = [(kinds[r % len(kinds)], r % len(images)) for r in range(args.rows)]
    gen = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch}

    def batched():
        return perturbed_captions(loaded, images, PROMPT, units, rows, 0.5, **gen)

    perturbed_captions(loaded, images, PROMPT, units, rows[: args.batch], 0.5, **gen)  # warm-up
    _sync(device)
    t0 = time.perf_counter()
    batched()
    _sync(device)
    t_batched = (time.perf_counter() - t0) / len(rows)
    parts = image_inputs(loaded, images, PROMPT)
    with torch.inference_mode():
        loaded.model.generate(**parts[0], do_sample=False, max_new_tokens=2)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        for r in range(args.naive_rows):
            loaded.model.generate(
                **parts[r % len(parts)], do_sample=False, num_beams=1, max_new_tokens=args.max_new_tokens
            )
        _sync(device)
    t_naive = (time.perf_counter() - t0) / args.naive_rows
    tokens = int(parts[0]["input_ids"].shape[1])
    batch = {k: v.repeat(args.batch, *[1] * (v.ndim - 1)) for k, v in parts[0].items()}
    with torch.inference_mode():
        loaded.model(**batch, logits_to_keep=1)
        _sync(device)
        t0 = time.perf_counter()
        loaded.model(**batch, logits_to_keep=1)
        _sync(device)
    t_prompt = time.perf_counter() - t0
    flops = prompt_flops(shape, p, tokens) * args.batch
    peak = matmul_peak(device, dtype, args.matmul)
    memory = {
        "activations": _peak(device, lambda: image_activations(loaded, images[:2], PROMPT)),
        "gradcam": _peak(device, lambda: gradcam(loaded, images[0], PROMPT, CAPTION, WORD)),
        "perturb": _peak(
            device, lambda: perturbed_captions(loaded, images, PROMPT, units, rows[: args.batch], 0.5, **gen)
        ),
    }
    return {
        "P": p,
        "dtype": str(dtype).removeprefix("torch."),
        "prompt_tokens": tokens,
        "rows": len(rows),
        "batch_size": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "ms_per_caption_generate": round(t_naive * 1e3, 3),
        "ms_per_caption_batched": round(t_batched * 1e3, 3),
        "speedup_batched_vs_generate": round(t_naive / t_batched, 2),
        "prompt_pass_seconds": round(t_prompt, 4),
        "prompt_pass_tflops": round(flops / t_prompt / 1e12, 3),
        "matmul_peak_tflops": round(peak / 1e12, 3),
        "share_of_peak": round(flops / t_prompt / peak, 3),
        "peak_memory_gib": memory,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", nargs="+", default=["float16", "bfloat16"])
    ap.add_argument("--shapes", default="llava-1.5-7b", choices=sorted(SHAPES))
    ap.add_argument("--sizes", type=int, nargs="+", default=[576, 64], choices=sorted(SIDES))
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--naive-rows", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--matmul", type=int, default=8192, help="side of the matmul that measures the peak")
    ap.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    ap.add_argument("--out", default="bench/results/gpu_scale.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = SHAPES[args.shapes]
    runs = []
    for p in args.sizes:
        for name in args.dtypes:
            dtype = getattr(torch, name)
            loaded = build(shape, SIDES[p], args.device, dtype)
            runs.append(measure(loaded, shape, p, args, args.device, dtype))
            print(json.dumps(runs[-1]), flush=True)
            del loaded
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    card = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else platform.processor()
    write_json(
        args.out,
        {
            "shapes": args.shapes,
            "device": args.device,
            "card": card or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
