#!/usr/bin/env python3
"""A chat loop that keeps its context small with rolling summaries.

Each turn appends the user's message and the assistant's reply, then reads
the context (summary + newest messages) the model would see. When the
server says a summary is due, the loop summarises the messages the summary
does not cover yet and stores it with UpdateSummary.

    python3 examples/python/chat_loop.py            # against `make run`
    ENGRAM_TARGET=host:port ENGRAM_TOKEN=... python3 examples/python/chat_loop.py

The "model" here is a stand-in (it echoes); put your LLM call in reply()
and summarize().
"""
import os
import sys

from engram import Engram

TURNS = int(os.environ.get("CHAT_TURNS", "8"))


def reply(context, text):
    """Your model: the summary and recent messages in, a reply out."""
    return "(%d messages in context) you said: %s" % (len(context.messages), text)


def summarize(previous, messages):
    """Your model again: the old summary plus the messages it does not cover."""
    said = "; ".join(m.content for m in messages if m.role == 1)  # ROLE_USER
    return (previous + " | " if previous else "") + "user said: " + said


def main():
    with Engram(os.environ.get("ENGRAM_TARGET", "127.0.0.1:50051"),
                token=os.environ.get("ENGRAM_TOKEN")) as client:
        created = client.sessions.create_session(session={"user_id": "demo-user",
                                                           "agent_id": "chat-loop"})
        session = client.session(created.session_id)
        for turn in range(TURNS):
            text = "message number %d" % turn
            session.append({"role": "ROLE_USER", "content": text})
            context = session.context(max_messages=20, max_tokens=2000)
            answer = reply(context, text)
            appended = session.append({"role": "ROLE_ASSISTANT", "content": answer})
            print("user: %s\nassistant: %s" % (text, answer))
            if appended.session.summary_due:
                covered = context.summary_through_seq
                last = appended.session.message_count
                fresh = [m for m in session.messages() if covered < m.seq <= last]
                summary = summarize(context.summary, fresh)
                session.update_summary(summary, last, expected_through_seq=covered)
                print("summary through #%d: %s" % (last, summary))
        context = session.context()
        print("final context: summary through #%d, %d messages after it"
              % (context.summary_through_seq, len(context.messages)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
