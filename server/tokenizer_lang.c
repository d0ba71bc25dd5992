/* Per-language word lists of tokenizer version 2 (tokenizer_lang.h). The
 * stop lists are short: the most frequent function words, so that a query
 * and a text meet on their content words. */
#include "server/tokenizer_lang.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define EG_N(a) (sizeof(a) / sizeof((a)[0]))

/* English: version 1's lists, copied rather than shared: tokenizer_v1.c is
 * frozen (it must keep reading what it indexed), while these may change
 * with a new tokenizer version. */
static const char *const eg_en_stop[] = {
    "a",    "an",   "the",  "and",   "or",    "but",  "of",   "to",    "in",   "on",
    "at",   "by",   "for",  "with",  "from",  "as",   "is",   "are",   "was",  "were",
    "be",   "been", "am",   "do",    "does",  "did",  "has",  "have",  "had",  "i",
    "me",   "my",   "we",   "our",   "you",   "your", "he",   "his",   "she",  "her",
    "it",   "its",  "they", "their", "this",  "that", "these", "those", "so",  "very",
    "really", "just", "also", "too", "user", "users"};
static const char *const eg_en_neg[] = {
    "not",    "no",     "never",   "nor",    "none",    "nobody",   "nothing",  "neither",
    "nowhere", "without", "cannot", "cant",  "dont",    "doesnt",   "didnt",    "isnt",
    "arent",  "wasnt",  "werent",  "wont",   "wouldnt", "shouldnt", "couldnt",  "hasnt",
    "havent", "hadnt",  "aint"};

static const char *const eg_de_stop[] = {
    "der",  "die",   "das",  "den",  "dem",  "des",  "ein",  "eine", "einen", "einem",
    "einer", "eines", "und", "oder", "aber", "in",   "im",   "an",   "am",    "auf",
    "zu",   "zum",   "zur",  "von",  "vom",  "mit",  "für",  "bei",  "aus",   "als",
    "ist",  "sind",  "war",  "waren", "sein", "hat", "haben", "ich", "du",    "er",
    "sie",  "es",    "wir",  "ihr",  "mein", "dass", "so",   "auch", "sehr",  "nur"};
static const char *const eg_de_neg[] = {"nicht", "kein",  "keine", "keinen", "keinem",
                                  "keiner", "nie", "niemals", "nichts", "niemand"};

static const char *const eg_fr_stop[] = {
    "le",  "la",   "les", "l",   "un",  "une", "des",  "du",   "de",   "d",
    "et",  "ou",   "mais", "à",  "au",  "aux", "en",   "dans", "sur",  "par",
    "pour", "avec", "est", "sont", "été", "être", "a", "ai",   "ont",  "je",
    "j",   "tu",   "il",   "elle", "nous", "vous", "ils", "elles", "ce", "c",
    "cette", "ces", "que", "qu",  "qui", "se",  "s",    "son",  "sa",   "ses",
    "très", "aussi", "ne", "n"};
/* "ne" is a stop word: "ne ... pas" is one negation, told by "pas". */
static const char *const eg_fr_neg[] = {"pas", "jamais", "aucun", "aucune", "rien", "sans"};

static const char *const eg_es_stop[] = {
    "el",   "la",  "los",  "las",  "un",  "una",  "unos", "unas", "y",    "o",
    "pero", "de",  "del",  "a",    "al",  "en",   "con",  "por",  "para", "es",
    "son",  "era", "fue",  "ser",  "ha",  "han",  "yo",   "tú",   "él",   "ella",
    "nosotros", "ellos", "que", "se", "su", "sus", "lo",  "le",   "muy",  "también"};
static const char *const eg_es_neg[] = {"no", "nunca", "jamás", "ningún", "ninguno", "ninguna",
                                  "nada", "nadie", "sin"};

static const char *const eg_it_stop[] = {
    "il",  "lo",   "la",  "i",   "gli",  "le",   "un",  "uno", "una", "e",
    "o",   "ma",   "di",  "del", "della", "a",   "al",  "alla", "da", "in",
    "nel", "nella", "con", "su",  "per", "è",    "sono", "era", "essere", "ha",
    "hanno", "io", "tu",  "lui", "lei",  "noi",  "voi", "loro", "che", "si",
    "molto", "anche"};
static const char *const eg_it_neg[] = {"non", "mai", "nessuno", "nessuna", "niente", "nulla",
                                  "senza"};

static const char *const eg_pt_stop[] = {
    "o",   "a",   "os",  "as",  "um",  "uma",  "uns", "umas", "e",   "ou",
    "mas", "de",  "do",  "da",  "dos", "das",  "em",  "no",   "na",  "nos",
    "nas", "com", "por", "para", "é",  "são",  "era", "foi",  "ser", "tem",
    "eu",  "tu",  "ele", "ela", "nós", "eles", "elas", "que", "se",  "seu",
    "sua", "muito", "também"};
static const char *const eg_pt_neg[] = {"não", "nunca", "jamais", "nenhum", "nenhuma", "nada",
                                  "ninguém", "sem"};

static const char *const eg_nl_stop[] = {
    "de",  "het", "een", "en",  "of",   "maar", "van",  "in",  "op",  "aan",
    "te",  "met", "voor", "door", "uit", "bij",  "als",  "is",  "zijn", "was",
    "waren", "heeft", "hebben", "ik", "je", "jij", "hij", "zij", "ze",  "wij",
    "we",  "dat", "dit", "die",  "er",  "ook",  "zeer", "heel"};
static const char *const eg_nl_neg[] = {"niet", "geen", "nooit", "niets", "niemand", "zonder"};

static const char *const eg_ru_stop[] = {
    "и",   "в",   "во",  "на",  "с",   "со",  "к",   "ко",  "по",  "о",
    "об",  "из",  "у",   "за",  "от",  "до",  "для", "а",   "но",  "или",
    "что", "это", "как", "так", "он",  "она", "оно", "они", "мы",  "вы",
    "я",   "ты",  "его", "её",  "их",  "был", "была", "было", "были", "быть",
    "же",  "бы",  "ли",  "уже", "очень", "тоже", "также"};
static const char *const eg_ru_neg[] = {"не", "нет", "ни", "никогда", "ничего", "никто", "без"};

/* The elisions of French and Italian, before a vowel or a mute h. */
static const char *const eg_fr_elide[] = {"l", "d", "j", "m", "n", "s", "t", "c", "qu",
                                          "jusqu", "lorsqu", "puisqu", "quoiqu"};
static const char *const eg_it_elide[] = {"l", "d", "c", "s", "m", "t", "v", "un", "dell", "all",
                                          "dall", "nell", "sull", "coll", "quell", "quest", "bell"};

const eg_lang_words eg_lang_table[] = {
    {{"en", "eng"}, eg_en_stop, EG_N(eg_en_stop), eg_en_neg, EG_N(eg_en_neg), 0, 1},
    {{"de", "deu", "ger"}, eg_de_stop, EG_N(eg_de_stop), eg_de_neg, EG_N(eg_de_neg), 0, 0},
    {{"fr", "fra", "fre"}, eg_fr_stop, EG_N(eg_fr_stop), eg_fr_neg, EG_N(eg_fr_neg), 1, 0,
     eg_fr_elide, EG_N(eg_fr_elide)},
    {{"es", "spa"}, eg_es_stop, EG_N(eg_es_stop), eg_es_neg, EG_N(eg_es_neg), 1, 0},
    {{"it", "ita"}, eg_it_stop, EG_N(eg_it_stop), eg_it_neg, EG_N(eg_it_neg), 1, 0,
     eg_it_elide, EG_N(eg_it_elide)},
    {{"pt", "por"}, eg_pt_stop, EG_N(eg_pt_stop), eg_pt_neg, EG_N(eg_pt_neg), 1, 0},
    {{"nl", "nld", "dut"}, eg_nl_stop, EG_N(eg_nl_stop), eg_nl_neg, EG_N(eg_nl_neg), 0, 0},
    {{"ru", "rus"}, eg_ru_stop, EG_N(eg_ru_stop), eg_ru_neg, EG_N(eg_ru_neg), 1, 0},
};
const size_t eg_lang_count = EG_N(eg_lang_table);

/* ---- English ------------------------------------------------------------- */

/* Verbs that mean "like" (flip = 0) or "not like" (flip = 1). */
static const struct {
  const char *stem;
  int flip;
} eg_like_verbs[] = {{"like", 0},    {"love", 0}, {"adore", 0},  {"enjoy", 0},
                     {"dislike", 1}, {"hate", 1}, {"detest", 1}, {"loathe", 1}};

/* Plurals the Snowball English stemmer leaves apart from their singular. */
static const char *const eg_en_plurals[][2] = {
    {"children", "child"}, {"men", "man"},       {"women", "woman"}, {"people", "person"},
    {"mice", "mouse"},     {"lice", "louse"},    {"feet", "foot"},   {"teeth", "tooth"},
    {"geese", "goose"},    {"oxen", "ox"},       {"dice", "die"},    {"knives", "knife"},
    {"wives", "wife"},     {"wolves", "wolf"},
    {"halves", "half"},    {"shelves", "shelf"}, {"calves", "calf"}, {"loaves", "loaf"},
    {"thieves", "thief"},  {"criteria", "criterion"}, {"phenomena", "phenomenon"},
    {"analyses", "analysis"}, {"crises", "crisis"}, {"theses", "thesis"}};

/* ---- the lookup tables ------------------------------------------------------- */

/* One table per language, open addressing: each word is looked up once,
 * whatever its kind. Sized for the largest (English: ~160 entries). */
#define EG_LANG_SLOTS 512
static eg_lang_entry eg_lang_slots[EG_N(eg_lang_table)][EG_LANG_SLOTS];
/* The like-verbs' forms, made once: stem + "", "s", "d", "ed", "ing", and
 * for a final 'e', stem - "e" + "ing" ("loving"). */
static char eg_like_forms[EG_N(eg_like_verbs)][6][12];

static uint32_t eg_word_hash(const char *w, size_t n) {
  uint32_t h = 2166136261u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)w[i]) * 16777619u;
  return h;
}

/* Adds w unless it is there already (the first kind added wins). */
static void eg_lang_add(eg_lang_entry *t, const char *w, int kind, int flip, const char *to) {
  size_t n = strlen(w);
  for (uint32_t i = eg_word_hash(w, n);; i++) {
    eg_lang_entry *e = &t[i % EG_LANG_SLOTS];
    if (!e->w) {
      *e = (eg_lang_entry){.w = w, .n = n, .kind = kind, .flip = flip, .to = to};
      return;
    }
    if (e->n == n && memcmp(e->w, w, n) == 0) return;
  }
}

static pthread_once_t eg_lang_once = PTHREAD_ONCE_INIT;
static void eg_lang_build(void) {
  static const char *const ends[] = {"", "s", "d", "ed", "ing"};
  for (size_t v = 0; v < EG_N(eg_like_verbs); v++) {
    const char *st = eg_like_verbs[v].stem;
    size_t sl = strlen(st);
    for (size_t e = 0; e < EG_N(ends); e++) snprintf(eg_like_forms[v][e], 12, "%s%s", st, ends[e]);
    if (st[sl - 1] == 'e') snprintf(eg_like_forms[v][5], 12, "%.*sing", (int)(sl - 1), st);
  }
  for (size_t l = 0; l < eg_lang_count; l++) {
    const eg_lang_words *lw = &eg_lang_table[l];
    eg_lang_entry *t = eg_lang_slots[l];
    /* Negation first: a word in both lists negates, as in version 1. */
    for (size_t i = 0; i < lw->n_neg; i++) eg_lang_add(t, lw->neg[i], EG_LW_NEG, 0, NULL);
    for (size_t i = 0; i < lw->n_stop; i++) eg_lang_add(t, lw->stop[i], EG_LW_STOP, 0, NULL);
    if (!lw->english) continue;
    for (size_t v = 0; v < EG_N(eg_like_verbs); v++)
      for (size_t f = 0; f < 6; f++)
        if (eg_like_forms[v][f][0])
          eg_lang_add(t, eg_like_forms[v][f], EG_LW_LIKE, eg_like_verbs[v].flip, NULL);
    for (size_t i = 0; i < EG_N(eg_en_plurals); i++)
      eg_lang_add(t, eg_en_plurals[i][0], EG_LW_PLURAL, 0, eg_en_plurals[i][1]);
  }
}

const eg_lang_words *eg_lang_words_find(const char *code) {
  pthread_once(&eg_lang_once, eg_lang_build);
  for (size_t i = 0; i < eg_lang_count; i++)
    for (size_t j = 0; j < EG_N(eg_lang_table[i].codes) && eg_lang_table[i].codes[j]; j++)
      if (strcmp(eg_lang_table[i].codes[j], code) == 0) return &eg_lang_table[i];
  return NULL;
}

const eg_lang_entry *eg_lang_lookup(const eg_lang_words *lw, const char *w, size_t n) {
  const eg_lang_entry *t = eg_lang_slots[lw - eg_lang_table];
  for (uint32_t i = eg_word_hash(w, n);; i++) {
    const eg_lang_entry *e = &t[i % EG_LANG_SLOTS];
    if (!e->w) return NULL;
    if (e->n == n && memcmp(e->w, w, n) == 0) return e;
  }
}

int eg_lang_elided(const eg_lang_words *lw, const char *w, size_t n) {
  for (size_t i = 0; lw && i < lw->n_elide; i++)
    if (strlen(lw->elide[i]) == n && memcmp(lw->elide[i], w, n) == 0) return 1;
  return 0;
}
