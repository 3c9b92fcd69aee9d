/* plugin_rows.h - the plugin's own rows (hooks.h, PLUGIN_ROW_LIST), queued
 * like a hook's events, with the next seq of the incarnation:
 *
 *   pgevents_start    a start: the version and the settings that change
 *                     what is recorded (never a secret)
 *   pgevents_stop     a clean stop: the last row before it (queue_add_last)
 *   pgevents_crashed  at a start, an earlier incarnation of this node that
 *                     ended without a stop (found by its running marker)
 *   pgevents_dropped  the drops since the last such row (queue.h's ledger):
 *                     their seq range, count, reasons and hooks
 *   pgevents_running  the node still runs, written every every_ms: an
 *                     incarnation is known by one of its rows once
 *                     retention has dropped its start row
 *
 * The running marker: a file "running" in the journal's directory holding
 * the incarnation that runs; written at a start, removed at a clean stop.
 * Knows nothing of erl_nif or libpq. */
#ifndef VMQ_PGEV_PLUGIN_ROWS_H
#define VMQ_PGEV_PLUGIN_ROWS_H

#include <stdint.h>

#include "queue.h"

typedef struct prow_settings {
    const char *version;
    uint64_t hooks;                  /* enabled hooks, a bit per hook id */
    const uint8_t *payload_modes;    /* [HOOK_COUNT], enum payload_mode */
    uint64_t payload_max_bytes;
    const char *topic_include, *topic_exclude, *mountpoints, *payload_topics;   /* NULL: unset */
    int peer_mode;                   /* enum peer_mode */
    int journal;                     /* 1: the events are journaled on disk */
} prow_settings_t;

/* 0: queued; else queue_add's result (a counted drop) */
int prow_start(queue_t *q, const prow_settings_t *s);
int prow_stop(queue_t *q);
int prow_crashed(queue_t *q, int64_t incarnation);
/* 0: queued; without room it is not (no number taken, no drop counted) */
int prow_running(queue_t *q, int every_ms);
/* The drops since the last call as one row: 0 when there were none or the
 * row is queued; else the drops are kept for the next call (without room
 * the row takes no number: it is no drop itself). */
int prow_dropped(queue_t *q);

/* The incarnation in dir's running marker; 0: none (or unreadable). */
int64_t prow_marker_read(const char *dir);
/* 0, or -1 (errno) when it cannot be written and synced */
int prow_marker_write(const char *dir, int64_t incarnation);
void prow_marker_remove(const char *dir);

#endif
