"""The loader: a saved captioner round-trips, reports its facts and captions; bad directories fail clearly."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from kneurons import models
from kneurons.coco import image_records, load_coco, read_image
from kneurons.errors import ModelError
from kneurons.generation import generate_captions, prompt_inputs
from kneurons.models import load_model, model_dtype

from .conftest import PROMPT, TINY


def test_saved_model_round_trips(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    assert loaded.n_layers == TINY.layers
    assert loaded.d_ff == TINY.intermediate
    assert loaded.grid is None and loaded.family.name == "LLaVA-1.5"
    rec = image_records(load_coco(tiny_split[0]), tiny_split[1])[0]
    image = read_image(rec.path)
    inputs = prompt_inputs(loaded, [image], PROMPT)
    assert int(loaded.image_positions(inputs["input_ids"]).sum()) == 64
    # the reloaded weights give the same logits as a second load (nothing random at load time)
    again = load_model(tiny_model_dir)
    with torch.no_grad():
        a = loaded.model(**inputs).logits
        b = again.model(**inputs).logits
    assert torch.equal(a, b)
    caption = generate_captions(loaded, [image], PROMPT, max_new_tokens=5)[0]
    assert isinstance(caption, str) and len(caption.split()) >= 1


def test_half_precision_model_gets_inputs_in_its_dtype(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir, dtype="bfloat16")
    images = [read_image(r.path) for r in image_records(load_coco(tiny_split[0]), tiny_split[1])[:2]]
    inputs = prompt_inputs(loaded, images, PROMPT)
    assert inputs["pixel_values"].dtype == torch.bfloat16 and inputs["input_ids"].dtype == torch.int64
    assert len(generate_captions(loaded, images, PROMPT, max_new_tokens=4)) == 2


@pytest.mark.parametrize(
    ("device", "caps", "cuda_bf16", "expected"),
    [
        ("cpu", {"avx512_bf16": True, "amx_bf16": False}, False, "bfloat16"),
        ("cpu", {"amx_bf16": True}, False, "bfloat16"),
        ("cpu", {"avx2": True}, True, "float32"),  # emulated bfloat16 is slower than float32
        ("cuda", {}, True, "bfloat16"),
        ("cuda:1", {"avx512_bf16": True}, False, "float16"),  # a card without bfloat16: the CPU does not matter
    ],
)
def test_auto_dtype_follows_the_device(monkeypatch, device, caps, cuda_bf16, expected):
    monkeypatch.setattr(models.torch.cpu, "get_capabilities", lambda: caps)
    monkeypatch.setattr(models.torch.cuda, "is_bf16_supported", lambda: cuda_bf16)
    assert model_dtype("auto", device) == expected
    assert model_dtype("float16", device) == "float16"


@pytest.mark.parametrize(
    ("caps", "dtype", "attention"),
    [({"avx512_bf16": True}, torch.bfloat16, "eager"), ({"avx2": True}, torch.float32, "sdpa")],
)
def test_auto_loads_bfloat16_with_eager_attention_where_the_cpu_multiplies_it(
    monkeypatch, tiny_model_dir, caps, dtype, attention
):
    monkeypatch.setattr(models.torch.cpu, "get_capabilities", lambda: caps)
    loaded = load_model(tiny_model_dir, dtype="auto")
    assert {p.dtype for p in loaded.model.parameters()} == {dtype}
    assert loaded.model.config._attn_implementation == attention


def test_batched_captions_equal_single(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    images = [read_image(r.path) for r in image_records(load_coco(tiny_split[0]), tiny_split[1])[:4]]
    batched = generate_captions(loaded, images, PROMPT, max_new_tokens=8, batch_size=4)
    single = [generate_captions(loaded, [im], PROMPT, max_new_tokens=8)[0] for im in images]
    assert batched == single


def test_missing_directory(tmp_path):
    with pytest.raises(ModelError, match="model directory not found"):
        load_model(tmp_path / "nope")


@pytest.mark.parametrize(
    ("remove", "what"),
    [("config.json", "config.json"), ("model.safetensors", "weights"), ("tokenizer.json", "tokenizer")],
)
def test_incomplete_directory(tiny_model_dir, tmp_path, remove, what):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    (broken / remove).unlink()
    if remove == "tokenizer.json":
        (broken / "tokenizer_config.json").unlink()
    with pytest.raises(ModelError, match=re.escape(f"incomplete model directory, missing {what}")):
        load_model(broken)


def test_decoder_without_act_fn(tiny_model_dir):
    from kneurons.models import decoder_act_fns

    loaded = load_model(tiny_model_dir)
    del loaded.model.get_decoder().layers[1].mlp.act_fn
    with pytest.raises(ModelError, match=re.escape("decoder layer 1 has no `mlp.act_fn`")):
        decoder_act_fns(loaded.model)


def test_grid_is_configurable_and_checked(tiny_model_dir, tiny_split):
    image = read_image(image_records(load_coco(tiny_split[0]), tiny_split[1])[0].path)
    loaded = load_model(tiny_model_dir, grid=(16, 4))  # MiniGPT-4-style strips: 16 rows of 4 tokens
    inputs = prompt_inputs(loaded, [image], PROMPT)
    regions = loaded.regions(inputs, image.shape[:2])
    h, w = image.shape[:2]
    assert regions.shape == (64, 4)
    assert np.allclose(regions[5], [w / 4, h / 16, 2 * w / 4, 2 * h / 16])  # row 1, column 1
    wrong = load_model(tiny_model_dir, grid=(4, 4))
    with pytest.raises(ModelError, match=r"the image has 64 image tokens, but model.grid 4x4 covers 16"):
        wrong.regions(inputs, image.shape[:2])


def test_a_prompt_without_the_image_placeholder_is_refused(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    image = read_image(image_records(load_coco(tiny_split[0]), tiny_split[1])[0].path)
    with pytest.raises(
        ModelError, match="the prompt 'the image shows a' lacks this processor's image placeholder '<image>'"
    ):
        prompt_inputs(loaded, [image], "the image shows a")
    ids = torch.tensor([[1, 2, 3], [1, loaded.image_token_id, 3]])
    with pytest.raises(ModelError, match="a prompt holds no image token"):
        loaded.image_positions(ids)


@pytest.mark.parametrize("model_type", ["blip-2", "instructblip"])
def test_qformer_models_are_refused_at_load(tiny_model_dir, tmp_path, model_type):
    broken = tmp_path / "qformer"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"model_type": model_type}))
    with pytest.raises(ModelError) as err:
        load_model(broken)
    message = str(err.value)
    assert "\n" not in message and str(broken / "config.json") in message
    assert f"model_type '{model_type}'" in message and "Q-Former" in message
    assert "per-position activations (stage 1), the image-position perturbations and the heatmaps" in message


def test_an_unknown_family_is_refused_with_the_supported_ones(tiny_model_dir, tmp_path):
    broken = tmp_path / "unknown"
    shutil.copytree(tiny_model_dir, broken)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps(config | {"model_type": "fuyu"}))
    with pytest.raises(ModelError, match=r"model_type 'fuyu' has no kneurons adapter \(supported: llava, llava_next, "):
        load_model(broken)


def test_a_device_map_loads_through_accelerate_and_changes_no_result(tiny_model_dir, tiny_split, tmp_path):
    """model.device_map: the model placed by accelerate (hf_device_map set, never moved by .to) gives the same
    captions, log-probabilities, perturbed and patched captions and GradCAM as a plain load (a CPU run of the
    sharded code path: each hook edits its tensor on that tensor's own device)."""
    from kneurons.dumps import gradcam
    from kneurons.logprob import continuations
    from kneurons.perturb import layer_units, perturbed_captions
    from kneurons.protocol import Perturbation
    from kneurons.restore import restored_captions
    from kneurons.vocab import decode_neurons

    plain = load_model(tiny_model_dir)
    layers = {m: n for n, m in plain.model.named_modules()}[plain.model.get_decoder().layers]
    last = f"{layers}.{plain.n_layers - 1}"  # offloaded: accelerate's hooks bring its weights in for each pass
    device_map: dict[str, str] = {}

    def place(module: torch.nn.Module, prefix: str) -> None:  # every module on cpu, the last decoder layer on disk
        for name, child in module.named_children():
            full = prefix + name
            if full == layers:
                device_map.update(
                    {f"{full}.{i}": "disk" if f"{full}.{i}" == last else "cpu" for i in range(len(child))}
                )
            elif layers.startswith(full + "."):
                place(child, full + ".")
            else:
                device_map[full] = "cpu"

    place(plain.model, "")
    mapped = load_model(tiny_model_dir, device_map=device_map, offload_folder=str(tmp_path / "offload"))
    assert mapped.model.hf_device_map[last] == "disk" and not hasattr(plain.model, "hf_device_map")
    assert any(hasattr(m, "_hf_hook") for m in mapped.model.modules())  # dispatched: the sharded code path
    records = [r for r in image_records(load_coco(tiny_split[0]), tiny_split[1]) if r.annotations][:3]
    images = [read_image(r.path) for r in records]
    names = [r.annotations[0].category for r in records]
    captions = [f" a {n} ." for n in names]
    units = layer_units([[0, 1], [0, 5], [1, 3]], plain.n_layers)
    rows = [(Perturbation("noise", 3.0, 1), 0), (Perturbation("ablation"), 1), (Perturbation("noise", 0.0, 0), 2)]
    results = []
    for loaded in (plain, mapped):
        conts = continuations(loaded, images, PROMPT, captions, names, {})
        results.append(
            (
                perturbed_captions(loaded, images, PROMPT, units, rows, 0.5, max_new_tokens=8, continuations=conts),
                restored_captions(loaded, images[0], images[1], PROMPT, [units], conts[0], 8),
                gradcam(loaded, images[0], PROMPT, captions[0], names[0]).gradcam,
                decode_neurons(loaded, [(0, 1), (plain.n_layers - 1, 3)], 5),  # reads the offloaded layer's W_down
            )
        )
    (p1, r1, g1, d1), (p2, r2, g2, d2) = results
    assert d1 == d2
    assert [c for c, _ in p1] == [c for c, _ in p2] and [c for c, _ in r1[0]] == [c for c, _ in r2[0]]
    np.testing.assert_allclose([lp for _, lp in p1], [lp for _, lp in p2], atol=1e-5)
    np.testing.assert_allclose(g1, g2, atol=1e-6)
