/*
 * The limits of engram.v1.StoreService (server/svc_store.c); the request
 * wire check (server/validate.c) bounds repeated fields with them before
 * anything is unpacked. Namespace and key sizes: storage/store_items.h.
 */
#ifndef EG_SERVER_STORE_SVC_H
#define EG_SERVER_STORE_SVC_H

/* An item's value_json (and a search's filter_json): bytes and top-level
 * pairs (each pair is a blind-index hash in the record). */
#define EG_STORE_VALUE_MAX (1024 * 1024)
#define EG_STORE_PAIRS_MAX 256
/* The longest TTL: 100 years, so now + ttl stays far inside int64 us. */
#define EG_STORE_TTL_MAX_S (100LL * 365 * 86400)
/* SearchItems page. */
#define EG_SEARCH_ITEMS_LIMIT_DEFAULT 10
#define EG_SEARCH_ITEMS_LIMIT_MAX 1000
#define EG_SEARCH_ITEMS_OFFSET_MAX 10000
/* ListNamespaces page and conditions. */
#define EG_LIST_NS_LIMIT_DEFAULT 100
#define EG_LIST_NS_LIMIT_MAX 1000
#define EG_LIST_NS_OFFSET_MAX 10000
#define EG_LIST_NS_MATCH_MAX 16
/* Items one RefreshItems names. */
#define EG_REFRESH_ITEMS_MAX 1000

#endif
