"""MiniGPT-4 (Llama-2 variant): the converter against an independent forward of the original EVA layout written here
from the documented facts (shared/reference/minigpt4.md, Vision-CAIR/MiniGPT-4's eva_vit.py and encode_img), the
preprocessing against PIL, the prompt split as MiniGPT-4 splits it, and every bad input as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kneurons.errors import ModelError
from kneurons.generation import image_inputs
from kneurons.minigpt4.convert import MiniGPT4Sources, convert_minigpt4
from kneurons.models import load_model

from .families import PROMPTS, decoder_inputs, minigpt4_sources

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711])
HEADS = 2


def eva_forward(sd: dict, pixels: torch.Tensor, blocks: int) -> torch.Tensor:
    """EVA ViT (eva_vit.py): patch conv, CLS, absolute positions, pre-LN blocks (eps 1e-6) with one qkv weight and
    the bias cat(q_bias, 0, v_bias), erf GELU MLP; no final norm. (B, 257, w), float64."""
    sd = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(pixels.double(), sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=14)
    x = x.flatten(2).transpose(1, 2)
    b, _, w = x.shape
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1) + sd["pos_embed"]
    for i in range(blocks):
        p = f"blocks.{i}."
        y = F.layer_norm(x, (w,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        bias = torch.cat([sd[p + "attn.q_bias"], torch.zeros(w, dtype=x.dtype), sd[p + "attn.v_bias"]])
        qkv = F.linear(y, sd[p + "attn.qkv.weight"], bias).reshape(b, x.shape[1], 3, HEADS, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q * (w // HEADS) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(b, x.shape[1], w)
        x = x + F.linear(y, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        y = F.layer_norm(x, (w,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        y = F.linear(F.gelu(F.linear(y, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])), sd[p + "mlp.fc2.weight"])
        x = x + y + sd[p + "mlp.fc2.bias"]
    return x


def minigpt4_image_tokens(sources: MiniGPT4Sources, pixels: torch.Tensor, blocks: int) -> torch.Tensor:
    """encode_img: ln_vision (a fresh LayerNorm, eps 1e-5), CLS dropped, token j = patches 4j..4j+3 concatenated,
    llama_proj. (B, 64, d), float64."""
    eva = torch.load(sources.vit)
    h = eva_forward(eva, pixels, blocks)
    h = F.layer_norm(h, (h.shape[-1],), eps=1e-5)[:, 1:]
    tokens = torch.stack([torch.cat([h[:, 4 * j + t] for t in range(4)], dim=-1) for j in range(64)], dim=1)
    proj = torch.load(sources.checkpoint)["model"]
    return F.linear(tokens, proj["llama_proj.weight"].double(), proj["llama_proj.bias"].double())


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[MiniGPT4Sources, Path]:
    """Two ViT blocks used of the three the EVA file holds (the third ignored, as MiniGPT-4 ignores extra blocks)."""
    root = tmp_path_factory.mktemp("minigpt4")
    sources = minigpt4_sources(root / "sources", blocks=2, blocks_in_file=3)
    return sources, convert_minigpt4(sources, root / "model")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (70, 40, 3), dtype=np.uint8)


def test_preprocessing_is_224_bicubic_squash_with_clip_normalisation(converted, image):
    loaded = load_model(converted[1])
    pixels = image_inputs(loaded, [image], PROMPTS["minigpt4"])[0]["pixel_values"][0].numpy()
    resized = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC), dtype=np.float64) / 255
    expected = ((resized - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    np.testing.assert_allclose(pixels, expected, atol=1e-5)


def test_converted_image_tokens_equal_the_original_eva_forward(converted, image):
    sources, model_dir = converted
    loaded = load_model(model_dir)
    inputs = image_inputs(loaded, [image], PROMPTS["minigpt4"])[0]
    mask = inputs["input_ids"][0] == loaded.image_token_id
    assert int(mask.sum()) == 64
    got = decoder_inputs(loaded, inputs)[mask].double()
    want = minigpt4_image_tokens(sources, inputs["pixel_values"], blocks=2)[0]
    assert want.abs().max() > 0.5  # random biases and weights: a nontrivial check
    torch.testing.assert_close(got, want, rtol=1e-5, atol=5e-5)  # float32 against float64: 7e-6 seen
    ln_vision = loaded.model.model.vision_model.post_layernorm  # MiniGPT-4 builds a fresh nn.LayerNorm: eps 1e-5
    assert ln_vision.eps == 1e-5 and bool((ln_vision.weight == 1).all()) and not ln_vision.bias.any()
    for j in (0, 5, 63):  # token by token: a strip of patches 4j..4j+3, not any other 4
        assert (got[j] - want[j]).abs().max() < 1e-4 < (got[j] - want[(j + 4) % 64]).abs().max()


def test_prompt_segments_are_tokenised_alone_as_minigpt4_does(converted, image):
    loaded = load_model(converted[1])
    tok = loaded.processor.tokenizer
    prompt = "[INST] <Img><ImageHere></Img> the image shows a"
    ids = image_inputs(loaded, [image], prompt)[0]["input_ids"][0].tolist()
    before, after = prompt.split("<ImageHere>")
    expected = (
        tok(before)["input_ids"] + [loaded.image_token_id] * 64 + tok(after, add_special_tokens=False)["input_ids"]
    )
    assert ids == expected
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_the_cli_converts_and_the_directory_loads_like_any_family(tmp_path):
    sources = minigpt4_sources(tmp_path / "sources")
    out = tmp_path / "model"
    args = ["--vit", sources.vit, "--checkpoint", sources.checkpoint, "--llm", sources.llm, "--out", out]
    args += ["--vision-config", sources.vision_config]
    run = subprocess.run(
        [sys.executable, "-m", "kneurons.convert", "minigpt4", *map(str, args)], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    assert json.loads((out / "config.json").read_text())["model_type"] == "minigpt4"
    loaded = load_model(out)
    assert loaded.family.name == "MiniGPT-4 (Llama-2)" and loaded.n_layers == 2
    again = subprocess.run(
        [sys.executable, "-m", "kneurons.convert", "minigpt4", *map(str, args)], capture_output=True, text=True
    )
    assert again.returncode == 1 and again.stderr.strip() == f"kneurons: {out}: already exists; give a new directory"


def _qformer_checkpoint(path: Path) -> None:
    proj = {"llama_proj.weight": torch.zeros(32, 768), "llama_proj.bias": torch.zeros(32)}
    torch.save({"model": {"query_tokens": torch.zeros(1, 32, 768), "Qformer.bert.x": torch.zeros(2), **proj}}, path)


def _no_proj_checkpoint(path: Path) -> None:
    torch.save({"model": {"some.weight": torch.zeros(2)}}, path)


def _wide_proj_checkpoint(path: Path) -> None:
    torch.save({"model": {"llama_proj.weight": torch.zeros(48, 64), "llama_proj.bias": torch.zeros(48)}}, path)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


def _wider_vision_config(path: Path) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | {"hidden_size": 24, "intermediate_size": 48}))


def _more_blocks(path: Path) -> None:
    path.write_text(json.dumps(json.loads(path.read_text()) | {"num_hidden_layers": 3}))


def _not_llama(path: Path) -> None:
    config = path / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"model_type": "gpt2"}))


BAD = {
    "missing ViT file": ("vit", lambda p: p.unlink(), r"eva_vit\.pth: file not found"),
    "Q-Former (v1, Vicuna) checkpoint": (
        "checkpoint",
        _qformer_checkpoint,
        r"checkpoint\.pth: a Q-Former MiniGPT-4 checkpoint .*found Qformer, query_tokens",
    ),
    "checkpoint without llama_proj": (
        "checkpoint",
        _no_proj_checkpoint,
        r"no llama_proj\.weight .*found keys: some\.weight",
    ),
    "llama_proj not fitting the LLM": (
        "checkpoint",
        _wide_proj_checkpoint,
        r"llama_proj\.weight has shape \[48, 64\] .*LLM \(hidden 32\)",
    ),
    "truncated checkpoint": ("checkpoint", _truncate, r"checkpoint\.pth: cannot be read as a PyTorch checkpoint"),
    "ViT width not fitting the vision config": (
        "vision_config",
        _wider_vision_config,
        r"eva_vit\.pth: cls_token has shape \[1, 1, 16\], .*expects \[1, 1, 24\]",
    ),
    "fewer ViT blocks than the vision config": (
        "vision_config",
        _more_blocks,
        r"eva_vit\.pth: no 'blocks\.1\.norm1\.weight' \(the file has 1 blocks; .*needs 3",
    ),
    "LLM that is not a Llama": ("llm", _not_llama, r"config\.json: model_type 'gpt2' is not a Llama architecture"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_one_line_naming_the_file_and_leaves_no_output(case, tmp_path):
    what, spoil, message = BAD[case]
    sources = minigpt4_sources(tmp_path / "sources")
    spoil(getattr(sources, what))
    with pytest.raises(ModelError, match=message) as err:
        convert_minigpt4(sources, tmp_path / "model")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sources"]  # no model directory, no temporary


def test_missing_released_files_are_named_before_any_job(tmp_path):
    from .helpers import kneurons_lines, snakemake

    overlay = tmp_path / "overlay.yaml"
    convert = "{family: minigpt4, vit: /nope/eva_vit_g.pth, checkpoint: /nope/ckpt.pth, llm: /nope/llama}"
    overlay.write_text(f"model: {{path: results/model/minigpt4, convert: {convert}}}\n")
    proc = snakemake(tmp_path, "-n", configs=(overlay,))
    assert proc.returncode != 0
    assert kneurons_lines(proc.stdout + proc.stderr) == [  # model.path is made by rule convert_model: not missing
        "kneurons: config error at model.convert.vit: file not found: /nope/eva_vit_g.pth",
        "kneurons: config error at model.convert.checkpoint: file not found: /nope/ckpt.pth",
        "kneurons: config error at model.convert.llm: directory not found: /nope/llama",
    ]
