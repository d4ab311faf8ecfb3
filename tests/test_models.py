"""The loader: a saved captioner round-trips, reports its facts and captions; bad directories fail clearly."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.errors import ModelError
from kneurons.generation import generate_captions, prompt_inputs
from kneurons.models import load_model

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
