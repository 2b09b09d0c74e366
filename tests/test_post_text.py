"""Text post-processing: English and Chinese spacing, punctuation, trimming, repeats, spelling."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gencraft.post import text as T


def test_language_detection():
    assert T.detect_language("The ship left at dawn.") == "en"
    assert T.detect_language("船在黎明时离开了港口。") == "zh"
    assert T.detect_language("") == "en"


def test_english_spacing_and_punctuation():
    assert T.normalize("hello ,world .This is  it !!!  Yes( really ) .") == "Hello, world. This is it! Yes(really)."
    assert T.normalize("Pi is 3.14 , roughly.") == "Pi is 3.14, roughly."


def test_english_sentences_split_and_capitalized():
    assert T.clean("hello  world ,this is  a test.it works !  thanks") == "Hello world, this is a test. It works!"
    cases = {
        "see e.g. the docs at www.example.com. then go.": "See e.g. the docs at www.example.com. Then go.",
        "mail a.b@example.org. thanks, i.e. ok": "Mail a.b@example.org. Thanks, i.e. ok",
        "open notes.txt now. the u.s. army waits at 5 p.m. today.":
            "Open notes.txt now. The u.s. army waits at 5 p.m. today.",
        "visit https://gencraft.org/a.b?c=d.e now. ok": "Visit https://gencraft.org/a.b?c=d.e now. Ok",
        'Mr. smith paid 3.5 dollars. "go!" she said. i\'m here': 'Mr. smith paid 3.5 dollars. "Go!" she said. I\'m here',
        "wait... what now? yes.\nnext line\n\nnew para.":
            "Wait... what now? Yes.\nNext line\n\nNew para.",
    }
    for raw, want in cases.items():
        assert T.normalize(raw) == want, raw
        assert T.normalize(want) == want  # idempotent


def test_chinese_full_width_and_no_stray_spaces():
    out = T.normalize("我 爱 北京 , 天安门 .  你好吗 ?  好 的!")
    assert out == "我爱北京，天安门。你好吗？好的！"
    assert T.normalize('他说: "走吧" ( 现在 )') == "他说：“走吧”（现在）"
    # Latin words inside Chinese keep their own spaces
    assert T.normalize("我用 Python 写代码.") == "我用 Python 写代码。"


def test_sentence_splitting_and_trimming():
    assert T.split_sentences('He paid 3.5 dollars. "Go!" she said. Done') == [
        "He paid 3.5 dollars.", '"Go!" she said.', "Done"]
    assert T.trim_to_sentence("The cat sat. The dog ran. And then the") == "The cat sat. The dog ran."
    assert T.trim_to_sentence("Only a fragment") == "Only a fragment"
    assert T.trim_to_sentence("我们走了。天很冷。然后他") == "我们走了。天很冷。"


def test_repeated_sentences_removed_keeping_paragraphs():
    text = "The cat sat. The dog ran. The CAT sat!\n\nNew part. The dog ran."
    assert T.remove_repeated_sentences(text) == "The cat sat. The dog ran.\n\nNew part."
    assert T.remove_repeated_sentences("我们走了。天很冷。我们走了。") == "我们走了。天很冷。"


def test_clean_chain():
    assert T.clean("The cat sat .The cat sat. It was late , very late. And") == "The cat sat. It was late, very late."
    assert T.clean("我们走了 , 天很冷 .我们走了 , 天很冷 .然后") == "我们走了，天很冷。"


def test_spell_suggestions_offline():
    sugg = T.spell_suggestions("The quikc brown fox jumpd over Mira and teh dog.", known=["Mira"])
    words = {s.word: s.candidates for s in sugg}
    assert set(words) == {"quikc", "jumpd", "teh"}
    assert "quick" in words["quikc"] and "the" in words["teh"]
    assert T.spell_suggestions("All words here are fine.") == []


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab 我们。，.,!? \n")), max_size=60))
def test_cleaning_is_idempotent_and_never_crashes(s):
    once = T.normalize(s)
    assert T.normalize(once) == once
    out = T.clean(s)
    assert isinstance(out, str)
    assert "  " not in out
