"""Tiny random-weight models of each supported family, built from configs (no hub) and saved with save_pretrained.

Each builder writes a complete model directory (config, weights, processor, tokenizer) that ``load_model`` reads
exactly as it reads a real checkpoint. The vocabulary is word-level over a few caption words plus the family's
special tokens; sizes are a few thousand parameters so every test runs in seconds on one CPU thread. Every vision
tower is cut to its patch embeddings (no vision attention), so each image token depends on its own pixels only and
a test can check the token-to-pixel map by changing pixels. Weights are drawn with a large spread so that captions
depend on the image.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import (
    AutoModelForImageTextToText,
    CLIPVisionConfig,
    Idefics3Config,
    Idefics3Processor,
    LlamaConfig,
    LlamaForCausalLM,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerBase,
    Qwen2_5_VLConfig,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLProcessor,
    SiglipVisionConfig,
    SmolVLMConfig,
    SmolVLMProcessor,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil

from kneurons.families import images_only
from kneurons.minigpt4.convert import MiniGPT4Sources, convert_minigpt4
from kneurons.synth.captioner import CaptionerSettings, build_model, build_processor, build_tokenizer

WORDS = ["the image shows a", "bear dog cat person car on grass sand snow and"]
DECODER = {"hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 2}
DECODER |= {"num_key_value_heads": 2, "max_position_embeddings": 4096, "initializer_range": 0.5}


# the any-resolution families' vision tower: 24 px images of 6 px patches (16 tokens a tile), one layer
TOWER = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
TOWER |= {"image_size": 24, "patch_size": 6}


def _llama(tok: PreTrainedTokenizerBase) -> LlamaConfig:
    return LlamaConfig(vocab_size=len(tok), **DECODER, **_ids(tok))


def _tokenizer(special: list[str], base: PreTrainedTokenizerBase | None) -> PreTrainedTokenizerBase:
    """The family's tokenizer: ``base`` (a real tokenizer, tests/real_tokenizers.py) or the word-level one, with the
    family's special tokens and a padding token where it has none (as llava-hf's checkpoints add ``<pad>``)."""
    tok = build_tokenizer(WORDS) if base is None else base
    tok.add_special_tokens({"additional_special_tokens": special})
    if tok.pad_token is None:
        tok.add_special_tokens({"pad_token": "<pad>"})
    return tok


def _ids(tok: PreTrainedTokenizerBase) -> dict:
    return {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}


def _save(model, processor, tok, out: Path) -> Path:
    model.generation_config.update(**_ids(tok))
    with torch.no_grad():  # special tokens' logits near 0 among logits of spread ±1: captions of words
        model.get_output_embeddings().weight[tok.all_special_ids] *= 0.05
    model.save_pretrained(out)
    processor.save_pretrained(out)
    config = out / "processor_config.json"  # as the real class writes it (an images-only processor names itself)
    config.write_text(config.read_text().replace("ImagesOnly", ""))
    return out


def llava_next(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """LLaVA-NeXT: 24 px base image and 24 px tiles of 6 px patches (16 tokens each), any-resolution pinpoints."""
    tok = _tokenizer(["<image>"], base)
    tok.image_token = "<image>"
    pinpoints = [[24, 24], [24, 48], [48, 24], [48, 48]]
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 24}, crop_size={"height": 24, "width": 24}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        patch_size=6,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token="<image>",
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**TOWER),
        text_config=_llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,  # hidden_states[0]: the patch embeddings
    )
    return _save(LlavaNextForConditionalGeneration(config), processor, tok, out)


def llava_onevision(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """LLaVA-OneVision: SigLIP-style tower without CLS (24 px, 6 px patches), base image squeezed to 24 x 24, tiles
    up to 48 x 48; ``anyres_max_1`` resamples the tile grid of larger images down to about one tile's cells."""
    tok = _tokenizer(["<image>", "<video>"], base)
    tok.image_token, tok.video_token = "<image>", "<video>"
    pinpoints = [[24, 24], [24, 48], [48, 24], [48, 48]]
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": 24, "width": 24}, image_grid_pinpoints=pinpoints)
    processor = images_only(LlavaOnevisionProcessor)(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=None,
        num_image_tokens=16,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_1",
    )
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**TOWER),
        text_config=_llama(tok),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-2,  # hidden_states[0]: the patch embeddings
        vision_aspect_ratio="anyres_max_1",
    )
    return _save(AutoModelForImageTextToText.from_config(config), processor, tok, out)


def llava(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """LLaVA-1.5 as llava-1.5-hf processes images: shortest edge resized to 24 px, centre crop 24 x 24, 6 px
    patches (16 tokens)."""
    tok = _tokenizer(["<image>"], base)
    settings = CaptionerSettings(image_size=24, patch_size=6, vision_hidden=16, hidden=32, intermediate=48, layers=2)
    model = build_model(tok, settings)
    model.config.text_config.initializer_range = 0.5
    model = LlavaForConditionalGeneration(model.config)
    return _save(model, build_processor(tok, settings), tok, out)


QWEN_SPECIAL = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def _qwen(out: Path, config_class, processor_class, vision: dict, base) -> Path:
    tok = _tokenizer(QWEN_SPECIAL, base)
    tok.image_token, tok.video_token = "<|image_pad|>", "<|video_pad|>"
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112)
    processor = images_only(processor_class)(image_processor=image_processor, tokenizer=tok, video_processor=None)
    text = DECODER | {"vocab_size": len(tok), **_ids(tok)}
    text["rope_parameters"] = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL}
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    return _save(AutoModelForImageTextToText.from_config(config), processor, tok, out)


def qwen2_vl(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """Qwen2-VL: 14 px patches merged 2x2, images resized to multiples of 28 px between 28² and 112² pixels."""
    vision = {"depth": 0, "embed_dim": 16, "hidden_size": 32, "num_heads": 2, "mlp_ratio": 2}
    return _qwen(out, Qwen2VLConfig, Qwen2VLProcessor, vision, base)


def qwen2_5_vl(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """Qwen2.5-VL: as Qwen2-VL, with its own vision tower (window attention, cut here) and processor class."""
    vision = {"depth": 0, "hidden_size": 16, "intermediate_size": 32, "num_heads": 2, "out_hidden_size": 32}
    return _qwen(out, Qwen2_5_VLConfig, Qwen2_5_VLProcessor, vision | {"fullatt_block_indexes": []}, base)


ROW_COL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]


def _idefics(out: Path, config_class, processor_class, image_processor_class, base) -> Path:
    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *ROW_COL]
    tok = _tokenizer(special, base)
    image_processor = image_processor_class(
        size={"longest_edge": 64}, max_image_size={"longest_edge": 32}, do_image_splitting=True
    )
    videos = {"video_processor": None} if "video_processor" in processor_class.get_attributes() else {}
    processor = images_only(processor_class) if videos else processor_class
    processor = processor(image_processor=image_processor, tokenizer=tok, image_seq_len=4, **videos)
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 0, "num_attention_heads": 2}
    config = config_class(
        vision_config=vision | {"image_size": 32, "patch_size": 8},
        text_config={"model_type": "llama", "vocab_size": len(tok), **DECODER, **_ids(tok)},
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    return _save(AutoModelForImageTextToText.from_config(config), processor, tok, out)


def idefics3(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """Idefics3: 32 px tiles of 8 px patches, pixel shuffle 2 (4 tokens a tile), images up to 64 px split in tiles."""
    return _idefics(out, Idefics3Config, Idefics3Processor, Idefics3ImageProcessorPil, base)


def smolvlm(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """SmolVLM (model_type smolvlm): Idefics3's layout with its own classes."""
    return _idefics(out, SmolVLMConfig, SmolVLMProcessor, SmolVLMImageProcessorPil, base)


def decoder_inputs(loaded, inputs: dict) -> torch.Tensor:
    """The decoder's input vectors (T, D) of a one-image batch: what each image token carries from the image."""
    seen = {}

    def hook(_module, args, kwargs):
        seen["x"] = (args[0] if args else kwargs["hidden_states"]).detach()

    handle = loaded.model.get_decoder().layers[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            loaded.model(**inputs)
    finally:
        handle.remove()
    return seen["x"][0]


def eva_state_dict(width: int, blocks: int, mlp: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A random EVA ViT state dict in eva_vit_g.pth's layout (224 px, 14 px patches: 256 patches + CLS), every
    tensor random, q and v biases separate and nonzero, so a converter that drops or misplaces one is seen."""

    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    sd = {
        "cls_token": rand(1, 1, width),
        "pos_embed": rand(1, 257, width),
        "patch_embed.proj.weight": rand(width, 3, 14, 14, scale=0.05),
        "patch_embed.proj.bias": rand(width),
    }
    for i in range(blocks):
        b = f"blocks.{i}."
        sd |= {b + n: 1 + rand(width, scale=0.1) for n in ("norm1.weight", "norm2.weight")}
        sd |= {b + n: rand(width, scale=0.1) for n in ("norm1.bias", "norm2.bias")}
        sd |= {
            b + "attn.qkv.weight": rand(3 * width, width),
            b + "attn.q_bias": rand(width),
            b + "attn.v_bias": rand(width),
        }
        sd |= {b + "attn.proj.weight": rand(width, width), b + "attn.proj.bias": rand(width)}
        sd |= {b + "mlp.fc1.weight": rand(mlp, width), b + "mlp.fc1.bias": rand(mlp)}
        sd |= {b + "mlp.fc2.weight": rand(width, mlp), b + "mlp.fc2.bias": rand(width)}
    return sd


def minigpt4_sources(
    out: Path, blocks: int = 0, blocks_in_file: int = 1, width: int = 16, base: PreTrainedTokenizerBase | None = None
) -> MiniGPT4Sources:
    """MiniGPT-4's three released parts at tiny widths in their original layouts: ``eva_vit.pth`` (a flat EVA state
    dict of ``blocks_in_file`` blocks; the vision config uses ``blocks``), ``checkpoint.pth`` (``["model"]`` holds
    llama_proj), a Llama HF directory with its tokenizer, and the Blip2VisionConfig JSON (224 px, 14 px patches, so
    P = 64 and the strip map are the real ones)."""
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    mlp = 2 * width
    torch.save(eva_state_dict(width, blocks_in_file, mlp, g), out / "eva_vit.pth")
    proj = {
        "llama_proj.weight": torch.randn(32, 4 * width, generator=g) * 0.5,
        "llama_proj.bias": torch.randn(32, generator=g),
    }
    torch.save({"model": proj, "epoch": 3}, out / "checkpoint.pth")
    vision = {"hidden_size": width, "intermediate_size": mlp, "num_hidden_layers": blocks, "num_attention_heads": 2}
    (out / "vision.json").write_text(json.dumps(vision | {"image_size": 224, "patch_size": 14}))
    tok = build_tokenizer(WORDS) if base is None else base  # as Llama-2's: no pad token (the converter adds one)
    llm = LlamaForCausalLM(_llama(tok))
    llm.generation_config.update(**_ids(tok))
    with torch.no_grad():  # special tokens' logits near 0 among logits of spread ±1: captions of words
        llm.lm_head.weight[tok.all_special_ids] *= 0.05
    llm.save_pretrained(out / "llm")
    tok.save_pretrained(out / "llm")
    return MiniGPT4Sources(out / "eva_vit.pth", out / "checkpoint.pth", out / "llm", out / "vision.json")


def minigpt4(out: Path, base: PreTrainedTokenizerBase | None = None) -> Path:
    """MiniGPT-4 (Llama-2 variant) converted from tiny released parts: ViT cut to its patch embeddings (the file's
    one block ignored, as MiniGPT-4 ignores blocks past its config), ln_vision, 4-patch strips, llama_proj."""
    return convert_minigpt4(minigpt4_sources(out.parent / "sources", base=base), out)


FAMILIES: dict[str, Callable[..., Path]] = {
    "llava": llava,
    "llava_next": llava_next,
    "llava_onevision": llava_onevision,
    "qwen2_vl": qwen2_vl,
    "qwen2_5_vl": qwen2_5_vl,
    "idefics3": idefics3,
    "smolvlm": smolvlm,
    "minigpt4": minigpt4,
}
PROMPTS = {
    "llava": "<image>The image shows a",
    "llava_onevision": "<image>The image shows a",
    "llava_next": "<image>The image shows a",
    "qwen2_vl": "<|vision_start|><|image_pad|><|vision_end|>The image shows a",
    "qwen2_5_vl": "<|vision_start|><|image_pad|><|vision_end|>The image shows a",
    "idefics3": "<image>The image shows a",
    "smolvlm": "<image>The image shows a",
    "minigpt4": "[INST] <Img><ImageHere></Img> The image shows a",
}
