"""The CLIP BPE tokenizer, built offline from the vocabulary file that open_clip ships.

Stable Diffusion's text encoders use OpenAI's CLIP byte-level BPE. transformers'
``CLIPTokenizer`` wants it as ``vocab.json`` + ``merges.txt`` (normally fetched from the
hub); open_clip carries the same merges as ``bpe_simple_vocab_16e6.txt.gz``. The
vocabulary is derived from the merges in a fixed order (256 byte symbols, the same 256
with the end-of-word marker, one token per merge, then the two special tokens), which is
exactly the order of the hub's ``vocab.json`` (49,408 tokens). So a machine without hub
access can still build a tokenizer that gives the real token ids.

``n_merges`` keeps only the first merges: a smaller but still valid BPE tokenizer, for
the tiny random-weight test pipelines (the embedding table shrinks from 49,408 rows).
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

from evaluator.errors import InputError, StateError

# The full CLIP vocabulary: 49,152 - 256 - 2 merges (open_clip's slice) -> 49,408 tokens.
FULL_MERGES = 49152 - 256 - 2
START_TOKEN = "<|startoftext|>"
END_TOKEN = "<|endoftext|>"
# SD 1.x pads with the end token; SD 2.x and SDXL's second encoder pad with "!" (id 0).
PAD_END = END_TOKEN
PAD_BANG = "!"


def bpe_vocab_path() -> Path:
    """Where open_clip keeps its BPE merges (a file inside the installed package)."""
    try:
        import open_clip.tokenizer as oct
    except ImportError as exc:  # pragma: no cover - open_clip is a dependency
        raise StateError(
            "open_clip_torch is not installed, so its BPE vocabulary "
            "(open_clip/bpe_simple_vocab_16e6.txt.gz) is missing; `pip install open_clip_torch`"
        ) from exc
    path = Path(oct.default_bpe())
    if not path.is_file():
        raise FileNotFoundError(f"open_clip's BPE vocabulary {path} is missing; reinstall open_clip_torch")
    return path


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins for bytes, in GPT-2/CLIP order (printable bytes first)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = list(keep)
    extra = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return [chr(c) for c in chars]


@lru_cache(maxsize=4)
def clip_merges(n_merges: int | None = None) -> tuple[str, ...]:
    """The merge rules (``"a b"`` strings), the first ``n_merges`` of them if given."""
    count = FULL_MERGES if n_merges is None else int(n_merges)
    if not 0 <= count <= FULL_MERGES:
        raise InputError(f"n_merges must be in [0, {FULL_MERGES}] but is {n_merges}")
    lines = gzip.open(bpe_vocab_path()).read().decode("utf-8").split("\n")
    merges = tuple(lines[1 : 1 + count])  # line 0 is the '#version' header
    bad = [m for m in merges if len(m.split()) != 2]
    if bad:
        raise InputError(f"{bpe_vocab_path()}: malformed merge line {bad[0]!r}")
    return merges


def clip_vocab(n_merges: int | None = None) -> dict[str, int]:
    """token -> id, in the order of the hub's CLIP ``vocab.json``."""
    symbols = _bytes_to_unicode()
    tokens = symbols + [s + "</w>" for s in symbols]
    tokens += ["".join(m.split()) for m in clip_merges(n_merges)]
    tokens += [START_TOKEN, END_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def write_clip_tokenizer(
    out_dir: str | Path, n_merges: int | None = None, pad_token: str = PAD_END, max_length: int = 77
) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and the configs ``CLIPTokenizer`` loads from.

    Files are written atomically, so concurrent ranks preparing the same folder agree.
    """
    from catalog.atomic import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab = clip_vocab(n_merges)
    atomic_write_text(out / "vocab.json", json.dumps(vocab, ensure_ascii=False))
    atomic_write_text(out / "merges.txt", "#version: 0.2\n" + "\n".join(clip_merges(n_merges)) + "\n")
    special = {
        "bos_token": START_TOKEN,
        "eos_token": END_TOKEN,
        "unk_token": END_TOKEN,
        "pad_token": pad_token,
    }
    atomic_write_text(out / "special_tokens_map.json", json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    atomic_write_text(out / "tokenizer_config.json", json.dumps(config, indent=2))
    return out


def load_clip_tokenizer(
    n_merges: int | None = None, pad_token: str = PAD_END, max_length: int = 77, cache_dir: str | Path | None = None
):
    """A transformers ``CLIPTokenizer`` built from open_clip's merges (no hub)."""
    from transformers import CLIPTokenizer

    folder = Path(cache_dir) if cache_dir else default_cache_dir() / _tokenizer_slug(n_merges, pad_token, max_length)
    if not (folder / "tokenizer_config.json").is_file():
        write_clip_tokenizer(folder, n_merges=n_merges, pad_token=pad_token, max_length=max_length)
    return CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)


def _tokenizer_slug(n_merges: int | None, pad_token: str, max_length: int) -> str:
    pad = "bang" if pad_token == PAD_BANG else "end"
    return f"clip-bpe-{n_merges or 'full'}-{pad}-{max_length}"


def default_cache_dir() -> Path:
    """``$ATELIER_CACHE`` or ``~/.cache/atelier``: derived files (tokenizers, configs)."""
    from evaluator.workspace import settings

    return settings.cache_dir()
