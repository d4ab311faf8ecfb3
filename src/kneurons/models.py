"""Loading a LLaVA-family model and its processor from a local directory, and the facts the method needs.

The same loader serves the embedded default's tiny captioner and a real ``llava-1.5-7b-hf`` directory: nothing is
ever fetched from a hub (``local_files_only``), and nothing here knows which of the two it holds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel, ProcessorMixin

from kneurons.errors import ModelError

_WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_PROCESSOR_FILES = ("processor_config.json", "preprocessor_config.json")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def check_model_dir(path: str | os.PathLike) -> Path:
    """Raise ModelError naming the directory and the missing part unless ``path`` holds a complete saved model."""
    path = Path(path)
    if not path.is_dir():
        raise ModelError(f"{path}: model directory not found")
    missing = []
    if not (path / "config.json").is_file():
        missing.append("config.json")
    if not any((path / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (" + " or ".join(_WEIGHT_FILES[::2]) + ")")
    if not any((path / f).is_file() for f in _PROCESSOR_FILES):
        missing.append("processor (" + " or ".join(_PROCESSOR_FILES) + ")")
    if not any((path / f).is_file() for f in _TOKENIZER_FILES):
        missing.append("tokenizer (" + " or ".join(_TOKENIZER_FILES) + ")")
    if missing:
        raise ModelError(f"{path}: incomplete model directory, missing " + ", ".join(missing))
    return path


@dataclass
class LoadedModel:
    """A LLaVA-family model with its processor and the facts the method uses.

    ``act_fns[l]`` is decoder layer l's ``mlp.act_fn`` module, whose output is O[l] of shape (B, T, d_ff).
    """

    model: PreTrainedModel
    processor: ProcessorMixin
    path: Path
    act_fns: list[nn.Module]
    image_token_id: int
    grid: tuple[int, int]

    @property
    def n_layers(self) -> int:
        """L, the number of decoder layers."""
        return len(self.act_fns)

    @property
    def d_ff(self) -> int:
        """d_ff, the width of each decoder FFN."""
        return int(self.model.config.get_text_config().intermediate_size)

    @property
    def n_image_tokens(self) -> int:
        """P, the number of image-token positions per image (rows × cols of the grid)."""
        return self.grid[0] * self.grid[1]

    @property
    def device(self) -> torch.device:
        return self.model.device

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: where ``input_ids`` (B, T) hold the image token; P of them in every row."""
        mask = input_ids == self.image_token_id
        counts = mask.sum(dim=1)
        if not bool((counts == self.n_image_tokens).all()):
            raise ModelError(
                f"{self.path}: inputs hold {counts.tolist()} image tokens per row, but the grid "
                f"{self.grid[0]}x{self.grid[1]} needs {self.n_image_tokens}; set model.grid in the config"
            )
        return mask


def decoder_act_fns(model: PreTrainedModel) -> list[nn.Module]:
    """Each decoder layer's ``mlp.act_fn`` module, in layer order; ModelError if a layer has none."""
    decoder = model.get_decoder()
    layers = getattr(decoder, "layers", None)
    if layers is None:
        raise ModelError(f"{type(model).__name__}: decoder {type(decoder).__name__} has no `layers` list")
    act_fns = []
    for i, layer in enumerate(layers):
        act_fn = getattr(getattr(layer, "mlp", None), "act_fn", None)
        if not isinstance(act_fn, nn.Module):
            raise ModelError(
                f"{type(model).__name__}: decoder layer {i} has no `mlp.act_fn` module (gated FFN expected)"
            )
        act_fns.append(act_fn)
    if len({id(a) for a in act_fns}) != len(act_fns):
        raise ModelError(f"{type(model).__name__}: decoder layers share one act_fn module; per-layer hooks impossible")
    return act_fns


def image_grid(model: PreTrainedModel, grid: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (rows, cols) grid of image tokens: ``grid`` if given, else square from the vision config."""
    if hasattr(model.config, "qformer_config"):
        raise ModelError(
            f"{type(model).__name__}: image features are Q-Former queries, not per-patch token positions; "
            "per-position activations and heatmaps are undefined for it"
        )
    if grid is not None:
        return int(grid[0]), int(grid[1])
    vision = getattr(model.config, "vision_config", None)
    if vision is None or not hasattr(vision, "image_size") or not hasattr(vision, "patch_size"):
        raise ModelError(
            f"{type(model).__name__}: no vision_config image_size/patch_size; give the heatmap grid in the config"
        )
    side = int(vision.image_size) // int(vision.patch_size)
    return side, side


def load_model(
    path: str | os.PathLike,
    device: str = "cpu",
    dtype: str = "float32",
    grid: tuple[int, int] | None = None,
) -> LoadedModel:
    """Load model and processor from a local directory (never from a hub), in eval mode without parameter grads.

    Raises ModelError (one line naming the directory or module) for a missing or incomplete directory or a
    decoder without per-layer ``mlp.act_fn`` modules.
    """
    path = check_model_dir(path)
    config = json.loads((path / "config.json").read_text())
    if "image_token_index" not in config and "image_token_id" not in config:
        raise ModelError(f"{path}: config.json has no image_token_id; image features must enter as token positions")
    model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype))
    processor = AutoProcessor.from_pretrained(path, local_files_only=True)
    model.to(device).eval().requires_grad_(False)  # inference only: GradCAM needs activation gradients alone
    return LoadedModel(
        model=model,
        processor=processor,
        path=path,
        act_fns=decoder_act_fns(model),
        image_token_id=int(model.config.image_token_id),
        grid=image_grid(model, grid),
    )


def load_job_model(job: Any) -> LoadedModel:
    """The model of a job: ``job.input.model`` loaded with ``job.params.model``'s device and dtype."""
    opts = job.params.model
    grid = opts.get("grid")
    return load_model(
        job.input.model,
        device=opts.get("device", "cpu"),
        dtype=opts.get("dtype", "float32"),
        grid=tuple(grid) if grid else None,
    )
