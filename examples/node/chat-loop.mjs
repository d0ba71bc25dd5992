// A chat loop that keeps its context small with rolling summaries.
//
// Each turn: append the user's message, ask Engram for the context (the
// summary plus the newest messages after it), answer from that context,
// append the answer. When Engram says a summary is due (summary_due), fold
// the messages so far into the summary. Replace reply() and summarize() with
// calls to your model.
//
//   make run                                   # engramd on 127.0.0.1:50051
//   cd examples/node && npm install && node chat-loop.mjs < questions.txt
//
// Environment: ENGRAM_TARGET (default 127.0.0.1:50051), ENGRAM_TOKEN,
// ENGRAM_USER_ID (default "demo-user"). One line of stdin = one user turn.
import { createInterface } from "node:readline";
import { Engram, Role } from "engram-client";

const engram = new Engram({
  target: process.env.ENGRAM_TARGET ?? "127.0.0.1:50051",
  token: process.env.ENGRAM_TOKEN,
});
const userId = process.env.ENGRAM_USER_ID ?? "demo-user";

// Stand-ins for an LLM.
function reply(context, question) {
  const seen = context.messages.length + (context.summary ? " + a summary" : "");
  return `(${seen} messages of context) You said: ${question}`;
}
function summarize(previous, messages) {
  const lines = messages.map((m) => `${Role[m.role].toLowerCase()}: ${m.content.slice(0, 40)}`);
  return [previous, ...lines].filter(Boolean).join("\n").slice(-2000);
}

const session = await engram.sessions.create({ userId, agentId: "chat-loop-example" });
// A handle: its reads wait for its own writes, wherever they land.
const chat = engram.session(session.sessionId, { consistency: "session" });
console.log(`session ${session.sessionId}`);

let turns = 0;
for await (const line of createInterface({ input: process.stdin })) {
  const question = line.trim();
  if (!question) continue;
  await chat.append([{ role: Role.USER, content: question }]);
  const context = await chat.context({ maxMessages: 20, maxTokens: 4000 });
  const answer = reply(context, question);
  const { session: after } = await chat.append([{ role: Role.ASSISTANT, content: answer }]);
  console.log(`> ${question}\n< ${answer}`);
  turns++;
  if (after.summaryDue) {
    const ctx = await chat.context({ maxMessages: 1000 });
    const through = ctx.messages.at(-1).seq;
    await chat.updateSummary(summarize(ctx.summary, ctx.messages), through);
    console.log(`summary updated through message ${through}`);
  }
}
const final = await chat.context();
console.log(`done: ${turns} turns, summary covers ${final.summaryThroughSeq} messages, ` +
  `${final.messages.length} messages after it`);
engram.close();
