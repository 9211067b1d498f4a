"""Writes the tiny model's character-level CLIP tokenizer (every text works, offline).

The vocabulary is the 256 byte symbols of CLIP's byte-level BPE, each alone and with the word-end
marker, plus the two special tokens; no merges, so each word becomes its characters.
Run from the repository root: python -m resources.tiny.make_tokenizer
"""

import json
from pathlib import Path

from resources.model_configs.make_clip_tokenizer import bytes_to_unicode


def main() -> None:
    out = Path(__file__).parent / "tokenizer"
    out.mkdir(exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n")
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "tokenizer_class": "CLIPTokenizer",
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
