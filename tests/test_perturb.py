"""Noise perturbation: the right units move by the right amount, and batched rows equal one-by-one generation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.dumps import image_activations
from kneurons.generation import prompt_inputs
from kneurons.models import load_model
from kneurons.perturb import add_noise, layer_units, noise_vector, perturbed_captions

from .conftest import PROMPT


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    images = [read_image(r.path) for r in image_records(load_coco(tiny_split[0]), tiny_split[1])[:3]]
    return loaded, images


def test_noise_vector_is_seeded():
    a, b, c = noise_vector(80, 3, 64), noise_vector(80, 3, 64), noise_vector(80, 4, 64)
    assert a.shape == (64,) and np.array_equal(a, b) and not np.array_equal(a, c)
    np.testing.assert_allclose(noise_vector(40, 3, 64) * 2, a, rtol=1e-6)


def test_layer_units_groups_by_layer():
    units = layer_units([[1, 5, 0.3], [0, 2, 0.1], [1, 7, 0.2]], 3)
    assert [u.tolist() for u in units] == [[2], [5, 7], []]


def test_noise_lands_on_the_set_at_image_positions(setup):
    loaded, images = setup
    units = layer_units([[0, 3], [0, 10]], loaded.n_layers)
    scales = [np.array([1.0, 2.0], np.float32)] + [np.zeros(0, np.float32)] * (loaded.n_layers - 1)
    inputs = prompt_inputs(loaded, images[:2], PROMPT)
    noise = torch.from_numpy(np.stack([noise_vector(5, 0, 64), noise_vector(5, 1, 64)]))
    clean = image_activations(loaded, images[:2], PROMPT)
    seen = {}
    with torch.no_grad(), add_noise(loaded, inputs["input_ids"], units, noise, scales):
        # registered after the noise hook, so it sees the noisy output
        handle = loaded.act_fns[0].register_forward_hook(lambda _m, _i, out: seen.__setitem__(0, out.detach().clone()))
        try:
            loaded.model(**inputs)
        finally:
            handle.remove()
    mask = loaded.image_positions(inputs["input_ids"])
    noisy = seen[0][mask].view(2, 64, -1).numpy()
    delta = noisy - clean[:, 0]
    np.testing.assert_allclose(delta[:, :, 3], noise.numpy() * 1.0, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(delta[:, :, 10], noise.numpy() * 2.0, rtol=1e-5, atol=1e-5)
    others = np.delete(delta, [3, 10], axis=2)
    assert np.abs(others).max() == 0
    assert all(len(m._forward_hooks) == 0 for m in loaded.act_fns)


def test_batched_rows_equal_one_by_one(setup):
    loaded, images = setup
    units = layer_units([[0, 1], [0, 4], [1, 7], [1, 9]], loaded.n_layers)
    rows = [(level, seed, i) for level in (0.5, 3.0) for seed in (0, 1) for i in range(3)]
    batched = perturbed_captions(loaded, images, PROMPT, units, rows, max_new_tokens=8, batch_size=12)
    single = perturbed_captions(loaded, images, PROMPT, units, rows, max_new_tokens=8, batch_size=1)
    assert batched == single
    # the captions depend on the rows' images and noise, so the equality above is not trivially true
    assert len(set(single)) > 1
