"""Write the CLIP BPE tokenizer files (vocab.json, merges.txt) that Stable Diffusion uses.

The vocabulary comes from OpenAI's `bpe_simple_vocab_16e6.txt.gz`, shipped inside the
open-clip-torch wheel (open_clip/bpe_simple_vocab_16e6.txt.gz) and the CLIP repository. This
script rebuilds exactly what CLIP's own tokenizer builds from it, so that the model configs in
this folder load a tokenizer offline without any hub download:

    pip download --no-deps open-clip-torch -d clip-bpe
    unzip -j clip-bpe/open_clip_torch-*.whl open_clip/bpe_simple_vocab_16e6.txt.gz -d clip-bpe
    python resources/model_configs/make_clip_tokenizer.py clip-bpe/bpe_simple_vocab_16e6.txt.gz

It writes tokenizer/ into both sd15/ and sd21-base/: the two share the vocabulary but not the
padding token (SD 2.x pads with "!", id 0; SD 1.x with <|endoftext|>, id 49407), and
from_single_file reads the tokenizer from each config folder's own tokenizer/ subfolder.
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
VOCAB_SIZE = 49408
# CLIP keeps the first 49152 - 256 - 2 merge lines after the header: with 256 byte tokens,
# their 256 end-of-word forms and 2 special tokens that makes a vocabulary of 49408.
MERGE_COUNT = 49152 - 256 - 2
PAD_TOKENS = {"sd15": "<|endoftext|>", "sd21-base": "!"}


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible map from bytes to printable characters, in CLIP's order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    codes = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + shift)
            shift += 1
    return dict(zip(printable, (chr(code) for code in codes)))


def build_vocab_and_merges(bpe_gz: Path) -> tuple[dict[str, int], list[str]]:
    lines = gzip.open(bpe_gz).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : MERGE_COUNT + 1]]  # line 0 is a header
    byte_tokens = list(bytes_to_unicode().values())
    tokens = byte_tokens + [token + "</w>" for token in byte_tokens]
    tokens += ["".join(pair) for pair in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    if len(tokens) != VOCAB_SIZE or len(set(tokens)) != VOCAB_SIZE:
        raise SystemExit(f"{bpe_gz} does not look like CLIP's BPE file: {len(tokens)} tokens")
    return {token: index for index, token in enumerate(tokens)}, [" ".join(pair) for pair in merges]


def _special(token: str) -> dict:
    return {"content": token, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad_token: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    # Header line as in the published merges.txt; tokenizers skips lines starting with "#version".
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    special = {
        "bos_token": _special("<|startoftext|>"),
        "eos_token": _special("<|endoftext|>"),
        "unk_token": _special("<|endoftext|>"),
        "pad_token": pad_token if pad_token == "!" else _special(pad_token),
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    config = {
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": 77,
        "tokenizer_class": "CLIPTokenizer",
        **{key: (value["content"] if isinstance(value, dict) else value) for key, value in special.items()},
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bpe_gz", type=Path, help="bpe_simple_vocab_16e6.txt.gz from open-clip-torch")
    parser.add_argument("--root", type=Path, default=HERE, help="folder holding sd15/ and sd21-base/")
    args = parser.parse_args(argv)
    vocab, merges = build_vocab_and_merges(args.bpe_gz)
    for model, pad_token in PAD_TOKENS.items():
        write_tokenizer(args.root / model / "tokenizer", vocab, merges, pad_token)
        print(f"wrote {args.root / model / 'tokenizer'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
