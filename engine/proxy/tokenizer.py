"""The proxy model's tokenizer: a real CLIPTokenizer over a vocabulary the project writes itself.

Real CLIP has a 49,408-entry vocabulary; the proxy model only ever reads captions made of about thirty words, so
its vocabulary holds the 512 single-character tokens CLIP needs to spell any text plus one merged token for every
caption word. One token per word keeps the text encoder tiny and makes a style name a single embedding, the way
a rare trigger word ("sks") is in DreamBooth. The merges are learned by ordinary BPE on the word list, so the
stock CLIP tokenizer (any backend) reproduces them without custom code.

Regenerate the files with `python -m engine.proxy.tokenizer --out resources/proxy/tokenizer`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from importlib import resources
from pathlib import Path

from engine.proxy.styles import CONTENTS, STYLES, caption

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# The model reads at most this many tokens; the longest caption is 10 words + BOS/EOS.
MODEL_MAX_LENGTH = 16
# Words that are not in any caption but that evaluation prompts are likely to use.
EXTRA_WORDS = ("an", "the", "picture", "image", "artwork", "by", "artist", "with", "and", "sks")


def caption_words() -> list[str]:
    """Every word that occurs in a training caption or a style prompt, sorted."""
    words = set(EXTRA_WORDS)
    for style in STYLES:
        for content in CONTENTS:
            words.update(caption(style, content).split())
    return sorted(words)


def _bytes_to_unicode() -> dict[int, str]:
    # CLIP's byte-level alphabet: printable bytes map to themselves, the rest to unused code points.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, codes)))


def learn_merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges, most frequent pair first (ties by name), until every word is one symbol."""
    pieces = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in words}
    merges: list[tuple[str, str]] = []
    while True:
        pairs = Counter()
        for symbols in pieces.values():
            pairs.update(zip(symbols, symbols[1:]))
        if not pairs:
            return merges
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        joined = best[0] + best[1]
        for word, symbols in pieces.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(joined)
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            pieces[word] = tuple(out)


def write_tokenizer_files(out_dir: str | Path) -> Path:
    """Write vocab.json, merges.txt and the tokenizer configs that CLIPTokenizer.from_pretrained reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    alphabet = list(_bytes_to_unicode().values())
    merges = learn_merges(caption_words())
    tokens = alphabet + [c + "</w>" for c in alphabet] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    lines = ["#version: 0.2 (Artveil proxy vocabulary, learned from the proxy captions)"]
    lines += [f"{a} {b}" for a, b in merges]
    (out / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return out


def tokenizer_dir() -> Path:
    """The shipped tokenizer folder (resources/proxy/tokenizer)."""
    return Path(str(resources.files("resources") / "proxy" / "tokenizer"))


def load_tokenizer(path: str | Path | None = None):
    """A transformers.CLIPTokenizer from the shipped folder (or path)."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(path or tokenizer_dir()), local_files_only=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="resources/proxy/tokenizer")
    args = parser.parse_args(argv)
    out = write_tokenizer_files(args.out)
    tok = load_tokenizer(out)
    print(f"wrote {out}: {len(tok)} tokens, {len(caption_words())} caption words")


if __name__ == "__main__":
    main()
