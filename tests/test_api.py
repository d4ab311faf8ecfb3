"""The notebook API (kneurons.KnowledgeNeurons): the same sets as the workflow byte for byte, hooks always released,
patching and log-probabilities against plain forwards, and examples/one_image.py on the test run's model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from kneurons import KnowledgeNeurons, Settings
from kneurons.coco import image_records, load_coco, read_image
from kneurons.dumps import image_activations
from kneurons.errors import KneuronsError
from kneurons.io import read_tsv_rows
from kneurons.names import IG_DAI, SET_KINDS
from kneurons.perturb import layer_units, perturbed_captions
from kneurons.protocol import Perturbation
from kneurons.reporting import strongest
from kneurons.samples import slug

from .helpers import DEFAULT_CONFIG, REPO, TEST_CONFIG


def _config() -> dict:
    config = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for key, value in yaml.safe_load(TEST_CONFIG.read_text()).items():
        config[key] = {**config.get(key, {}), **value} if isinstance(value, dict) else value
    return config


@pytest.fixture(scope="module")
def kn(run_dir) -> KnowledgeNeurons:
    return KnowledgeNeurons.load(run_dir / "results/model/captioner", prompt=_config()["prompt"])


@pytest.fixture(scope="module")
def sample(run_dir) -> dict:
    """The test run's first selected sample whose image holds one instance of its knowledge, with its record."""
    records = {
        r.id: r
        for r in image_records(
            load_coco(run_dir / "results/synth/annotations/instances_val.json"), run_dir / "results/synth/val"
        )
    }
    for row in read_tsv_rows(run_dir / "results/samples/selected.tsv"):
        rec = records[int(row["image_id"])]
        if row["status"] == "selected" and [a.category for a in rec.annotations].count(row["knowledge"]) == 1:
            return row | {"record": rec}
    pytest.fail("no selected sample with one instance of its knowledge")


def test_find_gives_the_workflows_sets_byte_for_byte(run_dir, kn, sample):
    config = _config()
    k, rec = sample["knowledge"], sample["record"]
    settings = Settings(
        activation=config["thresholds"]["default"]["activation"],
        gradcam=config["thresholds"]["default"]["gradcam"],
        exclude_last_layer=config["neurons"]["exclude_last_layer"],
        dilate=config["samples"]["dilate"],
        radius=config["samples"]["radius"],
        max_new_tokens=config["generation"]["max_new_tokens"],
    )
    box = next(a.bbox for a in rec.annotations if a.category == k)
    found = kn.find(rec.path, k, box=box, settings=settings, image_id=rec.id)
    # the same inpainting and captions as the workflow's rules
    np.testing.assert_array_equal(found.inpainted, read_image(run_dir / sample["inpainted"]))
    assert (found.caption, found.inpainted_caption) == (sample["caption"], sample["inpainted_caption"])
    for kind in SET_KINDS:  # N_k (with its thresholds), both baselines, the three controls
        written = (run_dir / f"results/neurons/{kind}/{slug(k)}/{rec.id}.json").read_text()
        assert json.dumps(found.sets[kind], indent=1) == written, kind
    assert found.sets["ours"]["size"] > 0 and found.candidates.sum() == found.sets["ours"]["candidates"]
    assert set(found.neurons("ours")) <= {tuple(n) for n in np.argwhere(found.candidates).tolist()}


def test_perturbation_contexts_always_release_their_hooks(kn, sample, monkeypatch):
    image, neurons = sample["record"].path, [(0, 1), (0, 7), (1, 3)]
    clean = kn.caption([image], max_new_tokens=8)
    seen = []

    def failing_forward(*args, **kwargs):  # the model fails while the perturbations' hooks are on
        seen.append(sum(len(a._forward_hooks) for a in kn.loaded.act_fns))
        raise RuntimeError("inside")

    with kn.ablate(neurons), kn.noise(neurons, 5.0, seed=1):
        monkeypatch.setattr(kn.loaded.model, "forward", failing_forward)
        with pytest.raises(RuntimeError, match="inside"):
            kn.caption([image], max_new_tokens=8)
        monkeypatch.undo()
        assert seen == [2 * kn.loaded.n_layers]  # both edits hooked every layer during the pass
        assert all(not a._forward_hooks for a in kn.loaded.act_fns)  # and released them when it failed
        assert len(kn._active) == 2
    assert all(not a._forward_hooks for a in kn.loaded.act_fns) and not kn._active
    assert kn.caption([image], max_new_tokens=8) == clean


def test_noise_and_ablation_are_the_workflows_perturbations(kn, sample):
    image, caption, k = read_image(sample["record"].path), sample["caption"], sample["knowledge"]
    every = [(layer, u) for layer in range(kn.loaded.n_layers) for u in range(kn.loaded.d_ff)]
    units = layer_units(every, kn.loaded.n_layers)
    rows = [(Perturbation("noise", 3.0, 2), 0), (Perturbation("ablation"), 0)]
    want = [c for c, _ in perturbed_captions(kn.loaded, [image], kn.prompt, units, rows, 0.5, max_new_tokens=8)]
    with kn.noise(every, 3.0, seed=2, scale=0.5):
        assert kn.caption([image], max_new_tokens=8) == want[:1]
        noisy = kn.logprob(image, " " + caption, k)
    with kn.ablate(every):
        assert kn.caption([image], max_new_tokens=8) == want[1:]
        ablated = kn.logprob(image, " " + caption, k)
    clean = kn.logprob(image, " " + caption, k)  # the captions of this 2-layer model survive; log p does not
    assert abs(noisy - clean) > 1e-3 and abs(ablated - clean) > 1e-3


def test_patching_every_unit_with_the_originals_values_gives_the_originals_activations(run_dir, kn, sample):
    original, inpainted = read_image(sample["record"].path), read_image(run_dir / sample["inpainted"])
    every = [(layer, u) for layer in range(kn.loaded.n_layers) for u in range(kn.loaded.d_ff)]
    ((want, _),) = image_activations(kn.loaded, [original], kn.prompt)
    with kn.patch(every, original):
        ((got, _),) = image_activations_under(kn, inpainted)
    np.testing.assert_array_equal(got, want)
    clean = kn.caption([inpainted], max_new_tokens=8)
    assert clean != kn.caption([original], max_new_tokens=8)  # k removed: the two captions differ
    with kn.patch(every, inpainted):  # patching with the image's own values leaves its caption as it was
        assert kn.caption([inpainted], max_new_tokens=8) == clean


def image_activations_under(kn: KnowledgeNeurons, image: np.ndarray):
    """O' captured after the active edits (a capture hook registered after them sees their result)."""
    with kn._context(_ids(kn, image)):
        return image_activations(kn.loaded, [image], kn.prompt)


def _ids(kn: KnowledgeNeurons, image: np.ndarray) -> torch.Tensor:
    from kneurons.generation import image_inputs

    return image_inputs(kn.loaded, [image], kn.prompt)[0]["input_ids"]


def test_logprob_is_log_softmax_of_a_plain_forward(kn, sample):
    from kneurons.generation import image_inputs

    image, k = read_image(sample["record"].path), sample["knowledge"]
    caption = sample["caption"]
    got = kn.logprob(image, " " + caption, k)  # the text after the prompt, exactly as written
    inputs = image_inputs(kn.loaded, [image], f"{kn.prompt} {caption}")[0]
    tok = kn.loaded.processor.tokenizer
    ids = inputs["input_ids"][0].tolist()
    j = ids.index(tok.convert_tokens_to_ids(k.split()[0]))  # the word's first token, found by id
    with torch.no_grad():
        logits = kn.loaded.model(**inputs).logits[0, j - 1].float()  # the softmax in float32 whatever the dtype
    assert got == pytest.approx(float(torch.log_softmax(logits, -1)[ids[j]]), abs=1e-5)
    with kn.ablate([(0, u) for u in range(kn.loaded.d_ff)]):
        assert kn.logprob(image, " " + caption, k) != pytest.approx(got, abs=1e-4)


def test_bad_arguments_are_one_line(kn, sample):
    with pytest.raises(KneuronsError, match="give exactly one of box"):
        kn.inpaint(sample["record"].path, "bear")
    with pytest.raises(KneuronsError, match=r"image: expected an \(H, W, 3\) uint8 array"):
        kn.caption([np.zeros((4, 4), np.float32)])
    with pytest.raises(KneuronsError, match="does not mention 'giraffe'"):
        kn.find(sample["record"].path, "giraffe", box=[1, 1, 5, 5], caption="a bear on the grass")


def test_the_one_image_example_runs(run_dir, tmp_path):
    config = _config()
    k = config["knowledge"][0]
    cmd = [sys.executable, str(REPO / "examples/one_image.py"), "--model", str(run_dir / "results/model/captioner")]
    cmd += ["--annotations", str(run_dir / "results/synth/annotations/instances_val.json")]
    cmd += ["--images", str(run_dir / "results/synth/val"), "--knowledge", k, "--activation", "q0.95"]
    run = subprocess.run([*cmd, "--out", str(tmp_path)], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "N_k ablated:" in run.stdout and "its control ablated:" in run.stdout
    (png,) = tmp_path.glob(f"{k}_*.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", ["minigpt4", "qwen2_vl", "llava_next"])
def test_the_api_runs_on_other_families(name, tmp_path):
    """Tiny random-weight models (tests/families.py): their captions name nothing, so the caption is given."""
    from .families import FAMILIES, PROMPTS

    torch.manual_seed(0)
    kn = KnowledgeNeurons.load(FAMILIES[name](tmp_path / "model"), prompt=PROMPTS[name], dtype="float32")
    image = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    box = [8, 6, 20, 18]
    # a word the random model's caption of the inpainted image lacks (else: "k still present", as in the workflow)
    (after,) = kn.caption(kn.inpaint(image, "it", box=box))
    k = next(w for w in ("bear", "dog", "cat", "person", "car") if w not in after.split())
    found = kn.find(image, k, box=box, caption=f" a {k} on the grass", settings=Settings("q0.9"))
    p = found.layout.n_tokens
    assert found.original.shape == (kn.loaded.n_layers, p, kn.loaded.d_ff) == found.inpainted_activations.shape
    assert found.token == k and found.sets["ours"]["size"] == len(found.neurons("ours")) > 0
    assert [len(found.sets[m]["neurons"]) for m in ("schwettmann", "pan", "ours_control")] == [len(found.neurons())] * 3
    with kn.ablate(found.neurons()):
        assert isinstance(kn.caption([image], max_new_tokens=4)[0], str)
    assert len(kn.heatmap(found).axes) == 7 + 1 and len(kn.decode(found.neurons()[:2])) == 2


def test_a_finding_reads_well_and_its_sets_are_the_runs_files(run_dir, kn, sample):
    k, rec = sample["knowledge"], sample["record"]
    kinds = (*SET_KINDS, IG_DAI)  # every kind the workflow writes per sample
    files = {
        kind: json.loads((run_dir / f"results/neurons/{kind}/{slug(k)}/{rec.id}.json").read_text()) for kind in kinds
    }
    settings = Settings.of_set(files["ours"])
    found = kn.find(rec.path, k, inpainted=run_dir / sample["inpainted"], image_id=rec.id, settings=settings)
    assert found.sets == files  # json.load's lists, as docs/api.md says
    text = repr(found)
    assert len(text.splitlines()) == 4 + len(kinds) and found.summary() == text
    assert f"{k!r} in image {rec.id}" in text and repr(found.caption) in text and repr(found.inpainted_caption) in text
    for kind in kinds:
        (line,) = [ln for ln in text.splitlines() if ln.split()[0] == kind]
        assert f"{len(files[kind]['neurons'])} neurons" in line
    # one order of "top" neurons: the heatmap's panels follow neurons(); the workflow's figure order is named
    labels = [ax.get_title() for ax in kn.heatmap(found, top=3).axes[2:5]]  # then the colour bar
    assert labels == [f"L{layer} #{unit}" for layer, unit in found.neurons("ours")[:3]]
    by_activation = [ax.get_title() for ax in kn.heatmap(found, top=3, order="activation").axes[2:5]]
    assert by_activation == [f"L{layer} #{unit}" for layer, unit in strongest(files["ours"]["neurons"], found.v_max, 3)]


def test_effect_is_the_workflows_perturbation_beside_its_control(run_dir, kn, sample):
    """kn.effect's rows against the workflow's own lines for this image: the set's ablation and its control's."""
    k, rec = sample["knowledge"], sample["record"]
    ours = json.loads((run_dir / f"results/neurons/ours/{slug(k)}/{rec.id}.json").read_text())
    settings = Settings.of_set(ours)  # the run's thresholds: the run's sets
    found = kn.find(rec.path, k, inpainted=run_dir / sample["inpainted"], image_id=rec.id, settings=settings)
    assert found.sets["ours"] == ours
    effect = kn.effect(found, "ours", "ablation")
    assert list(effect.rows) == ["none", "ours", "ours_control"]
    assert effect.rows["none"][0] == kn.caption(rec.path)[0]
    clean = kn.logprob(rec.path, found.caption, k, caption_ids=found.caption_ids)
    assert effect.rows["none"][2] == pytest.approx(clean)
    for kind in ("ours", "ours_control"):
        path = run_dir / f"results/perturb/{kind}/{slug(k)}.jsonl"
        lines = [json.loads(ln) for ln in path.read_text().splitlines()]
        (line,) = [ln for ln in lines if ln.get("set") == rec.id and ln.get("image_id") == rec.id
                   and ln.get("perturbation") == "ablation"]  # fmt: skip
        caption, named, logp = effect.rows[kind]
        assert caption == line["caption"] and named == line["mentions"]
        # the workflow scored this image in a batch of D's images, the API alone: in bfloat16 (the test run's dtype
        # on a CPU with native bfloat16) the two round differently
        assert logp == pytest.approx(line["logp"], abs=1e-3 if kn.loaded.model.dtype == torch.float32 else 0.05)
    assert "ours_control" in repr(effect) and len(repr(effect).splitlines()) == 4
