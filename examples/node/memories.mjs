// Memory capture + recall: pull facts out of what the user says, store them
// as memories (Engram de-duplicates them), then recall the relevant ones for
// a question. Replace extract() with your model's fact extraction.
//
//   make run                                   # engramd on 127.0.0.1:50051
//   cd examples/node && npm install && node memories.mjs "what does the user drink?"
//
// Environment: ENGRAM_TARGET (default 127.0.0.1:50051), ENGRAM_TOKEN,
// ENGRAM_USER_ID (default "demo-user").
import { Engram, MemoryType, DedupOutcome } from "engram-client";

const engram = new Engram({
  target: process.env.ENGRAM_TARGET ?? "127.0.0.1:50051",
  token: process.env.ENGRAM_TOKEN,
});
const userId = process.env.ENGRAM_USER_ID ?? "demo-user";

const conversation = [
  "I really like green tea in the morning.",
  "My sister Alice lives in Lisbon.",
  "I really like green tea in the morning.", // said twice: stored once
  "I am training for a marathon in April.",
];

// A stand-in for an LLM: "I like X" is a preference, "My ..." a person, the rest facts.
function extract(utterance) {
  const text = utterance.replace(/^I (really )?like /, "The user likes ").replace(/^I am /, "The user is ")
    .replace(/^My /, "The user's ");
  const type = /like|love|prefer/.test(utterance) ? MemoryType.PREFERENCE
    : /^My /.test(utterance) ? MemoryType.PERSON : MemoryType.FACT;
  return { text, type, importance: type === MemoryType.PREFERENCE ? 0.7 : 0.5 };
}

for (const said of conversation) {
  const m = extract(said);
  const r = await engram.memories.create({ memory: { userId, ...m, agentId: "memories-example" } });
  console.log(`${DedupOutcome[r.outcome].padEnd(9)} ${r.memory?.memoryId} ${m.text}`);
}

const question = process.argv[2] ?? "what does the user drink in the morning?";
const found = await engram.memories.search({ userId, query: question, topK: 3 });
console.log(`recall: ${question}`);
for (const r of found.results) {
  console.log(`  ${r.score.toFixed(3)} ${r.memory?.text}`);
}
engram.close();
