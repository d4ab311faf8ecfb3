"""Model families: everything a VLM family does differently lives in its adapter here, and nowhere else.

An adapter says which ``model_type`` values it serves, how its processor is loaded, which processor outputs are per
token (left-padded when rows are batched), how a batch's position ids are made, and which region of the original
image each image token covers (the token-to-pixel map of the heatmaps). Everything else is read from the
processor's own output for each image: the number and place of the image tokens (the positions of the image token
id in ``input_ids``), tile counts, grids and image sizes. Families whose image features are not token positions
(Q-Former) are refused at load with the reason.

Regions are (P, 4) float64 arrays [x0, y0, x1, y1] in pixels of the original (H, W) image, in the order of the
image tokens in ``input_ids``; a token that covers no pixel (LLaVA-NeXT's row newlines, a token over padding only)
has a row of NaN.

torch and transformers are imported where an adapter uses them, so that the family table (``family_for``) is cheap
to read: the Snakefile checks the configured model's family before any job.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kneurons.errors import ModelError

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, ProcessorMixin

Box = tuple[float, float, float, float]  # [x0, y0, x1, y1]


def grid_regions(rows: int, cols: int, box: Box) -> np.ndarray:
    """The cells of a rows × cols grid over ``box`` in raster order: (rows · cols, 4)."""
    x0, y0, x1, y1 = box
    xs, ys = np.linspace(x0, x1, cols + 1), np.linspace(y0, y1, rows + 1)
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([xs[c], ys[r], xs[c + 1], ys[r + 1]], axis=1)


def clip_regions(regions: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``regions`` (P, 4) clipped to an (H, W) image; a region left with no area becomes NaN."""
    h, w = size
    out = regions.astype(np.float64).copy()
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    out[(out[:, 2] <= out[:, 0]) | (out[:, 3] <= out[:, 1])] = np.nan
    return out


def _resized(size: dict, h: int, w: int) -> tuple[int, int]:
    """(H', W') of an (h, w) image after an image processor's resize to ``size`` (HF's rules)."""
    if size.get("height") and size.get("width"):
        return int(size["height"]), int(size["width"])
    short = int(size["shortest_edge"])
    if h <= w:
        return short, int(short * w / h)
    return int(short * h / w), short


def _center_crop_offsets(hw: tuple[int, int], crop: dict) -> tuple[int, int]:
    """(top, left) of a center crop of ``crop`` (height, width) from an image of (H, W) = ``hw``."""
    return (hw[0] - int(crop["height"])) // 2, (hw[1] - int(crop["width"])) // 2


def _patch_grid_regions(ip: Any, size: tuple[int, int], side: int) -> np.ndarray:
    """The side × side token grid of a CLIP-style image processor (optional pad to square, resize, center crop)
    mapped back to the original (H, W) image: (side², 4)."""
    h, w = size
    x_off = y_off = 0.0
    if getattr(ip, "do_pad", False):  # LLaVA's pad to a centred square before anything else
        m = max(h, w)
        x_off, y_off = (m - w) // 2, (m - h) // 2
        h_in, w_in = m, m
    else:
        h_in, w_in = h, w
    rh, rw = _resized(dict(ip.size), h_in, w_in) if getattr(ip, "do_resize", True) else (h_in, w_in)
    top, left, ph, pw = 0, 0, rh, rw
    if getattr(ip, "do_center_crop", False):
        top, left = _center_crop_offsets((rh, rw), dict(ip.crop_size))
        ph, pw = int(ip.crop_size["height"]), int(ip.crop_size["width"])
    cells = grid_regions(side, side, (0, 0, pw, ph))
    sx, sy = rw / w_in, rh / h_in
    x = (cells[:, [0, 2]] + left) / sx - x_off
    y = (cells[:, [1, 3]] + top) / sy - y_off
    return clip_regions(np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1), size)


def images_only(cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """A processor class like ``cls`` without its video processor (pass ``video_processor=None``): the same image
    processor, tokenizer and settings, the same outputs for images. Video processors need torchvision, which cannot
    be installed beside the CPU build of torch this project pins, and kneurons never processes a video (Qwen2-VL,
    Qwen2.5-VL, SmolVLM)."""

    class ImagesOnly(cls):  # type: ignore[valid-type, misc]
        __doc__ = images_only.__doc__

        @classmethod
        def get_attributes(klass) -> list[str]:
            return [a for a in super().get_attributes() if a != "video_processor"]

    ImagesOnly.__name__ = ImagesOnly.__qualname__ = f"{cls.__name__}ImagesOnly"
    return ImagesOnly


@dataclass(frozen=True)
class Family:
    """A family of VLMs whose image tokens are positions of one image token id in ``input_ids``.

    ``token_keys``: the processor outputs that are per token (B, T), left-padded when rows are batched; every other
    output is per image and is concatenated along its first dimension (zero-padded in the others).
    """

    name: str
    model_types: tuple[str, ...]
    token_keys: tuple[str, ...] = ("input_ids", "attention_mask")

    def load_processor(self, path: str | os.PathLike, model_type: str) -> ProcessorMixin:
        """The model directory's processor (never from a hub): transformers' processor class of ``model_type``,
        without its video half where it has one (``images_only``)."""
        import transformers
        from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

        cls = getattr(transformers, PROCESSOR_MAPPING_NAMES[model_type])
        if "video_processor" in cls.get_attributes():
            return images_only(cls).from_pretrained(path, local_files_only=True, video_processor=None)
        return cls.from_pretrained(path, local_files_only=True)

    def model_class(self) -> type:
        """The class whose ``from_pretrained`` loads a model directory of this family."""
        from transformers import AutoModelForImageTextToText

        return AutoModelForImageTextToText

    def positions(self, model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Position ids of a (possibly left-padded) batch: (B, T), counting the attended tokens only."""
        attention = inputs["attention_mask"]
        return (attention.long().cumsum(-1) - 1).clamp(min=0)

    def regions(self, model: PreTrainedModel, processor: ProcessorMixin, inputs: dict, size: tuple[int, int]):
        """(P, 4) region of the (H, W) = ``size`` original image covered by each image token of ``inputs``, the
        processor output of that one image (batch of one)."""
        raise NotImplementedError


def _n_image_tokens(model: PreTrainedModel, inputs: dict) -> int:
    return int((inputs["input_ids"][0] == model.config.image_token_id).sum())


def _checked(regions: np.ndarray, model: PreTrainedModel, inputs: dict, family: str) -> np.ndarray:
    p = _n_image_tokens(model, inputs)
    if len(regions) != p:
        raise ModelError(f"{family}: the token map has {len(regions)} regions but the processor emitted {p} tokens")
    return regions


class Llava(Family):
    """LLaVA-1.5 (and any LlavaForConditionalGeneration): a square grid of vision patches, CLS dropped."""

    def regions(self, model, processor, inputs, size):
        vision = model.config.vision_config
        side = int(vision.image_size) // int(vision.patch_size)
        return _checked(_patch_grid_regions(processor.image_processor, size, side), model, inputs, self.name)


class LlavaNext(Family):
    """LLaVA-NeXT / OneVision: the base image's grid, then the any-resolution tiles' grid with the padding removed
    (OneVision: resampled to fewer rows and columns when it has more than ``anyres_max_N`` tiles' worth of cells)
    and a newline token after each row (``pack_image_features``)."""

    def regions(self, model, processor, inputs, size):
        import torch
        from transformers.image_processing_utils import get_patch_output_size, select_best_resolution
        from transformers.models.llava_next.modeling_llava_next import unpad_image

        ip, config = processor.image_processor, model.config
        side = int(config.vision_config.image_size) // int(config.vision_config.patch_size)
        h, w = (int(v) for v in inputs["image_sizes"][0])
        if (h, w) != tuple(size):
            raise ModelError(f"{self.name}: processor image size {(h, w)} differs from the image's {tuple(size)}")
        s_h, s_w = (
            (int(ip.size["height"]), int(ip.size["width"]))
            if ip.size.get("height")
            else (ip.size["shortest_edge"],) * 2
        )
        top, left, c_h, c_w = 0, 0, s_h, s_w  # the base image: squeezed to s_h × s_w, then (LLaVA-NeXT) cropped
        if getattr(ip, "do_center_crop", False):
            top, left = _center_crop_offsets((s_h, s_w), dict(ip.crop_size))
            c_h, c_w = int(ip.crop_size["height"]), int(ip.crop_size["width"])
        base = grid_regions(side, side, (0, 0, c_w, c_h))
        base[:, [0, 2]] = (base[:, [0, 2]] + left) * w / s_w
        base[:, [1, 3]] = (base[:, [1, 3]] + top) * h / s_h
        bh, bw = select_best_resolution((h, w), config.image_grid_pinpoints)
        nh, nw = get_patch_output_size(np.broadcast_to(np.uint8(0), (1, h, w)), (bh, bw), "channels_first")
        tile = int(config.vision_config.image_size)
        rows, cols = (bh // tile) * side, (bw // tile) * side
        kept = unpad_image(torch.arange(rows * cols).view(1, rows, cols), (h, w))[0]  # the cells the model keeps
        cells = grid_regions(rows, cols, (0, 0, bw, bh))[kept.flatten().numpy()]
        box = (cells[:, 0].min(), cells[:, 1].min(), cells[:, 2].max(), cells[:, 3].max())  # on the padded canvas
        out_rows, out_cols = kept.shape
        max_tiles = str(getattr(config, "vision_aspect_ratio", "") or "")
        if max_tiles.startswith("anyres_max_"):  # OneVision: bilinear down to fewer cells over the same area
            ratio = math.sqrt(out_rows * out_cols / (int(max_tiles.removeprefix("anyres_max_")) * side**2))
            if ratio > 1.1:
                out_rows, out_cols = int(out_rows // ratio), int(out_cols // ratio)
        cells = grid_regions(out_rows, out_cols, box)
        cells[:, [0, 2]] = (cells[:, [0, 2]] - (bw - nw) // 2) * w / nw
        cells[:, [1, 3]] = (cells[:, [1, 3]] - (bh - nh) // 2) * h / nh
        newline = np.full((out_rows, 1, 4), np.nan)
        tiles = np.concatenate([cells.reshape(out_rows, out_cols, 4), newline], axis=1).reshape(-1, 4)
        return _checked(clip_regions(np.concatenate([base, tiles]), size), model, inputs, self.name)


class Qwen2VL(Family):
    """Qwen2-VL / Qwen2.5-VL: the image resized to multiples of patch · merge, patches merged merge × merge into
    one token, on the grid ``image_grid_thw`` the processor reports; M-RoPE position ids (3, B, T)."""

    def positions(self, model, inputs):
        ids, _ = model.model.get_rope_index(
            inputs["input_ids"],
            mm_token_type_ids=inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            attention_mask=inputs["attention_mask"],
        )
        return ids

    def regions(self, model, processor, inputs, size):
        _, gh, gw = (int(v) for v in inputs["image_grid_thw"][0])
        m = int(processor.image_processor.merge_size)
        return _checked(grid_regions(gh // m, gw // m, (0, 0, size[1], size[0])), model, inputs, self.name)


_ROW_COL = re.compile(r"<row_(\d+)_col_(\d+)>")


class Idefics3(Family):
    """Idefics3 / SmolVLM: the image resized to rows × cols tiles (each n × n tokens after the pixel shuffle, in
    raster order) followed by the global image squeezed into one tile; rows and cols from the processor's
    ``<row_i_col_j>`` tokens."""

    def regions(self, model, processor, inputs, size):
        h, w = size
        n = math.isqrt(int(processor.image_seq_len))
        tokens = processor.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
        tiles = [(int(m[1]), int(m[2])) for t in tokens if (m := _ROW_COL.fullmatch(str(t)))]
        rows, cols = (max(r for r, _ in tiles), max(c for _, c in tiles)) if tiles else (0, 0)
        parts = [
            grid_regions(n, n, (c * w / cols, r * h / rows, (c + 1) * w / cols, (r + 1) * h / rows))
            for r in range(rows)
            for c in range(cols)
        ]
        parts.append(grid_regions(n, n, (0, 0, w, h)))
        return _checked(np.concatenate(parts), model, inputs, self.name)


class MiniGPT4(Family):
    """MiniGPT-4, Llama-2 variant (kneurons.minigpt4): the image squashed to the processor's square (no crop), ViT
    patches concatenated ``patches_per_token`` at a time along each patch row, so each token is a 1 × 4 horizontal
    strip of patches: a 16 × 4 grid over the whole original image at 224 px (the paper's heatmap grid)."""

    def model_class(self) -> type:
        from kneurons.minigpt4 import MiniGPT4ForConditionalGeneration

        return MiniGPT4ForConditionalGeneration

    def load_processor(self, path, model_type):
        from kneurons.minigpt4 import MiniGPT4Processor

        return MiniGPT4Processor.from_pretrained(path, local_files_only=True)

    def regions(self, model, processor, inputs, size):
        _, _, h, w = inputs["pixel_values"].shape  # the processed image: the whole original, resized
        patch, per = int(model.config.vision_config.patch_size), int(model.config.patches_per_token)
        strips = grid_regions(h // patch, w // patch // per, (0, 0, size[1], size[0]))
        return _checked(strips, model, inputs, self.name)


@dataclass(frozen=True)
class Refused:
    """A family the method cannot run on, and why."""

    name: str
    model_types: tuple[str, ...]
    why: str


FAMILIES: tuple[Family, ...] = (
    Llava("LLaVA-1.5", ("llava",)),
    LlavaNext("LLaVA-NeXT / OneVision", ("llava_next", "llava_onevision")),
    Qwen2VL(
        "Qwen2-VL / Qwen2.5-VL",
        ("qwen2_vl", "qwen2_5_vl"),
        token_keys=("input_ids", "attention_mask", "mm_token_type_ids"),
    ),
    Idefics3("Idefics3 / SmolVLM", ("idefics3", "smolvlm")),
    MiniGPT4("MiniGPT-4 (Llama-2)", ("minigpt4",)),
)
REFUSED: tuple[Refused, ...] = (
    Refused(
        "BLIP-2 / InstructBLIP (Q-Former)",
        ("blip-2", "instructblip", "instructblipvideo"),
        "its image enters the decoder as Q-Former queries, not as per-patch token positions, so per-position "
        "activations (stage 1), the image-position perturbations and the heatmaps are undefined",
    ),
)


def family_for(model_type: str, where: str = "config.json") -> Family:
    """The adapter serving ``model_type``; ModelError (one line) for a refused or unknown family."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    for refused in REFUSED:
        if model_type in refused.model_types:
            raise ModelError(f"{where}: model_type {model_type!r} ({refused.name}) is not supported: {refused.why}")
    known = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise ModelError(f"{where}: model_type {model_type!r} has no kneurons adapter (supported: {known})")
