-- vmq_pgevents: the events table, one row per recorded VerneMQ hook call.
--
-- The plugin runs this file at every connect when auto_create is on (the
-- default). It is idempotent. It also creates <table>_dead, where rows
-- PostgreSQL refuses are kept with the error. The table name comes from the setting
-- vmq_pgevents.table (default vmq_events), never from text pasted into SQL.
-- A DBA who applies it by hand:
--     psql -d mqtt -f priv/schema.sql                        -- table vmq_events
--     PGOPTIONS='-c vmq_pgevents.table=my_events -c vmq_pgevents.partition=hour' psql -d mqtt -f priv/schema.sql
--
-- vmq_pgevents.partition: day (the default), hour, or none (one plain
-- table). Partitioned, the table is split on ts into one partition per
-- UTC day (hour), named <table>_pYYYYMMDD (_pYYYYMMDDHH); the function
-- vmq_pgevents_partitions below makes them ahead of time and drops the
-- ones past the retention. The plugin calls it (auto_create on); a DBA
-- who manages the schema calls it from cron / pg_cron as the table's owner.

-- Makes the partitions of tbl from the period of `lo` (default: of `at`)
-- through `ahead` periods after `at` (and through `hi`), and drops those
-- that ended keep_seconds or more before `at` (0: none). Returns how many
-- it made and the names it dropped. Never touches a plain table.
CREATE OR REPLACE FUNCTION vmq_pgevents_partitions(
    tbl text, period text, ahead integer, keep_seconds bigint,
    at timestamptz DEFAULT now(), lo timestamptz DEFAULT NULL, hi timestamptz DEFAULT NULL)
RETURNS TABLE (created integer, dropped text[]) LANGUAGE plpgsql AS $f$
DECLARE
  step interval := CASE period WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END;
  fmt text := CASE period WHEN 'hour' THEN 'YYYYMMDDHH24' ELSE 'YYYYMMDD' END;
  unit text := CASE period WHEN 'hour' THEN 'hour' ELSE 'day' END;
  p timestamptz;
  last timestamptz;
  name text;
  r record;
BEGIN
  created := 0;
  dropped := '{}';
  IF period NOT IN ('day', 'hour') THEN
    RAISE EXCEPTION 'vmq_pgevents_partitions: period must be day or hour, not %', period;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(quote_ident(tbl))) THEN
    RETURN NEXT;   -- a plain table (partition = none), or none at all
    RETURN;
  END IF;
  p := date_trunc(unit, least(coalesce(lo, at), at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  last := greatest(coalesce(hi, at), at + ahead * step);
  WHILE p <= last LOOP
    name := tbl || '_p' || to_char(p AT TIME ZONE 'UTC', fmt);
    IF to_regclass(quote_ident(name)) IS NULL
       AND (keep_seconds <= 0 OR p + step > at - make_interval(secs => keep_seconds)) THEN
      EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                     name, tbl, p, p + step);
      created := created + 1;
    END IF;
    p := p + step;
  END LOOP;
  IF keep_seconds > 0 THEN
    FOR r IN SELECT c.relname::text AS relname,
                    substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \(''([^'']*)''\)') AS upper
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = to_regclass(quote_ident(tbl)) ORDER BY 1 LOOP
      IF r.upper IS NOT NULL AND r.upper::timestamptz <= at - make_interval(secs => keep_seconds) THEN
        EXECUTE format('DROP TABLE %I', r.relname);
        dropped := dropped || r.relname;
      END IF;
    END LOOP;
  END IF;
  RETURN NEXT;
END
$f$;

DO $vmq_pgevents$
DECLARE
  t text := coalesce(nullif(current_setting('vmq_pgevents.table', true), ''), 'vmq_events');
  part text := coalesce(nullif(current_setting('vmq_pgevents.partition', true), ''), 'day');
  kind "char";
BEGIN
  IF part NOT IN ('day', 'hour', 'none') THEN
    RAISE EXCEPTION 'vmq_pgevents.partition must be day, hour or none, not %', part;
  END IF;
  IF part <> 'none' AND octet_length(t) > 51 THEN
    RAISE EXCEPTION 'vmq_pgevents: with partition = % the table name may have at most 51 bytes (its partitions are <table>_pYYYYMMDDHH)', part;
  END IF;
  SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = to_regclass(quote_ident(t));
  IF kind = 'r' AND part <> 'none' THEN
    RAISE EXCEPTION USING MESSAGE = format(
      'vmq_pgevents: %I is a plain table (an earlier version, or partition = none) and partition = %s '
      'needs a partitioned one; nothing is written until then, events wait in the journal. Either set '
      'partition = none, or rename it (ALTER TABLE %I RENAME TO %I; ALTER TABLE %I RENAME TO %I;) and '
      'the plugin makes the partitioned table at its next connect; then move the rows: README, '
      '"Keeping months of data"', t, part, t, t || '_old', t || '_dead', t || '_old_dead');
  END IF;
  -- partitioned, the key gains ts (a partitioned table's key must hold its
  -- partition key; an event's ts never changes, so a replay still collides
  -- with the row it repeats)
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
      PRIMARY KEY (node, incarnation, seq%s)
    )%s$ddl$, t,
    CASE WHEN part = 'none' THEN '' ELSE ', ts' END,
    CASE WHEN part = 'none' THEN '' ELSE ' PARTITION BY RANGE (ts)' END);
  IF part <> 'none' THEN
    PERFORM vmq_pgevents_partitions(t, part, 2, 0);
  END IF;
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
