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

-- One run at a time (the brokers of a cluster connect together): the
-- plugin sends this file as one statement string, one transaction, which
-- holds this lock to its end.
DO $lock$ BEGIN PERFORM pg_advisory_xact_lock(hashtext('vmq_pgevents schema.sql')); END $lock$;

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

-- The views and functions people query with psql (README, "Queries"), for
-- the events table tbl: <tbl>_connections, <tbl>_failed_logins(since),
-- <tbl>_timeline(client_id, since), <tbl>_connection(node, incarnation,
-- conn_id), <tbl>_journey(client_id, since, within). Made again only when
-- this file's version of them differs from the one in the database (the
-- version is the comment on <tbl>_connections).
CREATE OR REPLACE FUNCTION vmq_pgevents_views(tbl text) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  -- the views' version and the table they were made for (a table renamed
  -- and made again gets views of its own)
  version constant text := 'vmq_pgevents views 1, table ' || to_regclass(quote_ident(tbl))::oid;
  logins constant text := '(''auth_on_register'', ''auth_on_register_m5'')';
  registers constant text := '(''on_register'', ''on_register_m5'')';
  login_rows constant text := '(''auth_on_register'', ''auth_on_register_m5'', ''on_register'', ''on_register_m5'')';
  publishes constant text := '(''on_publish'', ''on_publish_m5'')';
  delivers constant text := '(''on_deliver'', ''on_deliver_m5'')';
BEGIN
  IF obj_description(to_regclass(quote_ident(tbl || '_connections')), 'pg_class') IS NOT DISTINCT FROM version THEN
    RETURN;
  END IF;

  EXECUTE format('DROP VIEW IF EXISTS %I', tbl || '_connections');
  EXECUTE format('DROP FUNCTION IF EXISTS %I(text, timestamptz), %I(text, bigint, bigint), '
                 '%I(text, timestamptz, interval), %I(timestamptz)',
                 tbl || '_timeline', tbl || '_connection', tbl || '_journey', tbl || '_failed_logins');

  -- one row per MQTT connection (node, incarnation, conn_id); filtered on
  -- client_id it reads that client's rows only (client_ts_idx)
  EXECUTE format($v$
    CREATE VIEW %1$I AS
    SELECT node, incarnation, conn_id, mountpoint, client_id, username, peer_addr, peer_port,
           mqtt_version, clean_session,
           CASE WHEN registered_at IS NOT NULL THEN 'registered'
                WHEN login_at IS NOT NULL THEN 'refused' END AS login,
           connected_at,
           CASE WHEN registered_at IS NOT NULL THEN coalesce(least(offline_at, gone_at), expired_at) END AS ended_at,
           -- taken over: its end came after the next connection's login
           -- (no end at all: the broker stopped, or it is still there)
           CASE WHEN login_at IS NOT NULL AND registered_at IS NULL THEN 'refused'
                WHEN next_login < least(offline_at, gone_at) THEN 'taken over'
                WHEN expired_at IS NOT NULL THEN 'session expired'
                WHEN gone_at IS NOT NULL THEN 'gone'
                WHEN offline_at IS NOT NULL THEN 'offline'
                ELSE 'unknown' END AS ended_how,
           publishes, deliveries, subscribes, events
    FROM (SELECT c.*,
                 -- the login of the next connection of this client that registered
                 min(CASE WHEN registered_at IS NOT NULL THEN coalesce(login_at, registered_at) END)
                   OVER (PARTITION BY mountpoint, client_id ORDER BY connected_at, node, incarnation, conn_id
                         ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS next_login
          FROM (SELECT node, incarnation, conn_id, mountpoint, client_id,
                       min(ts) AS connected_at,
                       min(ts) FILTER (WHERE hook IN %2$s) AS login_at,
                       min(ts) FILTER (WHERE hook IN %3$s) AS registered_at,
                       min(ts) FILTER (WHERE hook = 'on_client_offline') AS offline_at,
                       min(ts) FILTER (WHERE hook = 'on_client_gone') AS gone_at,
                       min(ts) FILTER (WHERE hook = 'on_session_expired') AS expired_at,
                       (array_agg(username ORDER BY seq) FILTER (WHERE hook IN %2$s OR hook IN %3$s))[1] AS username,
                       (array_agg(peer_addr ORDER BY seq) FILTER (WHERE peer_addr IS NOT NULL))[1] AS peer_addr,
                       (array_agg(peer_port ORDER BY seq) FILTER (WHERE peer_port IS NOT NULL))[1] AS peer_port,
                       (array_agg(clean_session ORDER BY seq) FILTER (WHERE hook IN %2$s))[1] AS clean_session,
                       CASE WHEN bool_or(hook IN %2$s OR hook IN %3$s) FILTER (WHERE hook LIKE '%%\_m5') THEN 5::smallint
                            WHEN bool_or(hook IN %2$s OR hook IN %3$s) THEN 3::smallint END AS mqtt_version,
                       count(*) FILTER (WHERE hook IN %4$s) AS publishes,
                       count(*) FILTER (WHERE hook IN %5$s) AS deliveries,
                       count(*) FILTER (WHERE hook IN ('on_subscribe', 'on_subscribe_m5')) AS subscribes,
                       count(*) AS events
                FROM %6$I
                WHERE conn_id IS NOT NULL
                GROUP BY node, incarnation, conn_id, mountpoint, client_id) c) w
    $v$, tbl || '_connections', logins, registers, publishes, delivers, tbl);

  -- CONNECTs refused by the auth chain since `since` (default: the last
  -- day): an auth_on_register* and no on_register* on the same connection
  -- (VerneMQ has no refusal hook). From the login index alone (index-only:
  -- no table pages for the logins that succeeded), then each failed
  -- login's row by client and time
  EXECUTE format($v$
    CREATE FUNCTION %1$I(since timestamptz DEFAULT now() - interval '1 day')
    RETURNS TABLE (ts timestamptz, node text, incarnation bigint, conn_id bigint, mountpoint text,
                   client_id text, username text, peer_addr inet, peer_port integer,
                   clean_session boolean, hook text)
    LANGUAGE sql STABLE AS $b$
    WITH failed AS MATERIALIZED (
      SELECT l.node, l.incarnation, l.conn_id, min(l.ts) AS ts, min(l.client_id) AS client_id
      FROM %2$I l
      WHERE l.hook IN %3$s AND l.ts >= $1
      GROUP BY l.node, l.incarnation, l.conn_id
      HAVING bool_and(l.hook IN %4$s))
    SELECT e.ts, e.node, e.incarnation, e.conn_id, e.mountpoint, e.client_id, e.username,
           e.peer_addr, e.peer_port, e.clean_session, e.hook
    FROM failed f
    CROSS JOIN LATERAL (SELECT * FROM %2$I e
                        WHERE e.client_id = f.client_id AND e.ts = f.ts AND e.conn_id = f.conn_id
                          AND e.node = f.node AND e.incarnation = f.incarnation AND e.hook IN %4$s
                        LIMIT 1) e
    ORDER BY e.ts, e.node, e.incarnation, e.conn_id
    $b$
    $v$, tbl || '_failed_logins', tbl,
    login_rows, logins);

  -- a client's events in order, across its connections and the nodes
  -- (ts, then each node's own order)
  EXECUTE format($v$
    CREATE FUNCTION %1$I(client_id text, since timestamptz DEFAULT '-infinity')
    RETURNS SETOF %2$I LANGUAGE sql STABLE AS
    $b$SELECT * FROM %2$I WHERE client_id = $1 AND ts >= $2 ORDER BY ts, node, incarnation, seq$b$
    $v$, tbl || '_timeline', tbl);

  -- one connection's events in order: its client from its login row
  -- (login_idx), then that client's rows (client_ts_idx)
  EXECUTE format($v$
    CREATE FUNCTION %1$I(node text, incarnation bigint, conn_id bigint)
    RETURNS SETOF %2$I LANGUAGE plpgsql STABLE AS $b$
    #variable_conflict use_column
    DECLARE
      cid text;
      since timestamptz;
    BEGIN
      SELECT client_id, ts INTO cid, since FROM %2$I
      WHERE conn_id = $3 AND node = $1 AND incarnation = $2 AND hook IN %3$s
      ORDER BY seq LIMIT 1;
      IF FOUND THEN
        RETURN QUERY SELECT * FROM %2$I
          WHERE client_id = cid AND ts >= since AND conn_id = $3 AND node = $1 AND incarnation = $2
          ORDER BY seq;
      ELSE   -- no login recorded for it: every row is read
        RETURN QUERY SELECT * FROM %2$I
          WHERE conn_id = $3 AND node = $1 AND incarnation = $2 ORDER BY seq;
      END IF;
    END
    $b$
    $v$, tbl || '_connection', tbl, login_rows);

  -- a client's publishes since `since`, each with the deliveries it
  -- produced within `within`: same mountpoint, topic, payload size and
  -- payload_hash. candidates: how many publishes match that delivery
  -- (more than 1: it cannot be told which of them it was)
  EXECUTE format($v$
    CREATE FUNCTION %1$I(client_id text, since timestamptz DEFAULT now() - interval '1 hour',
                                    within interval DEFAULT interval '1 hour')
    RETURNS TABLE (published_at timestamptz, node text, incarnation bigint, seq bigint, topic text,
                   qos smallint, payload_size integer, delivered_at timestamptz, to_client_id text,
                   to_node text, to_conn_id bigint, latency_ms double precision, candidates bigint)
    LANGUAGE sql STABLE AS $b$
    SELECT p.ts, p.node, p.incarnation, p.seq, p.topic, p.qos, p.payload_size,
           d.ts, d.client_id, d.node, d.conn_id,
           (extract(epoch FROM d.ts - p.ts) * 1000)::double precision,
           d.candidates
    FROM %2$I p
    LEFT JOIN LATERAL (
      SELECT d.ts, d.client_id, d.node, d.conn_id, d.seq,
             (SELECT count(*) FROM %2$I o
              WHERE o.payload_hash = d.payload_hash AND o.ts > d.ts - $3 AND o.ts <= d.ts + interval '1 second'
                AND o.hook IN %4$s AND o.topic = d.topic AND o.payload_size = d.payload_size
                AND o.mountpoint IS NOT DISTINCT FROM d.mountpoint) AS candidates
      FROM %2$I d
      WHERE d.payload_hash = p.payload_hash AND d.ts >= p.ts - interval '1 second' AND d.ts < p.ts + $3
        AND d.hook IN %3$s AND d.topic = p.topic AND d.payload_size = p.payload_size
        AND d.mountpoint IS NOT DISTINCT FROM p.mountpoint) d ON true
    WHERE p.client_id = $1 AND p.ts >= $2 AND p.hook IN %4$s
    ORDER BY p.ts, p.node, p.incarnation, p.seq, d.ts, d.node, d.seq
    $b$
    $v$, tbl || '_journey', tbl, delivers, publishes);

  EXECUTE format('COMMENT ON VIEW %I IS %L', tbl || '_connections', version);
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
  IF octet_length(t) > 49 THEN
    RAISE EXCEPTION 'vmq_pgevents: the table name may have at most 49 bytes (<table>_failed_logins must fit in 63)';
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
      payload_hash      bigint,                -- of the stored payload (message journeys)
      PRIMARY KEY (node, incarnation, seq%s)
    )%s$ddl$, t,
    CASE WHEN part = 'none' THEN '' ELSE ', ts' END,
    CASE WHEN part = 'none' THEN '' ELSE ' PARTITION BY RANGE (ts)' END);
  IF part <> 'none' THEN
    PERFORM vmq_pgevents_partitions(t, part, 2, 0);
  END IF;
  -- a table of an earlier version gains the column (no rewrite: NULL)
  EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS payload_hash bigint', t);
  -- a client's events by time (timeline, connections, one connection)
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (client_id, ts)',
                 t || '_client_ts_idx', t);
  -- time ranges (last hour's counts): a few pages per partition
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I USING brin (ts)',
                 t || '_ts_idx', t);
  -- logins only: a connection's client, failed logins
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (conn_id, incarnation, node) INCLUDE (hook, ts, client_id) '
                 'WHERE hook IN (''auth_on_register'', ''auth_on_register_m5'', ''on_register'', ''on_register_m5'')',
                 t || '_login_idx', t);
  -- publishes and deliveries: the deliveries of a publish (message journey)
  EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (payload_hash, ts) WHERE payload_hash IS NOT NULL '
                 'AND hook IN (''on_publish'', ''on_publish_m5'', ''on_deliver'', ''on_deliver_m5'')',
                 t || '_payload_hash_idx', t);
  -- rows PostgreSQL refused for their data (e.g. a CHECK a DBA added):
  -- the same columns without constraints or indexes, plus the error
  EXECUTE format('CREATE TABLE IF NOT EXISTS %I (LIKE %I INCLUDING DEFAULTS, '
                 'dead_error text, dead_sqlstate text, dead_at timestamptz NOT NULL DEFAULT now())',
                 t || '_dead', t);
  EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS payload_hash bigint', t || '_dead');
  PERFORM vmq_pgevents_views(t);
END
$vmq_pgevents$;
