"""The embedded default's captioner: a small LlavaForConditionalGeneration trained from scratch on the CPU.

Architecture (chosen so that the decoder, not the vision tower, recognises objects): the vision tower's patch
embeddings (hidden_states[0]: patch conv + position embedding + pre-LayerNorm) go through a linear projector
(``projector_hidden_act="linear"``) into a Llama decoder with a gated SiLU MLP, so the decoder's FFNs at the image
positions must do the recognising. Word-level tokenizer from the ``tokenizers`` library.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    CLIPVisionConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from kneurons.captions import describe
from kneurons.coco import ImageRecord, read_image
from kneurons.inpaint import remove_objects
from kneurons.io import atomic_path
from kneurons.models import model_dtype
from kneurons.synth.record import TRAINING_SUMMARY

SPECIAL_TOKENS = ("<pad>", "<unk>", "<s>", "</s>", "<image>")


@dataclass(frozen=True)
class CaptionerSettings:
    """Architecture and training settings of the tiny captioner (config key ``captioner``)."""

    image_size: int = 96
    patch_size: int = 12
    vision_hidden: int = 64
    hidden: int = 128
    intermediate: int = 512
    layers: int = 6
    heads: int = 4
    steps: int = 1400
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.01
    inpaint_prob: float = 0.4
    seed: int = 0
    precision: str = "auto"


def record_caption(record: ImageRecord, removed: int | None = None) -> str:
    """The caption continuation of a synthetic record, without the object at index ``removed``."""
    names = [a.category for i, a in enumerate(record.annotations) if i != removed]
    return describe(record.extra["background"], names)


def build_tokenizer(texts: list[str]) -> PreTrainedTokenizerFast:
    """A lower-casing word-level tokenizer over the words and punctuation of ``texts``; BOS is prepended."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS)))
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
    )


def build_processor(tokenizer: PreTrainedTokenizerFast, settings: CaptionerSettings) -> LlavaProcessor:
    """A LlavaProcessor: CLIP-normalised square images and the image token expanded to P = (size/patch)²."""
    size = settings.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=settings.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )


def build_model(tokenizer: PreTrainedTokenizerFast, settings: CaptionerSettings) -> LlavaForConditionalGeneration:
    """A randomly initialised LlavaForConditionalGeneration reading the vision tower's patch embeddings."""
    s = settings
    vision = CLIPVisionConfig(
        hidden_size=s.vision_hidden,
        intermediate_size=2 * s.vision_hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=s.image_size,
        patch_size=s.patch_size,
    )
    p = (s.image_size // s.patch_size) ** 2
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=s.hidden,
        intermediate_size=s.intermediate,
        num_hidden_layers=s.layers,
        num_attention_heads=s.heads,
        num_key_value_heads=s.heads,
        hidden_act="silu",
        max_position_embeddings=p + 64,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        projector_hidden_act="linear",
        # hidden_states[0] (the patch embeddings); 0 itself is read as "unset" by transformers, so count back.
        vision_feature_layer=-(vision.num_hidden_layers + 1),
        vision_feature_select_strategy="default",
        image_seq_length=p,
        tie_word_embeddings=True,
    )
    model = LlavaForConditionalGeneration(config)
    model.generation_config.update(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def training_precision(setting: str) -> str:
    """The training's matmul precision: ``setting``, or for ``auto`` bfloat16 autocast where the CPU multiplies
    bfloat16 natively (AVX512-BF16 or AMX-BF16: about 2x a step here) and float32 elsewhere (emulated bfloat16 is
    slower than float32)."""
    return model_dtype(setting, "cpu")


def training_labels(batch: dict, prompt_len: int) -> torch.Tensor:
    """The labels of a training ``batch`` (B, T): its ids, with padding and the first ``prompt_len`` positions
    (image tokens and prompt) at -100, so the loss is on the caption and EOS only."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    labels[:, :prompt_len] = -100
    return labels


def training_batch(
    processor: LlavaProcessor, images: list[np.ndarray], texts: list[str], prompt_len: int
) -> tuple[dict, torch.Tensor]:
    """The processor's batch of ``images`` and ``texts`` (prompt + caption + EOS, padded to the longest) and its
    labels (``training_labels``)."""
    batch = processor(images=images, text=texts, return_tensors="pt", padding="longest")
    return batch, training_labels(batch, prompt_len)


def training_draws(
    rng: np.random.Generator, records: Sequence[ImageRecord], settings: CaptionerSettings
) -> list[tuple[int, int | None]]:
    """One training step's ``batch_size`` draws: (record index, index of the object to inpaint out, or None), a
    removal with probability ``inpaint_prob``."""
    return [
        (int(i), int(rng.integers(len(records[i].annotations))) if rng.random() < settings.inpaint_prob else None)
        for i in rng.integers(0, len(records), settings.batch_size)
    ]


def training_example(
    record: ImageRecord, image: np.ndarray, removed: int | None, prompt: str, eos: str
) -> tuple[np.ndarray, str]:
    """A training example: the (H, W, 3) ``image`` of ``record`` with its object ``removed`` Telea-inpainted out of
    its box (1-px dilation; None: the image as is), and its text, ``prompt``, the caption without that object and
    ``eos``."""
    if removed is not None:
        image = remove_objects(image, [record.annotations[removed]], source="box", dilate=1)
    return image, f"{prompt} {record_caption(record, removed)}{eos}"


class TrainingInputs:
    """Each training example's own processor output, made on its first draw and kept, keyed by (record, removed
    object): its token ids (prompt + caption + EOS) and its pixels (3, H, W). Processing each batch anew cost
    about 20 ms of a 320 ms step (bench/train_inputs.py), 6 % of the training, for images it had processed before.

    Pixels are kept in ``pixel_dtype``: bfloat16 under bfloat16 autocast, whose first convolution casts them so
    (the same bits as processing anew, half the memory of float32), else float32."""

    def __init__(self, processor: LlavaProcessor, prompt_len: int, pixel_dtype: torch.dtype) -> None:
        self.processor, self.prompt_len, self.pixel_dtype = processor, prompt_len, pixel_dtype
        self.ids: dict[Hashable, list[int]] = {}
        self.pixels: dict[Hashable, torch.Tensor] = {}

    def batch(
        self, keys: Sequence[Hashable], example: Callable[[Hashable], tuple[np.ndarray, str]]
    ) -> tuple[dict, torch.Tensor]:
        """The batch of ``keys``, padded as the processor pads a batch (input_ids, attention_mask (B, T),
        pixel_values (B, 3, H, W)), and its labels; ``example(key)`` gives a key's image and text on its first
        draw (the new ones of a batch are processed in one call)."""
        new = list(dict.fromkeys(k for k in keys if k not in self.ids))
        if new:
            images, texts = zip(*(example(k) for k in new), strict=True)
            out = self.processor(images=list(images), text=list(texts))
            for key, ids, pixels in zip(new, out["input_ids"], out["pixel_values"], strict=True):
                self.ids[key] = ids
                self.pixels[key] = torch.as_tensor(pixels).to(self.pixel_dtype)
        tokens = self.processor.tokenizer.pad(
            {"input_ids": [self.ids[k] for k in keys]}, padding="longest", return_tensors="pt"
        )
        batch = {**tokens, "pixel_values": torch.stack([self.pixels[k] for k in keys])}
        return batch, training_labels(batch, self.prompt_len)


def training_loss(
    model: LlavaForConditionalGeneration, batch: dict, labels: torch.Tensor, precision: str
) -> torch.Tensor:
    """The mean loss of one training batch, the forward pass in bfloat16 autocast if ``precision`` is bfloat16."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
        return model(**batch, labels=labels).loss


def _lr_factor(step: int, settings: CaptionerSettings) -> float:
    """Linear warm-up then cosine decay to 0."""
    if step < settings.warmup:
        return (step + 1) / settings.warmup
    progress = (step - settings.warmup) / max(1, settings.steps - settings.warmup)
    return 0.5 * (1 + math.cos(math.pi * progress))


def train_captioner(
    records: list[ImageRecord],
    prompt: str,
    out_dir: str | os.PathLike,
    settings: CaptionerSettings,
    log=print,
    provenance: dict | None = None,
) -> dict:
    """Train the captioner on ``records`` (synthetic COCO images) and save it with save_pretrained to ``out_dir``.

    Each step draws ``batch_size`` images; with probability ``inpaint_prob`` one object is removed by Telea
    inpainting on its box (each (image, object) inpainted once, on its first draw) and dropped from the caption.
    Loss only on the caption continuation and EOS. The forward pass runs in ``training_precision(settings.precision)``
    (bfloat16 autocast with eager attention, or float32); weights, gradients and AdamW state are float32.
    ``log`` gets a progress line every 50 steps (the workflow shows it on the console). Returns the training
    summary (settings, parameter count, wall time, final loss), saved as training.json with ``provenance`` (the
    training record, kneurons.synth.record) under its own key.
    """
    s = settings
    torch.manual_seed(s.seed)
    rng = np.random.default_rng(s.seed)
    images = [read_image(r.path) for r in records]
    captions = [record_caption(r) for r in records]
    tokenizer = build_tokenizer([prompt.replace("<image>", " ")] + [record_caption(r, 0) for r in records] + captions)
    processor = build_processor(tokenizer, s)
    model = build_model(tokenizer, s)
    model.train()
    precision = training_precision(s.precision)
    # Eager attention while training: CPU flash attention's backward in bfloat16 took 40 % of a step. config.json
    # does not record it, so the saved model loads with the default attention.
    model.set_attn_implementation("eager")
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=s.weight_decay, betas=(0.9, 0.98))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: _lr_factor(step, s))
    prompt_len = len(processor(images=[images[0]], text=[prompt])["input_ids"][0])
    inputs = TrainingInputs(processor, prompt_len, torch.bfloat16 if precision == "bfloat16" else torch.float32)

    def example(key: tuple[int, int | None]) -> tuple[np.ndarray, str]:  # asked once per key: then kept processed
        i, removed = key
        return training_example(records[i], images[i], removed, prompt, tokenizer.eos_token)

    t0, loss_avg = time.time(), None
    for step in range(s.steps):
        loss = training_loss(model, *inputs.batch(training_draws(rng, records, s), example), precision)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        loss_avg = loss.item() if loss_avg is None else 0.95 * loss_avg + 0.05 * loss.item()
        if step % 50 == 0 or step == s.steps - 1:
            spent = time.time() - t0
            left = spent / (step + 1) * (s.steps - step - 1)
            done = f"step {step + 1}/{s.steps}, loss {loss_avg:.4f}, {spent:.0f} s"
            log(f"training the captioner: {done}, ~{left:.0f} s left")
    wall = time.time() - t0
    model.eval()
    with atomic_path(out_dir) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        summary = {
            "settings": asdict(s),
            "prompt": prompt,
            "parameters": n_params,
            "train_images": len(records),
            "train_seconds": round(wall, 1),
            "torch_threads": torch.get_num_threads(),
            "precision": precision,
            "final_loss": round(loss_avg, 4),
        } | ({"provenance": provenance} if provenance is not None else {})
        (Path(tmp) / TRAINING_SUMMARY).write_text(json.dumps(summary, indent=1))
    return summary
