"""Perturbation: the right units move by the same amount for every set, ablation zeroes them, batched rows equal
one-by-one generation, and the greedy loop equals transformers' generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kneurons.coco import image_records, load_coco, read_image
from kneurons.dumps import image_activations
from kneurons.generation import generate_captions, generate_scored_batch, prompt_inputs
from kneurons.hooks import edit_image_activations, zero_edit
from kneurons.models import load_model
from kneurons.perturb import layer_units, noise_vector, perturb_units, perturbed_captions
from kneurons.protocol import ABLATION, NOISE, Perturbation, Protocol

from .conftest import PROMPT


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tiny_split):
    loaded = load_model(tiny_model_dir)
    images = [read_image(r.path) for r in image_records(load_coco(tiny_split[0]), tiny_split[1])[:4]]
    return loaded, images


def test_noise_vector_is_seeded():
    a, b, c = noise_vector(80, 3, 64), noise_vector(80, 3, 64), noise_vector(80, 4, 64)
    assert a.shape == (64,) and np.array_equal(a, b) and not np.array_equal(a, c)
    np.testing.assert_allclose(noise_vector(40, 3, 64) * 2, a, rtol=1e-6)


def test_perturbations_list_noise_then_ablation():
    got = Protocol([4, 10], 2, ablation=True).perturbations()
    assert [(p.kind, p.label, p.seed) for p in got] == [
        (NOISE, 4.0, 0), (NOISE, 4.0, 1), (NOISE, 10.0, 0), (NOISE, 10.0, 1), (ABLATION, ABLATION, 0)
    ]  # fmt: skip
    assert all(p.kind == NOISE for p in Protocol([4], 3, ablation=False).perturbations())


def test_layer_units_groups_by_layer():
    units = layer_units([[1, 5, 0.3], [0, 2, 0.1], [1, 7, 0.2]], 3)
    assert [u.tolist() for u in units] == [[2], [5, 7], []]


def _layer0_output(loaded, inputs, units, keep, noise):
    """O[0] at the image positions (B, P, d_ff) with ``units`` perturbed by (keep, noise)."""
    seen = {}
    with torch.no_grad(), perturb_units(loaded, inputs["input_ids"], units, keep, noise):
        # registered after the perturbation hook, so it sees the perturbed output
        handle = loaded.act_fns[0].register_forward_hook(lambda _m, _i, out: seen.__setitem__(0, out.detach().clone()))
        try:
            loaded.model(**inputs)
        finally:
            handle.remove()
    mask = loaded.image_positions(inputs["input_ids"])
    return seen[0][mask].view(len(keep), -1, seen[0].shape[-1]).numpy()


def test_every_set_gets_the_same_noise_and_ablation_zeroes_the_set(setup):
    loaded, images = setup
    inputs = prompt_inputs(loaded, images[:2], PROMPT)
    clean = np.stack([o[0] for o, _ in image_activations(loaded, images[:2], PROMPT)])  # (B, P, d_ff) of layer 0
    r, p = 0.3, clean.shape[1]
    # row 0: noise at level 5, seed 2 (in units of r); row 1: ablation
    noise = torch.from_numpy(np.concatenate([noise_vector(5 * r, 2, p), np.zeros(p, np.float32)]))
    keep = torch.tensor([1.0, 0.0])
    added = {}
    for name, chosen in {"set A": [3, 10], "set B": [0, 7, 20]}.items():
        units = layer_units([[0, u] for u in chosen], loaded.n_layers)
        out = _layer0_output(loaded, inputs, units, keep, noise)
        delta = out - clean
        added[name] = delta[0][:, chosen]  # (P, n): noise added to each unit of the set on row 0
        np.testing.assert_allclose(out[1][:, chosen], 0.0)  # ablated row: the set's units are 0
        others = np.delete(delta, chosen, axis=2)
        assert np.abs(others).max() == 0  # nothing else moves
    expected = 5 * r * np.random.default_rng(2).standard_normal(p)
    for name, got in added.items():
        for column in got.T:
            np.testing.assert_allclose(column, expected, rtol=1e-4, atol=1e-5, err_msg=name)
    assert all(len(m._forward_hooks) == 0 for m in loaded.act_fns)


def test_batched_rows_equal_one_by_one(setup):
    loaded, images = setup
    units = layer_units([[0, 1], [0, 4], [1, 7], [1, 9]], loaded.n_layers)
    conditions = Protocol([0.5, 3.0], 2, ablation=True).perturbations()
    rows = [(c, i) for c in conditions for i in range(3)]
    batched = perturbed_captions(loaded, images, PROMPT, units, rows, 2.0, max_new_tokens=8, batch_size=15)
    single = perturbed_captions(loaded, images, PROMPT, units, rows, 2.0, max_new_tokens=8, batch_size=1)
    assert batched == single
    # the captions depend on the rows' images and perturbations, so the equality above is not trivially true
    assert len(set(single)) > 1


def test_ablating_every_unit_equals_the_evaluations_ablation(setup):
    loaded, images = setup
    everything = [np.arange(loaded.d_ff)] * loaded.n_layers
    rows = [(Perturbation(ABLATION), i) for i in range(len(images))]
    ablated = [c for c, _ in perturbed_captions(loaded, images, PROMPT, everything, rows, max_new_tokens=10)]

    def ablate(input_ids):  # what kneurons.synth.evaluate zeroes
        return edit_image_activations(loaded.act_fns, loaded.image_positions(input_ids), zero_edit)

    assert ablated == generate_captions(loaded, images, PROMPT, max_new_tokens=10, context=ablate)
    # the same prompt-pass logits, which differ from the clean ones (so the equality above is not vacuous)
    inputs = prompt_inputs(loaded, images, PROMPT)
    n = len(images)
    with torch.inference_mode():
        clean = loaded.model(**inputs).logits
        with ablate(inputs["input_ids"]):
            zeroed = loaded.model(**inputs).logits
        with perturb_units(loaded, inputs["input_ids"], everything, torch.zeros(n), torch.zeros(n * 64)):
            ours = loaded.model(**inputs).logits
    torch.testing.assert_close(ours, zeroed)
    assert (ours - clean).abs().max() > 1e-3


def test_greedy_loop_equals_transformers_generate(setup):
    loaded, images = setup
    inputs = prompt_inputs(loaded, images, PROMPT)
    for max_new in (1, 6, 32):
        with torch.inference_mode():
            out = loaded.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new)
        expected = loaded.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert generate_scored_batch(loaded, inputs, max_new)[0] == [c.strip() for c in expected]
