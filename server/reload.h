/*
 * What SIGHUP reloads (the tokens file, TLS certificates, the keyring):
 * each part registers a hook at start; main runs them in order, on its
 * own thread, when the signal comes. A hook swaps in what it re-read or,
 * if that fails, keeps what it has and logs why: a bad file never takes
 * a running node down.
 */
#ifndef EG_SERVER_RELOAD_H
#define EG_SERVER_RELOAD_H

#define EG_RELOAD_HOOKS_MAX 8

typedef void (*eg_reload_fn)(void *arg);

/* Adds a hook; returns 0, or -1 when EG_RELOAD_HOOKS_MAX are registered.
 * Thread safety: call from main before the signal can come. */
int eg_reload_register(eg_reload_fn fn, void *arg);

/* Runs every hook in the order registered. Thread safety: main only. */
void eg_reload_run(void);

#endif
