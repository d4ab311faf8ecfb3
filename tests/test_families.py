"""Every supported family on a tiny random-weight model built from its config (tests/families.py): load, capture,
GradCAM against torch.autograd.grad, batched == one-by-one on images of mixed sizes, and the token-to-pixel map
checked against the model itself."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from kneurons.dumps import gradcam, image_activations, token_layout
from kneurons.figures import token_map
from kneurons.generation import collate, generate_captions, image_inputs
from kneurons.models import LoadedModel, load_model
from kneurons.perturb import Perturbation, layer_units, noise_vector, perturbations, perturbed_batch, perturbed_captions

from .families import FAMILIES, PROMPTS, decoder_inputs, minigpt4_sources

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
    image, caption = images[1], "a dog on the grass"
    cam = gradcam(loaded, image, PROMPTS[name], caption, "dog")
    assert cam.token == "dog"
    # reference: the processor's own inputs, the model's own positions, recorder act_fns, torch.autograd.grad
    inputs = loaded.processor(images=[image], text=[f"{PROMPTS[name]} {caption}"], return_tensors="pt")
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


def test_batched_perturbed_captions_equal_one_by_one_on_mixed_sizes(family, images):
    name, loaded = family
    units = layer_units([[0, 1], [0, 4], [0, 30], [1, 7]], loaded.n_layers)
    rows = [(c, i) for c in perturbations([1.0, 3.0], 2, ablation=True) for i in range(len(images))]
    rows.append((Perturbation("noise", 0.0, 0), 0))  # no noise: the clean caption
    args = (loaded, images, PROMPTS[name], units, rows, 1.0)
    batched = perturbed_captions(*args, max_new_tokens=6, batch_size=len(rows))
    single = perturbed_captions(*args, max_new_tokens=6, batch_size=1)
    assert batched == single
    assert len(set(single)) > 1  # the captions depend on image and perturbation: the equality is not vacuous
    assert single[-1] == generate_captions(loaded, images[:1], PROMPTS[name], max_new_tokens=6)[0]


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


DAG_FAMILIES = {"qwen2_vl": "Qwen2-VL / Qwen2.5-VL", "minigpt4": "MiniGPT-4 (Llama-2)"}


def _dag_model(name: str, tmp_path) -> dict:
    """The config ``model`` of a DAG test: a tiny saved Qwen2-VL, or MiniGPT-4's three tiny released parts that
    rule convert_model converts inside the run."""
    if name != "minigpt4":
        return {"path": str(FAMILIES[name](tmp_path / name))}
    sources = minigpt4_sources(tmp_path / "sources")
    paths = {k: str(getattr(sources, k)) for k in ("vit", "checkpoint", "llm", "vision_config")}
    return {"path": "results/model/minigpt4", "convert": {"family": "minigpt4", **paths}}


@pytest.mark.parametrize("name", sorted(DAG_FAMILIES))
def test_the_workflow_runs_on_a_tiny_model_with_forged_samples(name, tmp_path):
    """The whole DAG on a tiny random model (Qwen2-VL: M-RoPE, flattened patches, its images-only processor;
    MiniGPT-4: converted by the workflow from its released parts): its captions mention nothing, so the
    candidates' captions are forged after captioning; every later rule then runs on it."""
    import h5py
    import yaml

    from kneurons.io import read_tsv_rows
    from kneurons.samples import read_tsv, write_tsv

    from .helpers import snakemake

    torch.manual_seed(0)
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(yaml.safe_dump({
        "model": _dag_model(name, tmp_path),
        "prompt": PROMPTS[name],
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
    write_tsv(work / captioned, rows)
    run = snakemake(work, "--cores", "2", configs=(TEST_CONFIG, overlay))
    assert run.returncode == 0, run.stderr[-3000:]
    assert not (work / "results/model/captioner").exists()  # the configured model, no training
    chosen = [r for r in read_tsv_rows(work / "results/samples/selected.tsv") if r["status"] == "selected"]
    assert chosen
    for r in chosen:
        with h5py.File(work / f"results/activations/bear/{r['image_id']}.h5") as f:
            p = int(f.attrs["image_tokens"])
            assert f.attrs["family"] == DAG_FAMILIES[name] and f["original"].shape == (2, p, 48)
            assert f["token_regions"].shape == (p, 4) and f["token_positions"].shape == (p,)
        with h5py.File(work / f"results/gradcam/bear/{r['image_id']}.h5") as f:
            assert f.attrs["token"] == "bear" and f["gradcam"].shape == (2, p, 48)
    table2 = read_tsv_rows(work / "results/tables/table2.csv", delimiter=",")
    assert {(r["method"], r["level"]) for r in table2 if r["knowledge"] == "bear"} >= {("ours", "ablation")}
    assert (work / "results/figures/heatmaps/bear.png").stat().st_size > 0
    if name == "minigpt4":  # converted once by the workflow, at model.path
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

    def prompt_pass_only(loaded, inputs, max_new_tokens, context):
        mask = loaded.image_positions(inputs["input_ids"])
        hook = lambda _m, _i, out: seen.__setitem__("o", out[mask].split(mask.sum(1).tolist()))  # noqa: E731
        with torch.no_grad(), context(inputs["input_ids"]):
            handle = loaded.act_fns[0].register_forward_hook(hook)  # after the perturbation's hook
            try:
                loaded.model(**inputs, position_ids=loaded.positions(inputs))
            finally:
                handle.remove()
        return [""] * len(mask)

    perturbed_batch(loaded, parts, units, rows, 0.5, 1, prompt_pass_only)
    clean = image_activations(loaded, images, PROMPTS[name])
    for (pert, i), got in zip(rows, seen["o"], strict=True):
        o = clean[i][0][0]  # (P_i, d_ff) at layer 0, unperturbed
        delta = got.numpy() - o
        for unit in (3, 11):
            want = noise_vector(1.0, 5, len(o)) if pert.kind == "noise" else -o[:, unit]  # level 2 x r 0.5; ablation
            np.testing.assert_allclose(delta[:, unit], want, rtol=1e-4, atol=1e-5)
        assert np.abs(np.delete(delta, [3, 11], axis=1)).max() < 1e-5
