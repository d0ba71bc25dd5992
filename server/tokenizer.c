/* The tokenizer (tokenizer.h): version 2 on ICU (normalisation, word
 * breaks) and Snowball (stemmers); version 1 in tokenizer_v1.c. */
#include "server/tokenizer.h"

#include <errno.h>
#include <libstemmer.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unicode/ubrk.h>
#include <unicode/uchar.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>
#include <unicode/utf8.h>

#include "server/tokenizer_lang.h"

static int eg_alnum_run(const char *p, size_t n, int digits_too) {
  if (n < 1 || n > 8) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = p[i];
    int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alpha && !(digits_too && c >= '0' && c <= '9')) return 0;
  }
  return 1;
}

int eg_lang_check(const char *lang) {
  size_t len = strlen(lang);
  if (len == 0) return 0;
  if (len > EG_LANG_MAX) return -1;
  const char *p = lang;
  for (int first = 1;; first = 0) {
    const char *dash = memchr(p, '-', (size_t)(lang + len - p));
    size_t n = dash ? (size_t)(dash - p) : (size_t)(lang + len - p);
    if (first ? (n < 2 || !eg_alnum_run(p, n, 0)) : !eg_alnum_run(p, n, 1)) return -1;
    if (!dash) return 0;
    p = dash + 1;
  }
}

/* ---- per-thread state ------------------------------------------------------ */

/* Languages whose stemmer a thread keeps; the least recently used goes. */
#define EG_STEMMERS_MAX 8

/* One language as a thread has resolved it: its stemmer (NULL: Snowball
 * has none) and lists (NULL: none). */
struct eg_lang_slot {
  char code[4]; /* the lower-case primary subtag, 2 or 3 letters; "" unused */
  struct sb_stemmer *stemmer;
  const eg_lang_words *words;
  uint64_t used;
};

struct eg_tok_state {
  UBreakIterator *brk;
  UChar *src, *norm; /* the text as UTF-16, then normalised */
  int32_t src_cap, norm_cap;
  struct eg_lang_slot slots[EG_STEMMERS_MAX];
  uint64_t clock;
};

static pthread_key_t eg_tok_key;
static pthread_once_t eg_tok_once = PTHREAD_ONCE_INIT;
static int eg_tok_key_ok;

static void eg_tok_free(void *p) {
  struct eg_tok_state *s = p;
  if (!s) return;
  if (s->brk) ubrk_close(s->brk);
  for (size_t i = 0; i < EG_STEMMERS_MAX; i++) sb_stemmer_delete(s->slots[i].stemmer);
  free(s->src);
  free(s->norm);
  free(s);
}

static void eg_tok_key_make(void) { eg_tok_key_ok = pthread_key_create(&eg_tok_key, eg_tok_free) == 0; }

static struct eg_tok_state *eg_tok_state(void) {
  pthread_once(&eg_tok_once, eg_tok_key_make);
  if (!eg_tok_key_ok) return NULL;
  struct eg_tok_state *s = pthread_getspecific(eg_tok_key);
  if (s) return s;
  if (!(s = calloc(1, sizeof *s))) return NULL;
  UErrorCode st = U_ZERO_ERROR;
  /* The root locale: the same rules whatever the process's locale. */
  s->brk = ubrk_open(UBRK_WORD, "", NULL, 0, &st);
  if (U_FAILURE(st) || pthread_setspecific(eg_tok_key, s) != 0) {
    eg_tok_free(s);
    return NULL;
  }
  return s;
}

void eg_tokenizer_thread_end(void) {
  pthread_once(&eg_tok_once, eg_tok_key_make);
  if (!eg_tok_key_ok) return;
  eg_tok_free(pthread_getspecific(eg_tok_key));
  pthread_setspecific(eg_tok_key, NULL);
}

/* The slot of lang's primary subtag, made (and the least recently used
 * one dropped) if needed. NULL when out of memory. */
static struct eg_lang_slot *eg_lang_slot_get(struct eg_tok_state *s, const char *lang) {
  /* "-": a primary subtag that is no ISO 639 code ("english", "porter"
   * are Snowball names, not languages), so no language. */
  char code[4] = "en";
  if (lang && lang[0]) {
    size_t n = strcspn(lang, "-");
    if (n < 2 || n > 3) n = 0;
    for (size_t i = 0; i < n; i++)
      code[i] = (char)(lang[i] >= 'A' && lang[i] <= 'Z' ? lang[i] + 32 : lang[i]);
    if (n == 0) code[n++] = '-';
    code[n] = '\0';
  }
  struct eg_lang_slot *slot = &s->slots[0];
  for (size_t i = 0; i < EG_STEMMERS_MAX; i++) {
    struct eg_lang_slot *c = &s->slots[i];
    if (strcmp(c->code, code) == 0) {
      c->used = ++s->clock;
      return c;
    }
    if (c->used < slot->used) slot = c;
  }
  sb_stemmer_delete(slot->stemmer);
  memset(slot, 0, sizeof *slot);
  if (code[0] != '-') {
    /* sb_stemmer_new says NULL both for "no such algorithm" and for out of
     * memory; only the second sets errno. */
    errno = 0;
    slot->stemmer = sb_stemmer_new(code, "UTF_8");
    if (!slot->stemmer && errno == ENOMEM) return NULL;
    if (slot->stemmer) slot->words = eg_lang_words_find(code);
  }
  memcpy(slot->code, code, sizeof code);
  slot->used = ++s->clock;
  return slot;
}

/* ---- words ------------------------------------------------------------------ */

/* Where one text's words go. */
struct eg_words_out {
  const struct eg_lang_slot *lang;
  eg_word_fn fn;
  void *arg;
  unsigned negations, like_flips;
  int failed; /* the stemmer ran out of memory */
};

/* Length of the longest prefix of w[0..n) that is at most EG_WORD_MAX bytes
 * and ends at a character boundary. */
static size_t eg_utf8_cut(const char *w, size_t n) {
  if (n <= EG_WORD_MAX) return n;
  n = EG_WORD_MAX;
  while (n > 0 && U8_IS_TRAIL((uint8_t)w[n])) n--;
  return n;
}

/* One normalised word w[0..n) (n <= EG_WORD_MAX) through the language's
 * lists and stemmer, to fn. */
static void eg_word_emit(struct eg_words_out *o, const char *w, size_t n) {
  const eg_lang_entry *e = o->lang->words ? eg_lang_lookup(o->lang->words, w, n) : NULL;
  if (e) {
    switch (e->kind) {
      case EG_LW_NEG:
        o->negations++;
        return;
      case EG_LW_STOP:
        return;
      case EG_LW_LIKE:
        o->like_flips += (unsigned)e->flip;
        if (o->fn) o->fn(o->arg, "like", 4);
        return;
      case EG_LW_PLURAL:
        w = e->to;
        n = strlen(w);
        break;
    }
  }
  if (o->lang->stemmer) {
    const sb_symbol *st = sb_stemmer_stem(o->lang->stemmer, (const sb_symbol *)w, (int)n);
    if (!st) {
      o->failed = 1;
      return;
    }
    w = (const char *)st;
    n = eg_utf8_cut(w, (size_t)sb_stemmer_length(o->lang->stemmer));
  }
  if (n && o->fn) o->fn(o->arg, w, n);
}

/* Apostrophes inside a word ("don't", "don’t") are dropped. */
static int eg_is_apostrophe(UChar32 c) { return c == 0x27 || c == 0x2018 || c == 0x2019; }

/* The segment t[0..n) as UTF-8, apostrophes dropped, cut at EG_WORD_MAX
 * bytes, to eg_word_emit. */
static void eg_segment_emit(struct eg_words_out *o, const UChar *t, int32_t n) {
  char w[EG_WORD_MAX];
  size_t len = 0;
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U16_NEXT(t, i, n, c);
    if (eg_is_apostrophe(c)) continue;
    if (len + (size_t)U8_LENGTH(c) > EG_WORD_MAX) break;
    U8_APPEND_UNSAFE(w, len, c);
  }
  if (len) eg_word_emit(o, w, len);
}

/* 1 if t[0..n) holds an emoji (a segment ICU gives no word status). */
static int eg_has_emoji(const UChar *t, int32_t n) {
  for (int32_t i = 0; i < n;) {
    UChar32 c;
    U16_NEXT(t, i, n, c);
    /* Below U+00A9 (the first one) none is. */
    if (c >= 0xA9 && u_hasBinaryProperty(c, UCHAR_EXTENDED_PICTOGRAPHIC)) return 1;
  }
  return 0;
}

/* Grows *buf to hold need units. A buffer past EG_TOK_KEEP units is freed
 * after the call (eg_tok_trim): one long text does not pin its size on the
 * thread for good. */
#define EG_TOK_KEEP 65536
static int eg_buf_grow(UChar **buf, int32_t *cap, int32_t need) {
  if (need <= *cap) return 0;
  int32_t c = need < 1024 ? 1024 : need;
  UChar *b = realloc(*buf, (size_t)c * sizeof *b);
  if (!b) return -1;
  *buf = b;
  *cap = c;
  return 0;
}

static void eg_tok_trim(struct eg_tok_state *s) {
  if (s->src_cap > EG_TOK_KEEP) free(s->src), s->src = NULL, s->src_cap = 0;
  if (s->norm_cap > EG_TOK_KEEP) free(s->norm), s->norm = NULL, s->norm_cap = 0;
}

/* Version 2 through ICU: normalise the whole text, then break it. */
static int eg_words_icu(struct eg_tok_state *s, struct eg_words_out *o, const char *text,
                        size_t len) {
  if (len > INT32_MAX / 4) return -1; /* ICU lengths are int32_t */
  UErrorCode st = U_ZERO_ERROR;
  int32_t n = 0;
  if (eg_buf_grow(&s->src, &s->src_cap, (int32_t)len + 1) < 0) return -1;
  /* U+FFFD for an invalid sequence: not a word character, so it separates. */
  u_strFromUTF8WithSub(s->src, s->src_cap, &n, text, (int32_t)len, 0xFFFD, NULL, &st);
  if (U_FAILURE(st)) return -1;
  const UNormalizer2 *nfkc = unorm2_getNFKCCasefoldInstance(&st);
  if (U_FAILURE(st)) return -1;
  const UChar *t = s->src;
  int32_t m = n;
  if (unorm2_spanQuickCheckYes(nfkc, s->src, n, &st) < n) {
    if (eg_buf_grow(&s->norm, &s->norm_cap, n + n / 4 + 16) < 0) return -1;
    m = unorm2_normalize(nfkc, s->src, n, s->norm, s->norm_cap, &st);
    if (st == U_BUFFER_OVERFLOW_ERROR) {
      st = U_ZERO_ERROR;
      if (eg_buf_grow(&s->norm, &s->norm_cap, m) < 0) return -1;
      m = unorm2_normalize(nfkc, s->src, n, s->norm, s->norm_cap, &st);
    }
    t = s->norm;
  }
  if (U_FAILURE(st)) return -1;
  ubrk_setText(s->brk, t, m, &st);
  if (U_FAILURE(st)) return -1;
  int32_t start = ubrk_first(s->brk);
  for (int32_t end; (end = ubrk_next(s->brk)) != UBRK_DONE; start = end) {
    int32_t rs = ubrk_getRuleStatus(s->brk);
    /* Letters, numbers, kana, ideographs: [UBRK_WORD_NUMBER, IDEO_LIMIT). */
    if ((rs >= UBRK_WORD_NUMBER && rs < UBRK_WORD_IDEO_LIMIT) || eg_has_emoji(t + start, end - start))
      eg_segment_emit(o, t + start, end - start);
  }
  /* The iterator keeps no pointer into a buffer that may be freed. */
  ubrk_setText(s->brk, NULL, 0, &st);
  return 0;
}

int eg_text_words(unsigned version, const char *lang, const char *text, size_t len,
                  eg_word_fn fn, void *arg) {
  if (version == EG_TOKENIZER_V1) return eg_text_words_v1(text, len, fn, arg);
  if (version != EG_TOKENIZER_VERSION) return -1;
  struct eg_tok_state *s = eg_tok_state();
  if (!s) return -1;
  struct eg_words_out o = {.fn = fn, .arg = arg};
  if (!(o.lang = eg_lang_slot_get(s, lang))) return -1;
  int r = eg_words_icu(s, &o, text, len);
  eg_tok_trim(s);
  if (r < 0 || o.failed) return -1;
  int negated = o.lang->words && o.lang->words->concord ? o.negations > 0 : (int)(o.negations & 1);
  return negated ^ (int)(o.like_flips & 1);
}
