"""The proxy tokenizer: a stock CLIPTokenizer in which every caption word is exactly one token."""

from engine.proxy.styles import CONTENTS, STYLES, caption
from engine.proxy.tokenizer import caption_words, load_tokenizer, tokenizer_dir, write_tokenizer_files


def test_every_caption_word_is_one_token():
    tokenizer = load_tokenizer()
    for word in caption_words():
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1, (word, tokenizer.convert_ids_to_tokens(ids))
        assert tokenizer.convert_ids_to_tokens(ids) == [word + "</w>"]


def test_a_caption_is_one_token_per_word_inside_the_model_length():
    tokenizer = load_tokenizer()
    for style in STYLES:
        for content in CONTENTS:
            text = caption(style, content)
            ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length).input_ids
            assert len(ids) == tokenizer.model_max_length
            body = ids[1 : 1 + len(text.split())]
            assert ids[0] == tokenizer.bos_token_id and ids[1 + len(body)] == tokenizer.eos_token_id
            assert tokenizer.decode(body).strip() == text


def test_style_names_get_distinct_tokens():
    tokenizer = load_tokenizer()
    ids = {tokenizer(s, add_special_tokens=False).input_ids[0] for s in STYLES}
    assert len(ids) == len(STYLES)


def test_unknown_words_are_spelled_not_dropped():
    tokenizer = load_tokenizer()
    ids = tokenizer("zebra", add_special_tokens=False).input_ids
    assert len(ids) > 1 and tokenizer.unk_token_id not in ids


def test_shipped_files_match_the_generator(tmp_path):
    # a caption word added to styles.py without regenerating the files would silently split into characters
    write_tokenizer_files(tmp_path)
    for name in ("vocab.json", "merges.txt"):
        assert (tmp_path / name).read_text() == (tokenizer_dir() / name).read_text(), name
