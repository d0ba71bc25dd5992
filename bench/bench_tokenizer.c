/*
 * eg_bench_tokenizer: the cost of tokenizer version 2 (server/tokenizer.h),
 * the work every indexed message and memory pays on its write, in process
 * on one thread.
 *
 *   eg_bench_tokenizer [--kb N]
 *
 * Per text kind (English, German, Russian, Chinese, mixed scripts): N KB
 * (default 2048) of 256-byte messages made from fixed sentences, each
 * message one eg_text_words call with the kind's language; prints the CPU
 * time of this thread per KB (µs/KB), per 256-byte message and the rate
 * (MB/s). Deterministic input; the goal (issue 13) is well under 20 µs per
 * 256-byte English message.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/tokenizer.h"

#define MSG 256

static double cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static const struct {
  const char *name, *lang, *text;
} kinds[] = {
    {"English", "en",
     "The user prefers green tea in the morning and doesn't like coffee after 3pm. "
     "She is running a small bakery in Lisbon, works with children on weekends, "
     "and asked us to remember the meeting on Friday at 10:30 with the accountants. "},
    {"German", "de",
     "Der Benutzer trinkt morgens gern grünen Tee und mag keinen Kaffee nach drei Uhr. "
     "Sie führt eine kleine Bäckerei in der Straße am Fluss und arbeitet am Wochenende "
     "mit Kindern; das Treffen ist am Freitag um halb elf mit den Steuerberatern. "},
    {"Russian", "ru",
     "Пользователь предпочитает зелёный чай по утрам и не любит кофе после трёх часов. "
     "Она управляет маленькой пекарней в Лиссабоне и по выходным работает с детьми. "},
    {"Chinese", "zh",
     "用户早上喜欢喝绿茶，下午三点以后不喝咖啡。她在里斯本经营一家小面包店，周末和孩子们一起工作，"
     "并请我们记住星期五上午十点半与会计师的会议。"},
    {"mixed", "",
     "Meeting 会议 on Friday пятница with 東京チーム 👍🏽 — café, Straße, ＴＥＡ, naïve "
     "résumé; مرحبا بالعالم नमस्ते दुनिया and e.g. 3.14 or http://example.com/a_b. "},
};

static void count_word(void *arg, const char *w, size_t n) {
  (void)w;
  (void)n;
  ++*(size_t *)arg;
}

/* The next MSG-byte message of text (cut at a character boundary), from
 * offset *at, wrapping round. Returns its length. */
static size_t next_message(const char *text, size_t *at, char *out) {
  size_t tl = strlen(text), n = 0;
  while (n < MSG) {
    out[n++] = text[*at];
    *at = (*at + 1) % tl;
  }
  while (n > 0 && ((unsigned char)out[n - 1] & 0xC0) == 0x80) n--; /* a cut sequence */
  if (n > 0 && (unsigned char)out[n - 1] >= 0xC0) n--;
  return n;
}

int main(int argc, char **argv) {
  size_t kb = 2048;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--kb") == 0 && i + 1 < argc && atol(argv[i + 1]) > 0) {
      kb = (size_t)atol(argv[++i]);
    } else {
      fprintf(stderr, "usage: %s [--kb N]\n", argv[0]);
      return 2;
    }
  }
  printf("# tokenizer version %d, %zu KB of %d-byte messages per kind, one thread (CPU time)\n\n",
         EG_TOKENIZER_VERSION, kb, MSG);
  printf("| text | µs/KB | µs per message | MB/s | words/KB |\n| --- | ---: | ---: | ---: | ---: |\n");
  size_t count = kb * 1024 / MSG + 1;
  char(*msgs)[MSG] = malloc(count * MSG);
  size_t *lens = malloc(count * sizeof *lens);
  if (!msgs || !lens) return 1;
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    size_t at = 0, words = 0, bytes = 0;
    /* The messages are cut first, so only the tokenizer is timed. */
    for (size_t i = 0; i < count; i++) {
      lens[i] = next_message(kinds[k].text, &at, msgs[i]);
      bytes += lens[i];
    }
    /* Warm-up: the thread's break iterator and stemmer are made once. */
    if (eg_text_words(EG_TOKENIZER_VERSION, kinds[k].lang, msgs[0], lens[0], NULL, NULL) < 0) {
      fprintf(stderr, "tokenizer failed on %s\n", kinds[k].name);
      return 1;
    }
    double t0 = cpu_us();
    for (size_t i = 0; i < count; i++)
      if (eg_text_words(EG_TOKENIZER_VERSION, kinds[k].lang, msgs[i], lens[i], count_word,
                        &words) < 0) {
        fprintf(stderr, "tokenizer failed on %s\n", kinds[k].name);
        return 1;
      }
    double us = cpu_us() - t0;
    printf("| %s | %.2f | %.2f | %.1f | %.0f |\n", kinds[k].name, us / (bytes / 1024.0),
           us / count, bytes / us, words / (bytes / 1024.0));
  }
  free(msgs);
  free(lens);
  eg_tokenizer_thread_end();
  return 0;
}
