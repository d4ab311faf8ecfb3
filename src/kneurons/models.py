"""Loading a VLM and its processor from a local directory with its family's adapter, and the facts the method needs.

The same loader serves the embedded default's tiny captioner and a real ``llava-1.5-7b-hf`` directory: nothing is
ever fetched from a hub (``local_files_only``), and nothing here knows which of the two it holds.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel, ProcessorMixin

from kneurons.errors import ModelError
from kneurons.families import Family, family_for, grid_regions

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
    """A VLM with its processor, its family's adapter and the facts the method uses.

    ``act_fns[l]`` is decoder layer l's ``mlp.act_fn`` module, whose output is O[l] of shape (B, T, d_ff). The image
    tokens of a row are where its ``input_ids`` hold ``image_token_id``: P is read from each image's processor
    output and may differ between images. ``grid`` (rows, cols), if set, replaces the family's token-to-pixel map
    by a regular grid over the whole image (MiniGPT-4-style strips).
    """

    model: PreTrainedModel
    processor: ProcessorMixin
    path: Path
    family: Family
    act_fns: list[nn.Module]
    image_token_id: int
    grid: tuple[int, int] | None = None

    @property
    def n_layers(self) -> int:
        """L, the number of decoder layers."""
        return len(self.act_fns)

    @property
    def d_ff(self) -> int:
        """d_ff, the width of each decoder FFN."""
        return int(self.model.config.get_text_config().intermediate_size)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) bool: where ``input_ids`` (B, T) hold the image token; ModelError if a row holds none."""
        mask = input_ids == self.image_token_id
        if not bool(mask.any(dim=1).all()):
            raise ModelError(
                f"{self.path}: a prompt holds no image token (id {self.image_token_id}); "
                "the prompt must contain the processor's image placeholder"
            )
        return mask

    def positions(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """The family's position ids for a (left-padded) batch of processor ``inputs``: (B, T) or (3, B, T)."""
        return self.family.positions(self.model, inputs)

    def regions(self, inputs: dict[str, torch.Tensor], size: tuple[int, int]) -> np.ndarray:
        """(P, 4) [x0, y0, x1, y1] region of the (H, W) original image each image token of ``inputs`` (one image's
        processor output) covers, NaN for a token that covers none (kneurons.families)."""
        if self.grid is None:
            return self.family.regions(self.model, self.processor, inputs, size)
        p = int((inputs["input_ids"][0] == self.image_token_id).sum())
        if p != self.grid[0] * self.grid[1]:
            raise ModelError(
                f"{self.path}: the image has {p} image tokens, but model.grid {self.grid[0]}x{self.grid[1]} "
                f"covers {self.grid[0] * self.grid[1]}"
            )
        return grid_regions(*self.grid, (0, 0, size[1], size[0]))


def weight_of(module: nn.Module) -> torch.Tensor:
    """``module.weight`` where it lives; a weight accelerate offloaded (on the meta device outside a forward pass,
    model.device_map with "disk" or "cpu" offload) is read in and copied."""
    if module.weight.device.type != "meta":
        return module.weight
    from accelerate.utils import align_module_device

    with align_module_device(module):
        return module.weight.detach().clone()


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


def cpu_multiplies_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX-BF16); emulated bfloat16 is slower than
    float32."""
    caps = torch.cpu.get_capabilities()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def model_dtype(setting: str, device: str = "cpu") -> str:
    """The dtype a model is loaded in: ``setting``, or for ``auto`` bfloat16 where ``device`` computes in it
    natively (a CUDA card with bfloat16, a CPU with AVX512-BF16 or AMX-BF16), else float16 on CUDA and float32 on
    the CPU."""
    if setting != "auto":
        return setting
    if str(device).startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16" if cpu_multiplies_bfloat16() else "float32"


def load_model(
    path: str | os.PathLike,
    device: str = "cpu",
    dtype: str = "float32",
    grid: tuple[int, int] | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | None = None,
) -> LoadedModel:
    """Load model and processor from a local directory (never from a hub), in eval mode without parameter grads,
    with the adapter of its family (config.json's ``model_type``), on ``device``, or spread by accelerate over the
    devices of ``device_map`` (e.g. "auto": a model larger than one GPU; inputs then go to its first device),
    weights mapped to "disk" kept in ``offload_folder``; ``dtype`` may be "auto" (``model_dtype``). In bfloat16
    on the CPU attention runs eager: torch's CPU flash attention is slower there (about 10 % a caption, and its
    backward, which GradCAM runs, was 40 % of a bfloat16 training step).

    Raises ModelError (one line naming the directory or module) for a missing or incomplete directory, a family
    without an adapter or refused (Q-Former), or a decoder without per-layer ``mlp.act_fn`` modules.
    """
    path = check_model_dir(path)
    config = json.loads((path / "config.json").read_text())
    model_type = str(config.get("model_type"))
    family = family_for(model_type, f"{path}/config.json")
    if "image_token_index" not in config and "image_token_id" not in config:
        raise ModelError(f"{path}: config.json has no image_token_id; image features must enter as token positions")
    kwargs = {"device_map": device_map, "offload_folder": offload_folder} if device_map is not None else {}
    dtype = model_dtype(dtype, device)
    logging.getLogger("kneurons").info("model dtype: %s", dtype)  # "auto" resolved, in a job's log
    if dtype == "bfloat16" and device == "cpu" and device_map is None:
        kwargs["attn_implementation"] = "eager"
    model = family.model_class().from_pretrained(path, local_files_only=True, dtype=getattr(torch, dtype), **kwargs)
    processor = family.load_processor(path, model_type)
    if device_map is None:
        model.to(device)
    model.eval().requires_grad_(False)  # inference only: GradCAM needs activation gradients alone
    return LoadedModel(
        model=model,
        processor=processor,
        path=path,
        family=family,
        act_fns=decoder_act_fns(model),
        image_token_id=int(model.config.image_token_id),
        grid=(int(grid[0]), int(grid[1])) if grid else None,
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
        device_map=opts.get("device_map"),
        offload_folder=opts.get("offload_folder"),
    )
