"""Every supported family on a tiny random-weight model built from its config (tests/families.py): load, capture,
GradCAM against torch.autograd.grad, batched == one-by-one on images of mixed sizes, and the token-to-pixel map
checked against the model itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from kneurons.dumps import gradcam, image_activations, token_layout
from kneurons.figures import token_map
from kneurons.generation import collate, generate_captions, image_inputs, scored_captions
from kneurons.logprob import continuations
from kneurons.models import LoadedModel, load_model
from kneurons.perturb import (
    ablated_captions,
    layer_units,
    noise_vector,
    patch_units,
    perturbed_batch,
    perturbed_captions,
)
from kneurons.protocol import Perturbation, Protocol
from kneurons.restore import every_unit, no_unit, restored_captions

from .families import FAMILIES, PROMPTS, decoder_inputs, minigpt4_sources
from .helpers import forged_ids

SIZES = [(48, 48), (40, 72), (70, 30), (96, 64)]  # (H, W): square, wide, tall, large


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tmp_path_factory) -> tuple[str, LoadedModel]:
    torch.manual_seed(0)
    path = FAMILIES[request.param](tmp_path_factory.mktemp(request.param) / "model")
    return request.param, load_model(path)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    """Smooth random images (low-frequency colour fields) of mixed sizes."""
    rng = np.random.default_rng(7)
    out = []
    for h, w in SIZES:
        coarse = rng.uniform(0, 255, (4, 4, 3)).astype(np.float32)
        out.append(np.asarray(torch.nn.functional.interpolate(
            torch.from_numpy(coarse).permute(2, 0, 1)[None], size=(h, w), mode="bilinear", align_corners=False
        )[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8)))  # fmt: skip
    return out


def test_family_is_read_from_the_config(family):
    name, loaded = family
    assert name in loaded.family.model_types
    assert loaded.n_layers == 2 and loaded.d_ff == 48


def test_image_tokens_come_from_each_images_processor_output(family, images):
    name, loaded = family
    parts = image_inputs(loaded, images, PROMPTS[name])
    counts = [int((p["input_ids"][0] == loaded.image_token_id).sum()) for p in parts]
    assert all(c > 0 for c in counts)
    if name not in ("llava", "minigpt4"):  # one square for every image (crop; squash); the others follow its shape
        assert len(set(counts)) > 1, counts
    batch = collate(loaded, parts)
    mask = loaded.image_positions(batch["input_ids"])
    assert mask.sum(dim=1).tolist() == counts
    lengths = [p["input_ids"].shape[1] for p in parts]
    for row, n in enumerate(lengths):  # left padding: the attention mask hides exactly the padding
        assert batch["attention_mask"][row].tolist() == [0] * (max(lengths) - n) + [1] * n


def test_batched_capture_equals_one_by_one(family, images):
    name, loaded = family
    batched = image_activations(loaded, images, PROMPTS[name])
    for image, (o, layout) in zip(images, batched, strict=True):
        (single, single_layout), = image_activations(loaded, [image], PROMPTS[name])  # fmt: skip
        assert o.shape == single.shape == (2, layout.n_tokens, 48)
        np.testing.assert_allclose(o, single, rtol=1e-4, atol=1e-5)
        np.testing.assert_array_equal(layout.positions, single_layout.positions)


class _Recorder(nn.Module):
    """Stands in for an act_fn (no hooks): computes SiLU and keeps the output in the graph."""

    def __init__(self, store: list, layer: int) -> None:
        super().__init__()
        self.store, self.layer = store, layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.store[self.layer] = torch.nn.functional.silu(x)
        return self.store[self.layer]


def test_gradcam_equals_plain_autograd(family, images):
    name, loaded = family
    image, caption = images[1], " a dog on the grass"  # the text after the prompt, exactly (its space too)
    cam = gradcam(loaded, image, PROMPTS[name], caption, "dog")
    assert cam.token == "dog"
    # reference: the processor's own inputs, the model's own positions, recorder act_fns, torch.autograd.grad
    inputs = loaded.processor(images=[image], text=[PROMPTS[name] + caption], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    j = ids.index(loaded.processor.tokenizer.convert_tokens_to_ids("dog"))
    model = load_model(loaded.path).model
    store: list = [None] * 2
    for i, layer in enumerate(model.get_decoder().layers):
        layer.mlp.act_fn = _Recorder(store, i)
    model.get_input_embeddings().weight.requires_grad_(True)
    prefix = {k: v[:, :j] if v.shape[:2] == inputs["input_ids"].shape else v for k, v in inputs.items()}
    y = model(**prefix).logits[0, -1, cam.token_id]
    grads = torch.autograd.grad(y, store)
    mask = inputs["input_ids"][0, :j] == loaded.image_token_id
    ref = np.stack([(o[0, mask] * g[0, mask]).detach().numpy() for o, g in zip(store, grads, strict=True)])
    assert cam.position == j - 1
    np.testing.assert_allclose(cam.gradcam, ref, rtol=1e-3, atol=1e-6)
    assert np.abs(cam.gradcam[0]).sum() > 0


CAPTIONS = [" a dog on the grass", " two cats and a dog", " the dog sleeps", " a red dog"]  # as written, one per image


def plain_logp(loaded: LoadedModel, image: np.ndarray, prompt: str, caption: str, word: str) -> float:
    """The oracle: log_softmax of a plain forward of the processor's prompt + caption (the model's own positions)
    at the position before the word's token, found by id."""
    inputs = loaded.processor(images=[image], text=[prompt + caption], return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    j = ids.index(loaded.processor.tokenizer.convert_tokens_to_ids(word))
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0, j - 1].float()
    return float(torch.log_softmax(logits, -1)[ids[j]])


def test_batched_perturbed_captions_equal_one_by_one_on_mixed_sizes(family, images):
    """Captions and log-probabilities read in the same prompt pass: batched == one by one on images of mixed
    sizes; the clean row's caption is the unscored caption (the cache cropped back to the prompt) and its log p is
    a plain forward's."""
    name, loaded = family
    units = layer_units([[0, 1], [0, 4], [0, 30], [1, 7]], loaded.n_layers)
    rows = [(c, i) for c in Protocol([1.0, 3.0], 2, ablation=True).perturbations() for i in range(len(images))]
    rows.append((Perturbation("noise", 0.0, 0), 0))  # no noise: the clean caption
    scored = continuations(loaded, images, PROMPTS[name], CAPTIONS, ["dog"] * len(images), {})
    args = (loaded, images, PROMPTS[name], units, rows, 1.0)
    batched = perturbed_captions(*args, max_new_tokens=6, batch_size=len(rows), continuations=scored)
    single = perturbed_captions(*args, max_new_tokens=6, batch_size=1, continuations=scored)
    assert [c for c, _ in batched] == [c for c, _ in single]
    np.testing.assert_allclose([lp for _, lp in batched], [lp for _, lp in single], rtol=1e-4, atol=1e-4)
    assert len({c for c, _ in single}) > 1  # the captions depend on image and perturbation: not vacuous
    assert len({round(lp, 3) for _, lp in single}) > len(images)  # so do the log-probabilities
    unscored = perturbed_captions(*args, max_new_tokens=6, batch_size=len(rows))
    assert [c for c, _ in unscored] == [c for c, _ in batched] and {lp for _, lp in unscored} == {None}
    clean_caption, clean_logp = single[-1]
    assert clean_caption == generate_captions(loaded, images[:1], PROMPTS[name], max_new_tokens=6)[0]
    assert clean_logp == pytest.approx(plain_logp(loaded, images[0], PROMPTS[name], CAPTIONS[0], "dog"), abs=1e-4)


@pytest.mark.parametrize(("op", "strength"), [("erase", 0.0), ("amplify", 3.0), ("rewrite", 2.0)])
def test_edited_models_caption_batched_as_one_by_one_on_mixed_sizes(family, images, op, strength):
    """A weight edit (kneurons.edit) acts on every row alike: batched == one-by-one captions and log p on images of
    mixed sizes, and the edit changes what the model says (not vacuous)."""
    from kneurons.edit import Edit, edited

    name, loaded = family
    units = [[0, u] for u in range(0, loaded.d_ff, 3)] + [[1, u] for u in range(1, loaded.d_ff, 3)]
    edit = Edit(op, strength, "dog", "cat") if op == "rewrite" else Edit(op, strength)
    scored = continuations(loaded, images, PROMPTS[name], CAPTIONS, ["dog"] * len(images), {})
    clean = scored_captions(loaded, images, PROMPTS[name], scored, max_new_tokens=6, batch_size=len(images))
    with edited(loaded, units, edit):
        batched = scored_captions(loaded, images, PROMPTS[name], scored, max_new_tokens=6, batch_size=len(images))
        single = scored_captions(loaded, images, PROMPTS[name], scored, max_new_tokens=6, batch_size=1)
    assert [c for c, _ in batched] == [c for c, _ in single]
    np.testing.assert_allclose([lp for _, lp in batched], [lp for _, lp in single], rtol=1e-4, atol=1e-4)
    assert [lp for _, lp in batched] != pytest.approx([lp for _, lp in clean], abs=1e-3)


def test_sets_ablated_together_caption_as_each_set_ablated_alone_on_mixed_sizes(family, images):
    """kneurons.perturb.ablated_captions (a set per row, every set's rows batched together) gives each set's
    zero-ablation captions and log p of perturbed_captions, one set at a time."""
    name, loaded = family
    sets = [
        layer_units([[0, 1], [0, 4], [1, 7]], loaded.n_layers),
        layer_units([[0, u] for u in range(0, loaded.d_ff, 2)], loaded.n_layers),
        layer_units([[1, 3]], loaded.n_layers),
    ]
    scored = continuations(loaded, images, PROMPTS[name], CAPTIONS, ["dog"] * len(images), {})
    together = ablated_captions(loaded, images, PROMPTS[name], sets, 6, 64, scored)
    rows = [(Perturbation("ablation"), i) for i in range(len(images))]
    for units, got in zip(sets, together, strict=True):
        alone = perturbed_captions(loaded, images, PROMPTS[name], units, rows, 1.0, 6, 64, scored)
        assert [c for c, _ in got] == [c for c, _ in alone]
        np.testing.assert_allclose([lp for _, lp in got], [lp for _, lp in alone], rtol=1e-4, atol=1e-4)
    assert len({round(lp, 3) for s in together for _, lp in s}) > len(images)  # the sets differ: not vacuous


def test_restoration_rows_batched_equal_one_by_one(family, images):
    """Restoration of an image with another of the same size as its 'original': rows patching different sets
    (and every unit, and none) batched == one by one, captions and log p; patching every unit makes the captured
    O' the source's exactly; patching nothing leaves the image's own caption and log p."""
    name, loaded = family
    source, target = images[0], np.ascontiguousarray(images[0][:, ::-1])  # same size, other pixels
    sets = [layer_units(n, loaded.n_layers) for n in ([[0, 1], [1, 7]], [[0, 2], [0, 3], [0, 40]], [[1, 0]])]
    unit_sets = [*sets, every_unit(loaded), no_unit(loaded)]
    (cont,) = continuations(loaded, [source], PROMPTS[name], CAPTIONS[:1], ["dog"], {})
    batched, original = restored_captions(loaded, source, target, PROMPTS[name], unit_sets, cont, 6, batch_size=8)
    single, _ = restored_captions(loaded, source, target, PROMPTS[name], unit_sets, cont, 6, batch_size=1)
    assert [c for c, _ in batched] == [c for c, _ in single]
    np.testing.assert_allclose([lp for _, lp in batched], [lp for _, lp in single], rtol=1e-4, atol=1e-4)
    assert len({round(lp, 4) for _, lp in batched}) > 2  # the sets change log p: not vacuous
    (own,) = scored_captions(loaded, [target], PROMPTS[name], [cont], max_new_tokens=6)
    assert batched[-1][0] == own[0] and batched[-1][1] == pytest.approx(own[1], abs=1e-5)  # nothing patched
    assert original[1] == pytest.approx(plain_logp(loaded, source, PROMPTS[name], CAPTIONS[0], "dog"), abs=1e-4)
    ((want, _),) = image_activations(loaded, [source], PROMPTS[name])
    ids = image_inputs(loaded, [target], PROMPTS[name])[0]["input_ids"]
    values = [torch.from_numpy(want[layer]) for layer in range(loaded.n_layers)]
    with patch_units(loaded, ids, every_unit(loaded), values):
        ((got, _),) = image_activations(loaded, [target], PROMPTS[name])
    np.testing.assert_array_equal(got, want)


def test_token_map_matches_the_pixels_each_token_sees(family, images):
    """Change the pixels inside one token's region: that token changes, and so does every token whose region holds
    the changed block, and no token changes whose region (widened by half its size) misses the block."""
    name, loaded = family
    for image in images:
        inputs = image_inputs(loaded, [image], PROMPTS[name])[0]
        layout = token_layout(loaded, inputs, image.shape[:2])
        finite = np.flatnonzero(np.isfinite(layout.regions).all(axis=1))
        before = decoder_inputs(loaded, inputs)[layout.positions]
        for t in finite[:: max(1, len(finite) // 5)]:  # about five tokens of each image
            x0, y0, x1, y1 = layout.regions[t]
            cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
            c0, c1 = int(np.floor(cx - hw)), max(int(np.ceil(cx + hw)), int(np.floor(cx - hw)) + 1)
            r0, r1 = int(np.floor(cy - hh)), max(int(np.ceil(cy + hh)), int(np.floor(cy - hh)) + 1)
            changed_image = image.copy()
            changed_image[r0:r1, c0:c1] = 255 - changed_image[r0:r1, c0:c1]
            after = decoder_inputs(loaded, image_inputs(loaded, [changed_image], PROMPTS[name])[0])[layout.positions]
            changed = set(np.flatnonzero((after - before).abs().amax(dim=1).numpy() > 1e-5))
            assert t in changed, (name, image.shape, t)
            box = np.array([c0, r0, c1, r1], dtype=np.float64)
            for u in finite:
                reg = layout.regions[u]
                holds = reg[0] <= box[0] and reg[1] <= box[1] and reg[2] >= box[2] and reg[3] >= box[3]
                if holds:
                    assert u in changed, (name, image.shape, t, u)
                pad = np.array(
                    [-(reg[2] - reg[0]) / 2, -(reg[3] - reg[1]) / 2, (reg[2] - reg[0]) / 2, (reg[3] - reg[1]) / 2]
                )
                near = reg + pad
                if u in changed:
                    assert near[0] < box[2] and near[2] > box[0] and near[1] < box[3] and near[3] > box[1], (
                        name, image.shape, t, u, reg, box
                    )  # fmt: skip


def test_token_map_covers_the_image(family, images):
    name, loaded = family
    for image in images:
        h, w = image.shape[:2]
        layout = token_layout(loaded, image_inputs(loaded, [image], PROMPTS[name])[0], (h, w))
        regions = layout.regions[np.isfinite(layout.regions).all(axis=1)]
        assert (regions[:, [0, 2]] >= 0).all() and (regions[:, [0, 2]] <= w).all()
        assert (regions[:, [1, 3]] >= 0).all() and (regions[:, [1, 3]] <= h).all()
        covered = np.isfinite(token_map(np.ones(layout.n_tokens), layout.regions, (h, w)))
        if name == "llava":  # shortest edge resized, then a centre square cropped: the rest is never seen
            side = min(h, w)
            top, left = (h - side) // 2, (w - side) // 2
            expected = np.zeros((h, w), bool)
            expected[top : top + side, left : left + side] = True
            assert (covered == expected).mean() > 0.97, (image.shape, (covered == expected).mean())
        else:
            assert covered.all(), (name, image.shape)
        nan_tokens = int((~np.isfinite(layout.regions).all(axis=1)).sum())
        if name in ("llava_next", "llava_onevision"):  # one newline token per row of the tile grid, nothing else
            tokens = np.asarray(image_inputs(loaded, [image], PROMPTS[name])[0]["input_ids"][0])
            assert nan_tokens > 0 and nan_tokens < layout.n_tokens / 4
            assert (tokens == loaded.image_token_id).sum() == layout.n_tokens
        else:
            assert nan_tokens == 0


def test_greedy_loop_equals_transformers_generate(family, images):
    name, loaded = family
    for image in images:
        inputs = image_inputs(loaded, [image], PROMPTS[name])[0]
        with torch.inference_mode():
            out = loaded.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=6)
        expected = loaded.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        assert generate_captions(loaded, [image], PROMPTS[name], max_new_tokens=6) == [c.strip() for c in expected]


def test_the_workflow_runs_on_a_tiny_minigpt4_it_converts_itself(tmp_path):
    """The whole DAG on a tiny random model of another family than the embedded captioner's: MiniGPT-4's three
    tiny released parts, converted by rule convert_model inside the run. Its captions mention nothing, so the
    candidates' captions are forged after captioning; every later rule then runs on it. (Every family runs the
    rule functions of the later rules in test_every_later_rule_runs_on_the_family.)"""
    import h5py
    import yaml

    from kneurons.io import read_tsv_rows
    from kneurons.samples import read_tsv, write_tsv

    from .helpers import snakemake

    torch.manual_seed(0)
    overlay = tmp_path / "overlay.yaml"
    sources = minigpt4_sources(tmp_path / "sources")
    paths = {k: str(getattr(sources, k)) for k in ("vit", "checkpoint", "llm", "vision_config")}
    overlay.write_text(yaml.safe_dump({
        "model": {"path": "results/model/minigpt4", "convert": {"family": "minigpt4", **paths}},
        "captioner": {"train": False},  # the test config trains its captioner: this run converts its model instead
        "prompt": PROMPTS["minigpt4"],
        "knowledge": ["bear"],
        "samples": {"per_knowledge": 2, "max_candidates": 4},
        "noise": {"levels": [2.0], "seeds": 1},
        "thresholds": {"default": {"activation": "q0.9", "gradcam": "q0.5"}},
    }))  # fmt: skip
    from .helpers import TEST_CONFIG

    work = tmp_path / "run"
    captioned = "results/samples/bear/captioned.tsv"
    first = snakemake(work, "--cores", "2", captioned, configs=(TEST_CONFIG, overlay))
    assert first.returncode == 0, first.stderr[-3000:]
    rows = read_tsv(work / captioned)
    for r in rows:
        if r.status != "rejected":
            r.caption, r.inpainted_caption = "a bear on the grass", "the grass"
            r.caption_ids = forged_ids(AutoTokenizer.from_pretrained(work / "results/model/minigpt4"), r.caption)
    write_tsv(work / captioned, rows)
    run = snakemake(work, "--cores", "2", configs=(TEST_CONFIG, overlay))
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (work / "results/model/captioner").exists()  # the configured model, no training
    chosen = [r for r in read_tsv_rows(work / "results/samples/selected.tsv") if r["status"] == "selected"]
    assert chosen
    for r in chosen:
        with h5py.File(work / f"results/activations/bear/{r['image_id']}.h5") as f:
            p = int(f.attrs["image_tokens"])
            assert f.attrs["family"] == "MiniGPT-4 (Llama-2)" and f["original"].shape == (2, p, 48)
            assert f["token_regions"].shape == (p, 4) and f["token_positions"].shape == (p,)
        with h5py.File(work / f"results/gradcam/bear/{r['image_id']}.h5") as f:
            assert f.attrs["token"] == "bear" and f["gradcam"].shape == (2, p, 48)
    table2 = read_tsv_rows(work / "results/tables/table2.csv", delimiter=",")
    assert {(r["method"], r["level"]) for r in table2 if r["knowledge"] == "bear"} >= {("ours", "ablation")}
    assert (work / "results/figures/heatmaps/bear.png").stat().st_size > 0
    # converted once by the workflow, at model.path
    assert json.loads((work / "results/model/minigpt4/config.json").read_text())["model_type"] == "minigpt4"


@pytest.mark.parametrize(
    "overlay",
    ["llava-next-mistral-7b", "llava-onevision-qwen2-7b", "qwen2-vl-7b", "smolvlm-instruct", "minigpt4-llama2-7b"],
)
def test_each_familys_checkpoint_config_is_valid_after_the_paper_config(overlay):
    import yaml
    from snakemake.utils import validate

    from .helpers import DEFAULT_CONFIG, REPO

    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for path in (REPO / "config/coco2017-llava15.yaml", REPO / f"config/models/{overlay}.yaml"):
        for key, value in yaml.safe_load(path.read_text()).items():
            config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    validate(config, str(REPO / "config/schema.yaml"))
    assert config["model"]["device"] == "cuda"
    convert = config["model"].get("convert")
    if convert:  # the released files, converted by rule convert_model at model.path
        assert config["model"]["path"].startswith("results/")
        assert all(convert[k].startswith("/models/") for k in ("vit", "checkpoint", "llm"))
    else:
        assert config["model"]["path"].startswith("/models/")
    placeholders = ("<image>", "<|image_pad|>", "<ImageHere>")
    assert sum(config["prompt"].count(p) for p in placeholders) == 1
    assert config["prompt"].endswith("The image shows a")


def test_each_row_gets_the_noise_of_its_own_length(family, images):
    """Rows of one batch with different P: row b's set units get v = level · z[:P_b] at its image positions (z from
    the seed), an ablated row gets 0 there, and nothing else moves."""
    name, loaded = family
    parts = image_inputs(loaded, images, PROMPTS[name])
    units = layer_units([[0, 3], [0, 11]], loaded.n_layers)
    rows = [(Perturbation("noise", 2.0, 5), i) for i in range(len(images))] + [(Perturbation("ablation"), 1)]
    seen: dict = {}

    def prompt_pass_only(loaded, inputs, max_new_tokens, context, continuations=None):
        mask = loaded.image_positions(inputs["input_ids"])
        hook = lambda _m, _i, out: seen.__setitem__("o", out[mask].split(mask.sum(1).tolist()))  # noqa: E731
        with torch.no_grad(), context(inputs["input_ids"]):
            handle = loaded.act_fns[0].register_forward_hook(hook)  # after the perturbation's hook
            try:
                loaded.model(**inputs, position_ids=loaded.positions(inputs))
            finally:
                handle.remove()
        return [""] * len(mask), [None] * len(mask)

    perturbed_batch(loaded, parts, units, rows, 0.5, 1, generate=prompt_pass_only)
    clean = image_activations(loaded, images, PROMPTS[name])
    for (pert, i), got in zip(rows, seen["o"], strict=True):
        o = clean[i][0][0]  # (P_i, d_ff) at layer 0, unperturbed
        delta = got.numpy() - o
        for unit in (3, 11):
            want = noise_vector(1.0, 5, len(o)) if pert.kind == "noise" else -o[:, unit]  # level 2 x r 0.5; ablation
            np.testing.assert_allclose(delta[:, unit], want, rtol=1e-4, atol=1e-5)
        assert np.abs(np.delete(delta, [3, 11], axis=1)).max() < 1e-5


def _batch_sizes(loaded: LoadedModel) -> tuple[list[int], object]:
    """A forward hook on layer 0's act_fn that records each forward's batch size (rows in the batch)."""
    sizes: list[int] = []
    return sizes, loaded.act_fns[0].register_forward_hook(lambda _m, _i, out: sizes.append(int(out.shape[0])))


def test_rows_that_end_early_leave_the_batch_and_the_rest_go_on(family, images):
    """A copy of the model whose end token takes the place of a word the captions say at different steps: they
    end there. Batched captions equal one-by-one captions, and each batch (one per sequence length) really
    shrinks: at each step it holds exactly its rows whose one-by-one run was still going (counted from each row's
    own forwards)."""
    name, loaded = family
    ended = load_model(loaded.path)
    head = ended.model.get_output_embeddings().weight
    first_said: dict[int, set] = {}  # token -> the step it is first said at, in each image's clean caption
    with torch.no_grad():
        for image in images:
            inputs = image_inputs(ended, [image], PROMPTS[name])[0]
            said = ended.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=8)
            tokens = said[0, inputs["input_ids"].shape[1] :].tolist()
            for token in set(tokens):
                first_said.setdefault(token, set()).add(tokens.index(token))
        word = max(first_said, key=lambda t: (len(first_said[t]), -min(first_said[t]), -t))
        head[ended.processor.tokenizer.eos_token_id] = 1.001 * head[word]  # the end token wins where word did
    units = layer_units([[0, 1], [0, 4], [1, 7]], ended.n_layers)
    rows = [(c, i) for c in Protocol([1.0], 1, ablation=True).perturbations() for i in range(len(images))]
    rows += [(Perturbation("noise", 0.0, 0), i) for i in range(len(images))]
    args = (ended, images, PROMPTS[name], units, rows, 1.0)
    steps, single = [], []
    for row in rows:  # one by one: how many forwards each row's caption took
        sizes, handle = _batch_sizes(ended)
        single += perturbed_captions(ended, images, PROMPTS[name], units, [row], 1.0, max_new_tokens=8, batch_size=1)
        handle.remove()
        steps.append(len(sizes))
    sizes, handle = _batch_sizes(ended)
    batched = perturbed_captions(*args, max_new_tokens=8, batch_size=len(rows))
    handle.remove()
    assert batched == single
    assert min(steps) < 8 and len(set(steps)) > 1, steps  # rows ended early, at different steps
    # one batch per sequence length (in order of first appearance), each shrinking as its rows finish
    length = [image_inputs(ended, [images[i]], PROMPTS[name])[0]["input_ids"].shape[1] for _, i in rows]
    groups = [[s for s, n in zip(steps, length, strict=True) if n == g] for g in dict.fromkeys(length)]
    assert sizes == [sum(n > t for n in group) for group in groups for t in range(max(group))]


def test_decode_steps_run_unedited(family, images):
    """A perturbation edits the prompt pass only: ablated captions equal transformers' own ``generate`` under a
    plain hook that zeroes the same units at the image positions of the prompt pass and lets every decode step
    (one token each) through."""
    name, loaded = family
    chosen = list(range(0, 48, 2))
    units = layer_units([[layer, u] for layer in range(loaded.n_layers) for u in chosen], loaded.n_layers)
    rows = [(Perturbation("ablation"), i) for i in range(len(images))]
    scored = perturbed_captions(loaded, images, PROMPTS[name], units, rows, 1.0, max_new_tokens=6, batch_size=len(rows))
    ours = [c for c, _ in scored]
    changed = 0
    for image, got in zip(images, ours, strict=True):
        inputs = image_inputs(loaded, [image], PROMPTS[name])[0]
        at_image = (inputs["input_ids"][0] == loaded.image_token_id).nonzero()[:, 0]

        def zero_in_prompt_pass(_m, _i, out, at_image=at_image, length=inputs["input_ids"].shape[1]):
            if out.shape[1] != length:
                return out  # a decode step
            out = out.clone()
            out[0, at_image[:, None], torch.tensor(chosen)] = 0.0
            return out

        handles = [fn.register_forward_hook(zero_in_prompt_pass) for fn in loaded.act_fns]
        try:
            with torch.inference_mode():
                out = loaded.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=6)
        finally:
            for h in handles:
                h.remove()
        want = loaded.processor.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)[0]
        assert got == want.strip()
        changed += got != generate_captions(loaded, [image], PROMPTS[name], max_new_tokens=6)[0]
    assert changed  # the ablation changed captions: the equality is not vacuous


def test_every_later_rule_runs_on_the_family(family, images, tmp_path):
    """The workflow's rule functions, as the scripts call them, on forged samples of k = bear (D = four images of
    four sizes, the inpainted image a copy with k's box greyed, the captions given): dumps with the image's own
    token layout, the three methods' sets and their controls, the heatmaps, decoded neurons and perturbed
    captions."""
    import cv2
    import h5py

    from kneurons.names import BOUNDS_FILE
    from kneurons.protocol import Captioning
    from kneurons.rules.figures import decoded_neurons, heatmaps
    from kneurons.rules.neurons import dumps, neurons_baseline, neurons_control, neurons_ours, neurons_stage1
    from kneurons.rules.perturb import load_samples, necessity, noise_scale, sufficiency
    from kneurons.samples import Candidate, write_tsv

    name, loaded = family
    (tmp_path / "images").mkdir()
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "bear", "supercategory": "animal"}]}
    rows = []
    for i, image in enumerate(images, 1):
        h, w = image.shape[:2]
        cv2.imwrite(str(tmp_path / f"images/{i}.png"), image[:, :, ::-1])
        box = [w // 4, h // 4, w // 2, h // 2]
        coco["images"].append({"id": i, "file_name": f"{i}.png", "height": h, "width": w})
        coco["annotations"].append({"id": i, "image_id": i, "category_id": 1, "bbox": box, "iscrowd": 0, "area": 1})
        inpainted = image.copy()
        inpainted[box[1] : box[1] + box[3], box[0] : box[0] + box[2]] = 128
        cv2.imwrite(str(tmp_path / f"{i}_inpainted.png"), inpainted[:, :, ::-1])
        rows.append(Candidate("bear", i, str(tmp_path / f"{i}_inpainted.png"), caption="a bear on the grass",
                              inpainted_caption="the grass", status="selected",
                              caption_ids=forged_ids(loaded.processor.tokenizer, "a bear on the grass")))  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    write_tsv(tmp_path / "selected.tsv", rows)
    data = (loaded, str(tmp_path / "instances.json"), str(tmp_path / "images"), str(tmp_path / "selected.tsv"))
    d = {kind: str(tmp_path / kind) for kind in ("acts", "cam", "ours", "schwettmann", "pan", "ig", "ours_control")}
    captioning = Captioning(PROMPTS[name], max_new_tokens=4, batch_size=16)
    dump_dirs = {"activations": d["acts"], "gradcam": d["cam"]}
    dumps(*data, captioning, {"mode": "full", "trace_share": 0.01, "ig_steps": 4, "ig_rows": 5}, dump_dirs)
    neurons_ours(dump_dirs, {"activation": "q0.9", "gradcam": "q0.5"}, False, d["ours"])
    for method in ("schwettmann", "pan", "ig"):
        neurons_baseline(method, d["ours"], dump_dirs, False, d[method])
    neurons_control("ours", d["ours"], dump_dirs, d["ours_control"])

    newline_tokens = name in ("llava_next", "llava_onevision")  # each row's newline token covers no pixel
    for i, image in enumerate(images, 1):
        p = int((image_inputs(loaded, [image], PROMPTS[name])[0]["input_ids"] == loaded.image_token_id).sum())
        with h5py.File(tmp_path / f"acts/{i}.h5") as f:
            assert f["original"].shape == f["inpainted"].shape == (2, p, 48) and f["token_regions"].shape == (p, 4)
            regions = f["token_regions"][()]
            assert np.isnan(regions).all(axis=1).any() == newline_tokens
            covered = regions[~np.isnan(regions).any(axis=1)]
            assert covered.min() >= 0 and (covered[:, 2:].max(axis=0) <= image.shape[1::-1]).all()
        with h5py.File(tmp_path / f"cam/{i}.h5") as f:
            assert f["gradcam"].shape == (2, p, 48) and f.attrs["token"] == "bear"
            assert f["ig"].shape == (2, 48) and np.isfinite(f["ig"][()]).all() and f["ig"][()].any()
        ours = json.loads((tmp_path / f"ours/{i}.json").read_text())
        assert 0 < ours["size"] <= ours["candidates"]
        for kind in ("schwettmann", "pan", "ig", "ours_control"):
            other = json.loads((tmp_path / f"{kind}/{i}.json").read_text())
            assert other["size"] == ours["size"]
        control = json.loads((tmp_path / f"ours_control/{i}.json").read_text())
        assert control["layer_counts"] == ours["layer_counts"]

    heatmaps(*data[1:], d["acts"], d["ours"], "bear", 3, str(tmp_path / "heat.png"))
    assert cv2.imread(str(tmp_path / "heat.png")).shape[0] > 50
    out = [str(tmp_path / "dec.csv"), str(tmp_path / "dec.md")]
    decoded_neurons(loaded, [d["ours"], d["pan"]], data[3], 3, *out)
    decoded = (tmp_path / "dec.csv").read_text().splitlines()[1:]
    sizes = [json.loads((tmp_path / f"{m}/{i}.json").read_text())["size"] for m in ("ours", "pan") for i in range(1, 5)]
    assert len(decoded) == sum(sizes)
    noise_scale("calibrated", [2.0], [d["acts"]], str(tmp_path / "scale.json"))
    protocol = Protocol((2.0,), 1)
    samples = load_samples(*data, captioning, protocol)
    r = json.loads((tmp_path / "scale.json").read_text())["reference_scale"]
    necessity(loaded, samples, {"ours_control": d["ours_control"]}, r, protocol, captioning,
              {"ours_control": str(tmp_path / "perturb.jsonl")})  # fmt: skip
    lines = [json.loads(line) for line in (tmp_path / "perturb.jsonl").read_text().splitlines()]
    assert len(lines) == 4 * 2 * 4  # sets x (noise at one level and seed, ablation) x images of D
    assert {ln["perturbation"] for ln in lines} == {"noise", "ablation"}
    assert all(np.isfinite(ln["logp"]) for ln in lines)  # log p of "bear" in each image's clean caption
    neurons_stage1(d["ours"], dump_dirs, str(tmp_path / "ours_stage1"))
    kinds = {"ours": d["ours"], "ours_stage1": str(tmp_path / "ours_stage1")}
    outs = {kind: str(tmp_path / f"restore_{kind}.jsonl") for kind in kinds}
    sufficiency(loaded, samples.of("bear"), kinds, captioning, outs | {BOUNDS_FILE: str(tmp_path / "bounds.jsonl")})
    for path in outs.values():  # every set of k patched into every sample of k
        restored = [json.loads(line) for line in Path(path).read_text().splitlines()]
        assert sorted((ln["set"], ln["image_id"]) for ln in restored) == [
            (s, i) for s in range(1, 5) for i in range(1, 5)
        ]
    bounds = [json.loads(line) for line in (tmp_path / "bounds.jsonl").read_text().splitlines()]
    assert sorted((b["method"], b["image_id"]) for b in bounds) == [
        (m, i) for m in ("ceiling", "floor", "original") for i in range(1, 5)
    ]


@pytest.mark.parametrize("name", ["qwen2_vl", "smolvlm"])
def test_bfloat16_batches_of_one_length_equal_one_by_one(name, images, tmp_path, monkeypatch):
    """Families whose image-token count varies with the image: rows are batched by sequence length, so no batch
    is padded and a row's caption and log p in bfloat16 do not depend on its batch (a left-padded row's did)."""
    import kneurons.perturb

    padded = []

    def collate(loaded, parts):
        inputs = collate_parts(loaded, parts)
        padded.append(bool((inputs["attention_mask"] == 0).any()))
        return inputs

    collate_parts = kneurons.perturb.collate
    monkeypatch.setattr(kneurons.perturb, "collate", collate)
    loaded = load_model(FAMILIES[name](tmp_path / name), dtype="bfloat16")
    lengths = {int(image_inputs(loaded, [im], PROMPTS[name])[0]["input_ids"].shape[1]) for im in images}
    assert len(lengths) > 1  # mixed lengths: a batch of all the rows would pad
    units = layer_units([[0, 1], [0, 4], [1, 7]], loaded.n_layers)
    rows = [(c, i) for c in Protocol([1.0, 3.0], 2, ablation=True).perturbations() for i in range(len(images))]
    scored = continuations(loaded, images, PROMPTS[name], CAPTIONS, ["dog"] * len(images), {})
    args = (loaded, images, PROMPTS[name], units, rows, 1.0)
    batched = perturbed_captions(*args, max_new_tokens=6, batch_size=len(rows), continuations=scored)
    assert len(padded) == len(lengths) and not any(padded)  # one batch per length, none padded
    single = perturbed_captions(*args, max_new_tokens=6, batch_size=1, continuations=scored)
    assert batched == single
