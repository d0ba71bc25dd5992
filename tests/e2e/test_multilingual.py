"""Multilingual keyword search end to end (tokenizer version 2,
server/tokenizer.h): each case's text is stored as a memory on a real
engramd and SearchMemories finds it by a query written differently (case,
normalisation form, width, script segmentation, inflection); a word the
text does not hold finds nothing.

MULTILINGUAL_CASES is the table, [(label, language, stored_text, query)],
for other tests to reuse (messages search). Every language is "" (English,
the default) for now: CreateMemory does not yet store Memory.language, so
the cases are the ones whose match does not depend on a language's
stemmer or lists (the per-language rules are unit-tested in
tests/unit/test_tokenizer.c)."""
import unittest

from harness import ServerTestCase, uid
from test_memories import Mem

from engram.v1 import memory_pb2 as mp  # noqa: E402

MULTILINGUAL_CASES = [
    ("cyrillic capitals", "", "ЧАЙ с лимоном", "чай"),
    ("chinese word in a sentence", "", "我喜欢喝绿茶", "绿茶"),
    ("NFC stored, NFD searched", "", "un caf\u00e9 noir", "cafe\u0301"),
    ("greek capitals, final sigma", "", "ΟΔΟΣ Αθηνάς", "οδος"),
    ("german sharp s", "", "Die Straße ist lang", "strasse"),
    ("full-width letters", "", "ＴＥＡ time at five", "tea"),
    ("stemmed verb", "", "Bob was running in the park", "run"),
    ("irregular plural", "", "She teaches the children", "child"),
    ("arabic", "", "أحب الشاي الأخضر", "الشاي"),
    ("hindi", "", "मुझे हरी चाय पसंद है", "चाय"),
    ("japanese kana and kanji", "", "私は東京に住んでいます", "東京"),
    ("emoji", "", "tea time 🍵 with friends", "🍵"),
    ("mixed scripts", "", "Meeting 会议 on Пятница with Zoë", "пятница"),
]

# (label, language, stored_text, query): a word the text does not hold.
MULTILINGUAL_MISSES = [
    ("chinese, another tea", "", "我喜欢喝绿茶", "红茶"),
    ("cyrillic, another drink", "", "ЧАЙ с лимоном", "кофе"),
    ("emoji, another cup", "", "tea time 🍵 with friends", "☕"),
    ("greek, another word", "", "ΟΔΟΣ Αθηνάς", "πόλη"),
]

# Stored for every case's user too: found by none of the queries.
DISTRACTOR = "the weather was cloudy all week"


class MultilingualSearchTest(ServerTestCase):

    @classmethod
    def connect(cls):
        super().connect()
        cls.mem = Mem(cls.client)

    def store(self, user, language, text):
        return self.mem.create(user, text, type=mp.MEMORY_TYPE_FACT, language=language).memory

    def found(self, user, language, query):
        r = self.mem.search(user, query, top_k=10, language=language)
        return [x.memory.memory_id for x in r.results]

    def test_cases_found(self):
        for label, language, stored, query in MULTILINGUAL_CASES:
            with self.subTest(label):
                user = uid("u")
                m = self.store(user, language, stored)
                self.store(user, language, DISTRACTOR)
                self.assertEqual(self.found(user, language, query), [m.memory_id])
                # the text as stored finds itself too
                self.assertEqual(self.found(user, language, stored), [m.memory_id])

    def test_other_words_not_found(self):
        for label, language, stored, query in MULTILINGUAL_MISSES:
            with self.subTest(label):
                user = uid("u")
                self.store(user, language, stored)
                self.store(user, language, DISTRACTOR)
                self.assertEqual(self.found(user, language, query), [])


if __name__ == "__main__":
    unittest.main()
