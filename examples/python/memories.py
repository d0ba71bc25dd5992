#!/usr/bin/env python3
"""Memory capture and recall: facts about a user stored as typed memories
(de-duplicated by the server), recalled with hybrid search (keywords +
embedding + importance + recency).

    python3 examples/python/memories.py             # against `make run`

embed() is a toy (hashed bag of words); use your embedding model.
"""
import hashlib
import math
import os
import sys

from engram import Engram

DIMS = 64


def embed(text):
    """A stand-in embedding: words hashed into DIMS buckets, normalised."""
    v = [0.0] * DIMS
    for word in text.lower().split():
        v[int(hashlib.sha256(word.encode()).hexdigest(), 16) % DIMS] += 1.0
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


FACTS = [
    ("MEMORY_TYPE_PREFERENCE", "prefers green tea in the morning", 0.7),
    ("MEMORY_TYPE_PERSON", "has a sister called Ana who lives in Lisbon", 0.6),
    ("MEMORY_TYPE_EVENT", "is moving to Berlin in March", 0.9),
    ("MEMORY_TYPE_PREFERENCE", "prefers green tea in the morning", 0.5),  # a duplicate
]


def main():
    user = os.environ.get("ENGRAM_USER", "demo-user")
    with Engram(os.environ.get("ENGRAM_TARGET", "127.0.0.1:50051"),
                token=os.environ.get("ENGRAM_TOKEN")) as client:
        for kind, text, importance in FACTS:
            r = client.memories.create_memory(memory={
                "user_id": user, "type": kind, "text": text, "importance": importance,
                "embedding": embed(text)})
            print("capture %-45r -> %s" % (text, r.DESCRIPTOR.fields_by_name["outcome"]
                                             .enum_type.values_by_number[r.outcome].name))
        question = "what does the user drink in the morning"
        found = client.memories.search_memories(user_id=user, query=question,
                                                 embedding=embed(question), top_k=3)
        print("recall %r:" % question)
        for res in found.results:
            print("  %.3f  %s" % (res.score, res.memory.text))
        print("memories stored: %d" % sum(1 for _ in client.memories.list_memories(user_id=user)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
