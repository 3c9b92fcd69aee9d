-- vmq_pgevents: the events table, one row per recorded VerneMQ hook call.
--
-- The plugin runs this file at every connect when auto_create is on (the
-- default). It is idempotent. It also creates <table>_dead, where rows
-- PostgreSQL refuses are kept with the error. The table name comes from the setting
-- vmq_pgevents.table (default vmq_events), never from text pasted into SQL.
-- A DBA who applies it by hand:
--     psql -d mqtt -f priv/schema.sql                        -- table vmq_events
--     PGOPTIONS='-c vmq_pgevents.table=my_events' psql -d mqtt -f priv/schema.sql
DO $vmq_pgevents$
DECLARE
  t text := coalesce(nullif(current_setting('vmq_pgevents.table', true), ''), 'vmq_events');
BEGIN
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %I (
      node              text        NOT NULL,  -- Erlang node name of the broker
      incarnation       bigint      NOT NULL,  -- when the plugin was loaded (µs since 1970)
      seq               bigint      NOT NULL,  -- per node and incarnation, in hook call order
      ts                timestamptz NOT NULL,  -- broker wall clock at the hook call (µs)
      hook              text        NOT NULL,  -- e.g. on_publish, auth_on_register_m5
      conn_id           bigint,                -- one MQTT connection (see README)
      mountpoint        text,
      client_id         text,
      username          text,
      peer_addr         inet,
      peer_port         integer,
      qos               smallint,
      topic             text,                  -- words joined with '/'
      topics            jsonb,                 -- subscribe / unsubscribe lists
      retain            boolean,
      clean_session     boolean,               -- clean_start for MQTT 5
      payload           bytea,                 -- at most payload_max_bytes
      payload_size      integer,               -- size before truncation
      payload_truncated boolean,
      payload_json      jsonb,                 -- the payload, when it is JSON
      properties        jsonb,                 -- MQTT 5 properties
      reason            text,                  -- on_message_drop reason, all_topics
      extra             jsonb,                 -- connection options, notes
      PRIMARY KEY (node, incarnation, seq)
    )$ddl$, t);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (client_id, incarnation, seq)',
                 t || '_client_idx', t);
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING brin (ts)',
                 t || '_ts_idx', t);
  -- rows PostgreSQL refused for their data (e.g. a CHECK a DBA added):
  -- the same columns without constraints or indexes, plus the error
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE %I INCLUDING DEFAULTS, '
                 'dead_error text, dead_sqlstate text, dead_at timestamptz NOT NULL DEFAULT now())',
                 t || '_dead', t);
END
$vmq_pgevents$;
