"""Conversion of MiniGPT-4's released files (Llama-2 variant) into a local model directory that ``load_model`` reads.

The three things a user has: ``eva_vit_g.pth`` (a flat EVA state dict), ``pretrained_minigpt4_llama2_7b.pth``
(``["model"]`` holds ``llama_proj.*``) and a Llama-architecture HF directory with its tokenizer. Every tensor is
renamed, never recomputed, except the attention bias (EVA's separate q and v biases become Blip2's one qkv bias,
cat(q, 0, v)) and ln_vision (weight 1, bias 0: MiniGPT-4's Llama-2 variant never loads it). The LLM's weights are
copied shard by shard, so a 7B model is never held in memory whole. Each bad input is one line naming the file.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import AutoTokenizer, Blip2VisionConfig, Blip2VisionModel, GenerationConfig, LlamaConfig
from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

from kneurons.errors import ModelError
from kneurons.io import atomic_path
from kneurons.minigpt4.configuration import MiniGPT4Config
from kneurons.minigpt4.processing import IMAGE_PLACEHOLDER, MiniGPT4Processor

log = logging.getLogger("kneurons")

VISION_PREFIX = "model.vision_model."
LLM_PREFIX = "model.language_model."
_VISION_SHARD = "model-vision.safetensors"
PATCHES_PER_TOKEN = 4  # MiniGPT-4's encode_img: view(B, 256 / 4, 4 · width)

# EVA ViT key (blocks.{i}. prefix removed) → Blip2VisionModel key (encoder.layers.{i}. prefix removed)
_BLOCK_KEYS = {
    "norm1.weight": "layer_norm1.weight",
    "norm1.bias": "layer_norm1.bias",
    "norm2.weight": "layer_norm2.weight",
    "norm2.bias": "layer_norm2.bias",
    "attn.qkv.weight": "self_attn.qkv.weight",
    "attn.proj.weight": "self_attn.projection.weight",
    "attn.proj.bias": "self_attn.projection.bias",
    "mlp.fc1.weight": "mlp.fc1.weight",
    "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight",
    "mlp.fc2.bias": "mlp.fc2.bias",
}
_EMBEDDING_KEYS = {
    "cls_token": "embeddings.class_embedding",
    "pos_embed": "embeddings.position_embedding",
    "patch_embed.proj.weight": "embeddings.patch_embedding.weight",
    "patch_embed.proj.bias": "embeddings.patch_embedding.bias",
}


@dataclass(frozen=True)
class MiniGPT4Sources:
    """What a MiniGPT-4 (Llama-2) user has: the EVA ViT file, MiniGPT-4's checkpoint, the LLM directory, and
    optionally a ``Blip2VisionConfig`` JSON replacing the ViT-g defaults (39 blocks, width 1408, 224 px, 14 px)."""

    vit: Path
    checkpoint: Path
    llm: Path
    vision_config: Path | None = None

    @classmethod
    def from_mapping(cls, m: Mapping) -> MiniGPT4Sources:
        """From a config mapping with keys vit, checkpoint, llm and optional vision_config (paths as strings)."""
        vc = m.get("vision_config")
        return cls(Path(m["vit"]), Path(m["checkpoint"]), Path(m["llm"]), Path(vc) if vc else None)


def _load_torch(path: Path) -> dict:
    """A ``.pth`` file's top-level dict; MiniGPT-4's checkpoints may hold pickled objects beside the tensors, so a
    file the safe loader refuses is read the way MiniGPT-4 reads it (``weights_only=False``)."""
    if not path.is_file():
        raise ModelError(f"{path}: file not found")
    try:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            log.info("%s: holds more than tensors; read with weights_only=False, as MiniGPT-4 does", path)
            data = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # truncated, not a torch file, ...
        raise ModelError(f"{path}: cannot be read as a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: holds a {type(data).__name__}, not a state dict")
    return data


def vision_config(sources: MiniGPT4Sources) -> Blip2VisionConfig:
    """The ViT's config: ``--vision-config``'s JSON, else ``Blip2VisionConfig()`` (EVA ViT-g: 39 blocks, 1408 wide,
    16 heads, MLP 6144, 224 px, 14 px patches, LayerNorm eps 1e-6, erf GELU, q/v biases)."""
    if sources.vision_config is None:
        return Blip2VisionConfig()
    if not sources.vision_config.is_file():
        raise ModelError(f"{sources.vision_config}: file not found")
    try:
        values = json.loads(sources.vision_config.read_text())
        return Blip2VisionConfig(**{k: v for k, v in values.items() if k != "model_type"})
    except (ValueError, TypeError) as e:
        raise ModelError(f"{sources.vision_config}: not a Blip2VisionConfig JSON ({e})") from None


def _expected_vision_shapes(config: Blip2VisionConfig) -> dict[str, torch.Size]:
    """Blip2VisionModel's parameter shapes for ``config``, from a model built on the meta device (no memory)."""
    with torch.device("meta"):
        model = Blip2VisionModel(config)
    return {k: v.shape for k, v in model.state_dict().items()}


def eva_to_blip2(eva: Mapping[str, torch.Tensor], config: Blip2VisionConfig, where: Path) -> dict[str, torch.Tensor]:
    """Blip2VisionModel's state dict (keys without prefix) from an EVA ViT state dict: renamed tensors, the qkv bias
    cat(q_bias, 0, v_bias), and ``post_layernorm`` = ln_vision (ones, zeros). Blocks past the config's
    ``num_hidden_layers`` are ignored, as MiniGPT-4's strict=False load ignores them. ModelError naming ``where``
    and the EVA key for a missing key or a shape that does not fit the config."""
    names = dict(_EMBEDDING_KEYS)
    for i in range(config.num_hidden_layers):
        names |= {f"blocks.{i}.{e}": f"encoder.layers.{i}.{b}" for e, b in _BLOCK_KEYS.items()}
    shapes = _expected_vision_shapes(config)
    blocks = {k.split(".")[1] for k in eva if k.startswith("blocks.")}
    n_blocks = len(blocks)

    def get(eva_key: str) -> torch.Tensor:
        if eva_key not in eva:
            raise ModelError(
                f"{where}: no {eva_key!r} (the file has {n_blocks} blocks; the vision config needs "
                f"{config.num_hidden_layers} of width {config.hidden_size})"
            )
        return eva[eva_key]

    out: dict[str, torch.Tensor] = {}

    def put(eva_key: str, key: str, value: torch.Tensor) -> None:
        if tuple(value.shape) != tuple(shapes[key]):
            raise ModelError(
                f"{where}: {eva_key} has shape {list(value.shape)}, the vision config expects {list(shapes[key])}"
            )
        out[key] = value.contiguous()

    for eva_key, key in names.items():
        put(eva_key, key, get(eva_key))
    for i in range(config.num_hidden_layers):
        q, v = get(f"blocks.{i}.attn.q_bias"), get(f"blocks.{i}.attn.v_bias")
        put(f"blocks.{i}.attn.q_bias/v_bias", f"encoder.layers.{i}.self_attn.qkv.bias", torch.cat([q, 0 * v, v]))
    width = config.hidden_size
    dtype = eva["pos_embed"].dtype
    put("ln_vision.weight", "post_layernorm.weight", torch.ones(width, dtype=dtype))
    put("ln_vision.bias", "post_layernorm.bias", torch.zeros(width, dtype=dtype))
    ignored = blocks - {str(i) for i in range(config.num_hidden_layers)}
    if ignored:
        log.info("%s: %d block(s) past the vision config's %d ignored", where, len(ignored), config.num_hidden_layers)
    return out


def llama_proj(checkpoint: Mapping, where: Path, vision_width: int, hidden: int, patches: int) -> dict:
    """``llama_proj.{weight,bias}`` of MiniGPT-4's checkpoint (``["model"]`` or the top level), checked against the
    ViT's ``patches · width`` features and the LLM's hidden size. A Q-Former (v1, Vicuna) checkpoint is refused."""
    state = checkpoint.get("model", checkpoint)
    if not isinstance(state, Mapping):
        raise ModelError(f"{where}: ['model'] is a {type(state).__name__}, not a state dict")
    qformer = sorted({k.split(".")[0] for k in state if k.startswith(("Qformer", "query_tokens"))})
    features = patches * vision_width
    weight, bias = state.get("llama_proj.weight"), state.get("llama_proj.bias")
    if qformer or (weight is not None and weight.ndim == 2 and weight.shape[1] == 768 != features):
        found = ", ".join(qformer) if qformer else f"llama_proj.weight {list(weight.shape)} (Q-Former width 768)"
        raise ModelError(
            f"{where}: a Q-Former MiniGPT-4 checkpoint (v1, Vicuna; found {found}) is not supported: its image "
            "enters the decoder as Q-Former queries, not as per-patch token positions; use the Llama-2 "
            "variant's pretrained_minigpt4_llama2_7b.pth"
        )
    if weight is None or bias is None:
        keys = ", ".join(sorted(state)[:8]) or "none"
        raise ModelError(f"{where}: no llama_proj.weight / llama_proj.bias (found keys: {keys})")
    if tuple(weight.shape) != (hidden, features) or tuple(bias.shape) != (hidden,):
        raise ModelError(
            f"{where}: llama_proj.weight has shape {list(weight.shape)} and bias {list(bias.shape)}; the ViT "
            f"({patches} x {vision_width} features) and the LLM (hidden {hidden}) need [{hidden}, {features}] and "
            f"[{hidden}]"
        )
    return {"model.llama_proj.weight": weight.contiguous(), "model.llama_proj.bias": bias.contiguous()}


def llm_config(llm: Path) -> LlamaConfig:
    """The LLM directory's config; ModelError unless it is a Llama-architecture directory."""
    path = llm / "config.json"
    if not path.is_file():
        raise ModelError(f"{llm}: not a Hugging Face model directory (no config.json)")
    values = json.loads(path.read_text())
    if values.get("model_type") != "llama":
        raise ModelError(f"{path}: model_type {values.get('model_type')!r} is not a Llama architecture ('llama')")
    return LlamaConfig.from_pretrained(llm, local_files_only=True)


def _llm_shards(llm: Path) -> list[Path]:
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (llm / index).is_file():
            files = sorted(set(json.loads((llm / index).read_text())["weight_map"].values()))
            return [llm / f for f in files]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (llm / single).is_file():
            return [llm / single]
    raise ModelError(f"{llm}: no weights (model.safetensors, pytorch_model.bin or their index)")


def _read_shard(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    if not path.is_file():
        raise ModelError(f"{path}: weight shard named by the index not found")
    try:
        if path.suffix == ".safetensors":
            with safe_open(path, framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (safe_open has keys(), not iteration)
                    yield key, f.get_tensor(key)
        else:
            yield from torch.load(path, map_location="cpu", weights_only=True).items()
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{path}: cannot read the weights ({type(e).__name__}: {e})") from None


def _llm_key(key: str) -> str | None:
    """The converted name of a LlamaForCausalLM key; None for buffers the model rebuilds (rotary inv_freq)."""
    if key.endswith("rotary_emb.inv_freq"):
        return None
    if key.startswith("model."):
        return LLM_PREFIX + key.removeprefix("model.")
    return key  # lm_head.weight


def convert_minigpt4(sources: MiniGPT4Sources, out: str | Path) -> Path:
    """Write a MiniGPT-4 model directory at ``out`` (config, weights as safetensors shards with an index,
    processor, tokenizer, generation config) from the three released parts; atomic: ``out`` appears complete or
    not at all. Returns ``out``."""
    out = Path(out)
    vision = vision_config(sources)
    text = llm_config(sources.llm)
    shards = _llm_shards(sources.llm)
    vision_state = eva_to_blip2(_load_torch(sources.vit), vision, sources.vit)
    n_patches = (vision.image_size // vision.patch_size) ** 2
    proj = llama_proj(
        _load_torch(sources.checkpoint), sources.checkpoint, vision.hidden_size, text.hidden_size, PATCHES_PER_TOKEN
    )
    tokenizer = AutoTokenizer.from_pretrained(sources.llm, local_files_only=True)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_PLACEHOLDER]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "$$"  # MiniGPT-4's pad token; padding is masked
    image_processor = BlipImageProcessorPil(size={"height": vision.image_size, "width": vision.image_size})
    processor = MiniGPT4Processor(image_processor, tokenizer, num_image_tokens=n_patches // PATCHES_PER_TOKEN)
    config = MiniGPT4Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=processor.image_token_id,
        patches_per_token=PATCHES_PER_TOKEN,
        architectures=["MiniGPT4ForConditionalGeneration"],
    )
    with atomic_path(out) as tmp:
        tmp.mkdir()
        weight_map: dict[str, str] = {}
        total = 0
        own = {VISION_PREFIX + k: v for k, v in vision_state.items()} | proj
        for i, shard in enumerate(shards):
            renamed = {k2: v.contiguous() for k, v in _read_shard(shard) if (k2 := _llm_key(k)) is not None}
            name = f"model-llm-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(renamed, tmp / name, metadata={"format": "pt"})
            weight_map |= dict.fromkeys(renamed, name)
            total += sum(v.numel() * v.element_size() for v in renamed.values())
            embed = renamed.get(LLM_PREFIX + "embed_tokens.weight")
            if text.tie_word_embeddings and embed is not None:
                own["lm_head.weight"] = embed.clone()
            del renamed
        if "lm_head.weight" in weight_map:
            own.pop("lm_head.weight", None)
        elif "lm_head.weight" not in own:
            raise ModelError(f"{sources.llm}: no lm_head.weight in the weights (and tie_word_embeddings is false)")
        save_file(own, tmp / _VISION_SHARD, metadata={"format": "pt"})
        weight_map |= dict.fromkeys(own, _VISION_SHARD)
        total += sum(v.numel() * v.element_size() for v in own.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (tmp / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
        config.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if (sources.llm / "generation_config.json").is_file():
            shutil.copy(sources.llm / "generation_config.json", tmp / "generation_config.json")
        else:
            GenerationConfig(
                bos_token_id=text.bos_token_id, eos_token_id=text.eos_token_id, pad_token_id=tokenizer.pad_token_id
            ).save_pretrained(tmp)
    return out
