/* atoms.h - every atom the NIF uses, made once in load (nif.c).
 * X(name): the C member am_name for the atom 'name'. */
#ifndef VMQ_PGEV_ATOMS_H
#define VMQ_PGEV_ATOMS_H

#include <erl_nif.h>

#define ATOM_LIST(X)                                                        \
    X(ok) X(error) X(true) X(false) X(undefined) X(empty) X(all_topics)     \
    X(all) X(unknown_hook) X(not_a_list) X(queue_full) X(no_memory)         \
    X(too_large)                                                            \
    X(disabled) X(already_started) X(not_started) X(badconfig)              \
    X(vmq_pgevents_log) X(info) X(warning)                                  \
    X(p_user_property) X(p_authentication_data) X(p_response_topic)         \
    X(dsn) X(table) X(schema_sql) X(node) X(batch_size)                     \
    X(flush_interval_ms) X(queue_max_events) X(queue_max_bytes)             \
    X(payload_max_bytes) X(payload_json_max_bytes) X(hooks)                 \
    X(backoff_min_ms) X(backoff_max_ms)                                     \
    X(state) X(starting) X(connected) X(disconnected) X(stopped)            \
    X(queued) X(queued_bytes) X(queue_peak) X(queue_peak_bytes) X(last_seq) \
    X(written) X(batches) X(prefetched) X(dead_lettered) X(reconnects) X(dropped)         \
    X(discarded_at_stop) X(write_errors) X(inflight) X(pending)             \
    X(dropped_after_stop)                                                   \
    X(last_write_us) X(last_error) X(dsn_masked) X(incarnation)             \
    X(recorded) X(malformed) X(rejected) X(per_hook) X(filtered)            \
    X(recording) X(payload_mode) X(payload_modes) X(none) X(truncated)      \
    X(full) X(topic_include) X(topic_exclude) X(mountpoints) X(oldest_age_us)  \
    X(last_batch_us) X(dead_letter_lost) X(spool_dir) X(spool_max_bytes)     \
    X(spooled) X(spool_bytes) X(spooled_at_stop) X(spool_corrupt)          \
    X(listener_addr) X(spool_error) X(pg_timeout_ms) X(journal_sync_ms) X(journal_memory_bytes)         \
    X(journal) X(journal_bytes) X(journal_segments) X(journal_sync_age_us) X(journal_memory_error) X(journal_disk_segments)  \
    X(journal_error) X(journal_no_room) X(partition) X(distribute) X(retention_s)          \
    X(partitions_created) X(partitions_dropped) X(partitions_checked_us)  \
    X(compress_after_s) X(compress_every_ms) X(running_row_every_ms) X(partitions_compressed)     \
    X(compress_failures) X(compress_refused) X(compress_error)             \
    X(payload_topics) X(peer_addr) X(network)

typedef struct atoms {
#define ATOM_MEMBER(n) ERL_NIF_TERM am_##n;
    ATOM_LIST(ATOM_MEMBER)
#undef ATOM_MEMBER
} atoms_t;

#endif
