/* hooks.h - the VerneMQ hooks this plugin records, one line each.
 *
 * X(ID, "name", "roles"): the argument roles, one letter per argument, in
 * VerneMQ's order; the arity is the string's length. Checked against
 * vernemq_dev's *_hook.erl and a real VerneMQ 2.1.2 (see docs/queries.md). The
 * Erlang side declares the same list in vmq_pgevents.app.src; a test
 * compares the two.
 *
 *   P peer {Ip, Port}          S subscriber id {MountPoint, ClientId}
 *   U username                 W password (never read)
 *   C clean session / start    R properties map
 *   O connection options map   Q QoS
 *   T topic (word list)        B payload
 *   N retain flag              L subscription list [{Topic, QoS|SubInfo}]
 *   K topic list or all_topics D dropped message {Topic,QoS,Payload,Props}|error
 *   E drop reason
 */
#ifndef VMQ_PGEV_HOOKS_H
#define VMQ_PGEV_HOOKS_H

#define HOOK_LIST(X)                                        \
    X(AUTH_ON_REGISTER_5, "auth_on_register", "PSUWC")      \
    X(AUTH_ON_REGISTER_6, "auth_on_register", "PSUWCO")     \
    X(AUTH_ON_REGISTER_M5_6, "auth_on_register_m5", "PSUWCR") \
    X(AUTH_ON_REGISTER_M5_7, "auth_on_register_m5", "PSUWCRO") \
    X(ON_AUTH_M5, "on_auth_m5", "USR")                      \
    X(ON_REGISTER, "on_register", "PSU")                    \
    X(ON_REGISTER_M5, "on_register_m5", "PSUR")             \
    X(AUTH_ON_PUBLISH, "auth_on_publish", "USQTBN")         \
    X(AUTH_ON_PUBLISH_M5, "auth_on_publish_m5", "USQTBNR")  \
    X(ON_PUBLISH, "on_publish", "USQTBN")                   \
    X(ON_PUBLISH_M5, "on_publish_m5", "USQTBNR")            \
    X(AUTH_ON_SUBSCRIBE, "auth_on_subscribe", "USL")        \
    X(AUTH_ON_SUBSCRIBE_M5, "auth_on_subscribe_m5", "USLR") \
    X(ON_SUBSCRIBE, "on_subscribe", "USL")                  \
    X(ON_SUBSCRIBE_M5, "on_subscribe_m5", "USLR")           \
    X(ON_UNSUBSCRIBE, "on_unsubscribe", "USK")              \
    X(ON_UNSUBSCRIBE_M5, "on_unsubscribe_m5", "USKR")       \
    X(ON_TOPIC_UNSUBSCRIBED, "on_topic_unsubscribed", "SK") \
    X(ON_DELIVER_6, "on_deliver", "USQTBN")                 \
    X(ON_DELIVER_7, "on_deliver", "USQTBNR")                \
    X(ON_DELIVER_M5_5, "on_deliver_m5", "USTBR")            \
    X(ON_DELIVER_M5_7, "on_deliver_m5", "USQTBNR")          \
    X(ON_OFFLINE_MESSAGE, "on_offline_message", "SQTBN")    \
    X(ON_CLIENT_WAKEUP, "on_client_wakeup", "S")            \
    X(ON_CLIENT_OFFLINE, "on_client_offline", "S")          \
    X(ON_CLIENT_GONE, "on_client_gone", "S")                \
    X(ON_SESSION_EXPIRED, "on_session_expired", "S")        \
    X(ON_MESSAGE_DROP, "on_message_drop", "SDE")

enum hook_id {
#define HOOK_ENUM(id, name, roles) HOOK_##id,
    HOOK_LIST(HOOK_ENUM)
#undef HOOK_ENUM
    HOOK_COUNT
};

/* The plugin's own rows (plugin_rows.h), numbered after the hooks (the
 * ids are in the journal's files: new ones go at the end). They take no
 * arguments; what they say is in extra. */
#define PLUGIN_ROW_LIST(X)                      \
    X(START, "pgevents_start")                  \
    X(STOP, "pgevents_stop")                    \
    X(CRASHED, "pgevents_crashed")              \
    X(DROPPED, "pgevents_dropped")              \
    X(RUNNING, "pgevents_running")

enum plugin_row_id {
    PROW_BEFORE_FIRST = HOOK_COUNT - 1,
#define PROW_ENUM(id, name) PROW_##id,
    PLUGIN_ROW_LIST(PROW_ENUM)
#undef PROW_ENUM
    EVENT_KINDS     /* hooks and plugin rows: the ids an event may have */
};

/* The ids are in the journal's files: a new hook, or plugin rows in
 * another order, would renumber the events of files an earlier version
 * left (its records read as other rows). A new hook needs a new journal
 * format (journal_int.h) first; a new plugin row goes at the end. */
_Static_assert(HOOK_COUNT == 28 && PROW_START == 28 && PROW_STOP == 29 && PROW_CRASHED == 30 &&
                   PROW_DROPPED == 31 && PROW_RUNNING == 32,
               "event ids are in the journal's files");

struct hook_def {
    const char *name;
    const char *roles;
};

/* every event kind: the hooks, then the plugin rows (roles "") */
extern const struct hook_def hook_defs[EVENT_KINDS];

#endif
