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

-- The login index of a partition (hot, or the heap part of a compressed
-- one): each connection's login rows (a connection's client, failed
-- logins), read without the table's pages.
CREATE OR REPLACE FUNCTION vmq_pgevents_login_index(part text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  EXECUTE format('CREATE INDEX ON %I (conn_id, incarnation, node) INCLUDE (hook, ts, client_id) '
                 'WHERE hook IN (''auth_on_register'', ''auth_on_register_m5'', ''on_register'', ''on_register_m5'')',
                 part);
END
$f$;

-- The hooks of the plugin's own rows (docs/queries.md), as an SQL list:
-- a few per start and one every running_row_every_ms
CREATE OR REPLACE FUNCTION vmq_pgevents_plugin_hooks() RETURNS text LANGUAGE sql IMMUTABLE AS $f$
  SELECT '(''pgevents_start'', ''pgevents_stop'', ''pgevents_crashed'', ''pgevents_dropped'', ''pgevents_running'')'
$f$;

-- The plugin's own rows, found by node and incarnation (how a connection
-- ended, <tbl>_completeness). name: the index's (NULL: PostgreSQL's).
DROP FUNCTION IF EXISTS vmq_pgevents_plugin_index(text);
CREATE OR REPLACE FUNCTION vmq_pgevents_plugin_index(part text, name text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $f$
BEGIN
  EXECUTE format('CREATE INDEX %s ON %I (incarnation, node, seq) INCLUDE (hook, ts) WHERE hook IN %s',
                 coalesce(quote_ident(name), ''), part, vmq_pgevents_plugin_hooks());
END
$f$;

-- 0.4.0's plugin index (without pgevents_running) made again, under its
-- own name, on every partition (and a plain table) that has it; a table
-- partitioned before 0.1.0 has it on the table itself, for every partition
-- at once. Each is built beside the old one, which is then dropped: each
-- partition done is locked (its writers and readers wait) until the call
-- commits. The queries of pgevents_running rows use it
-- (docs/upgrading.md). Run by the owner, at a quiet time; returns how
-- many it made.
CREATE OR REPLACE FUNCTION vmq_pgevents_plugin_indexes(tbl text) RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE
  o record;
  n integer := 0;
BEGIN
  FOR o IN SELECT i.indexrelid, ic.relname AS idx, tc.relname AS part
           FROM (SELECT p.relid FROM pg_partition_tree(to_regclass(quote_ident(tbl))) p
                 UNION SELECT to_regclass(quote_ident(tbl))) t   -- (a plain table is no tree)
           JOIN pg_index i ON i.indrelid = t.relid
           JOIN pg_class ic ON ic.oid = i.indexrelid
           JOIN pg_class tc ON tc.oid = i.indrelid
           -- a partition's share of an index of the table goes with it
           WHERE NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
             AND pg_get_indexdef(i.indexrelid) LIKE '%(incarnation, node, seq) INCLUDE (hook, ts) WHERE %'
             AND pg_get_expr(i.indpred, i.indrelid) LIKE '%''pgevents_dropped''%'
             AND pg_get_expr(i.indpred, i.indrelid) NOT LIKE '%''pgevents_running''%'
           ORDER BY tc.relname LOOP
    PERFORM vmq_pgevents_plugin_index(o.part, 'vmq_pgevents_next_' || o.indexrelid);
    EXECUTE format('DROP INDEX %s', o.indexrelid::regclass);
    EXECUTE format('ALTER INDEX %I RENAME TO %I', 'vmq_pgevents_next_' || o.indexrelid, o.idx);
    n := n + 1;
  END LOOP;
  RETURN n;
END
$f$;

-- Whether tbl is a Citus distributed table (distribute = on or auto on a
-- Citus cluster: docs/scale-out.md).
CREATE OR REPLACE FUNCTION vmq_pgevents_distributed(tbl text) RETURNS boolean LANGUAGE plpgsql STABLE AS $f$
DECLARE
  yes boolean;
BEGIN
  IF to_regclass('pg_catalog.pg_dist_partition') IS NULL THEN
    RETURN false;
  END IF;
  EXECUTE 'SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition WHERE logicalrelid = $1 AND partmethod = ''h'')'
    INTO yes USING to_regclass(quote_ident(tbl));
  RETURN yes;
END
$f$;

-- The key of one heap partition: an event is (node, incarnation, seq),
-- unique, so a replay collides with its row. The node is in it as a
-- 4-byte hash of its name (an entry of 20 bytes, not ~45 with the name):
-- two rows collide only with the same incarnation (µs of a plugin start)
-- and seq and a node name of the same hash. Its entries only ever come in
-- ascending order (seq) and rows are never updated: its pages are filled
-- whole. Distributed (dist), client_id is in it too, last: Citus takes a
-- unique index only with the distribution column in it; an event's
-- client_id never changes, so a replay still collides with its row.
CREATE OR REPLACE FUNCTION vmq_pgevents_key_index(part text, dist boolean) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  EXECUTE format('CREATE UNIQUE INDEX ON %I (incarnation, seq, hashtext(node)%s) WITH (fillfactor = 100)',
                 part, CASE WHEN dist THEN ', client_id' ELSE '' END);
END
$f$;

-- The indexes of one heap ("hot") partition. A table partitioned by this
-- version has no index of its own: each partition has its own, so that a
-- compressed partition (vmq_pgevents_compress, below) can do with fewer
-- (PostgreSQL requires an index of a partitioned table on every partition).
-- The planner uses each partition's indexes as it would the table's.
CREATE OR REPLACE FUNCTION vmq_pgevents_hot_indexes(part text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  -- the key: vmq_pgevents_key_index (made first, by vmq_pgevents_partitions)
  -- a client's events (timeline, connections, one connection): client_id
  -- alone, each client's row pointers kept together (B-tree deduplication,
  -- ~8 bytes an event instead of ~40 with ts); a time range within a
  -- client is found with the BRIN index below
  EXECUTE format('CREATE INDEX ON %I (client_id)', part);
  -- the logins (a connection's client, failed logins)
  PERFORM vmq_pgevents_login_index(part);
  -- the plugin's own rows
  PERFORM vmq_pgevents_plugin_index(part);
  -- time ranges (last hour's counts): a few pages
  EXECUTE format('CREATE INDEX ON %I USING brin (ts)', part);
  -- publishes and deliveries: the deliveries of a publish (message journey)
  EXECUTE format('CREATE INDEX ON %I (payload_hash, ts) WHERE payload_hash IS NOT NULL '
                 'AND hook IN (''on_publish'', ''on_publish_m5'', ''on_deliver'', ''on_deliver_m5'')', part);
END
$f$;

-- The columns of tbl for a new heap partition, in the order that wastes
-- no bytes on alignment: the 8-byte ones first (incarnation, seq, ts,
-- conn_id, payload_hash), then the 4-, 2- and 1-byte ones, then those of
-- varying length, each in the table's order; with the table's NOT NULLs,
-- collations and CHECK constraints (ATTACH PARTITION requires them). ~17
-- bytes a row less than the table's own order. A partition's column order
-- is its own: COPY and queries name columns, PostgreSQL maps them.
CREATE OR REPLACE FUNCTION vmq_pgevents_lean_columns(tbl text) RETURNS text LANGUAGE sql STABLE AS $f$
  SELECT string_agg(format('%I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                           CASE WHEN a.attcollation <> 0 THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END,
                           CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END), ', '
                    ORDER BY CASE WHEN t.typlen > 0 THEN -t.typlen ELSE 1 END, a.attnum)
         || coalesce((SELECT string_agg(format(', CONSTRAINT %I %s', c.conname, pg_get_constraintdef(c.oid)), '' ORDER BY c.conname)
                      FROM pg_constraint c
                      WHERE c.conrelid = to_regclass(quote_ident(tbl)) AND c.contype = 'c'), '')
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
  WHERE a.attrelid = to_regclass(quote_ident(tbl)) AND a.attnum > 0 AND NOT a.attisdropped
$f$;

-- The indexes of the heap part of a compressed partition (its login rows)
-- too: a client's rows by time, and the logins (a connection's client,
-- failed logins). The columnar part has none: its rows are stored in client
-- order, and columnar skips the chunks of other clients.
CREATE OR REPLACE FUNCTION vmq_pgevents_cold_indexes(part text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  EXECUTE format('CREATE INDEX ON %I (client_id, ts)', part);
  PERFORM vmq_pgevents_login_index(part);
  PERFORM vmq_pgevents_plugin_index(part);
END
$f$;

-- The partitions of tbl with their periods, oldest first: name, kind
-- ('heap'; 'compressed': a partition of vmq_pgevents_compress, itself
-- partitioned), lower and upper bound.
CREATE OR REPLACE FUNCTION vmq_pgevents_partition_list(tbl text)
RETURNS TABLE (name text, kind text, lo timestamptz, hi timestamptz) LANGUAGE sql STABLE AS $f$
  SELECT c.relname::text, CASE WHEN c.relkind = 'p' THEN 'compressed' ELSE a.amname::text END,
         substring(pg_get_expr(c.relpartbound, c.oid) from 'FROM \(''([^'']*)''\)')::timestamptz,
         substring(pg_get_expr(c.relpartbound, c.oid) from 'TO \(''([^'']*)''\)')::timestamptz
  FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid LEFT JOIN pg_am a ON a.oid = c.relam
  WHERE i.inhparent = to_regclass(quote_ident(tbl)) AND c.relkind IN ('r', 'p')
  ORDER BY 4, 1
$f$;

-- Makes the partitions of tbl from the period of `lo` (default: of `at`)
-- through `ahead` periods after `at` (and through `hi`), and drops those
-- that ended keep_seconds or more before `at` (0: none). Returns how many
-- it made and the names it dropped. Never touches a plain table. With
-- `lo` (rows to write now: events written late) it makes their partitions
-- even when past keep_seconds, and drops none from lo's period on: the
-- rows are written, and the next upkeep without lo drops them.
CREATE OR REPLACE FUNCTION vmq_pgevents_partitions(
    tbl text, period text, ahead integer, keep_seconds bigint,
    at timestamptz DEFAULT now(), lo timestamptz DEFAULT NULL, hi timestamptz DEFAULT NULL)
RETURNS TABLE (created integer, dropped text[]) LANGUAGE plpgsql AS $f$
DECLARE
  step interval := CASE period WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END;
  fmt text := CASE period WHEN 'hour' THEN 'YYYYMMDDHH24' ELSE 'YYYYMMDD' END;
  unit text := CASE period WHEN 'hour' THEN 'hour' ELSE 'day' END;
  p timestamptz;
  first timestamptz;
  late constant boolean := lo IS NOT NULL;   -- rows to write now
  was text;
  last timestamptz;
  name text;
  r record;
  dist constant boolean := vmq_pgevents_distributed(tbl);
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
  -- one upkeep of a table at a time (two brokers after an outage make the
  -- same partitions): the second finds them made
  PERFORM pg_advisory_xact_lock(hashtext('vmq_pgevents partitions ' || tbl));
  p := date_trunc(unit, least(coalesce(lo, at), at) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC';
  first := p;
  last := greatest(coalesce(hi, at), at + ahead * step);
  -- (a row stamped 1970 by a clock not yet set would make hundreds of
  -- thousands: its batch is refused, the row dead-lettered)
  IF last - first > 1000 * step THEN
    RAISE EXCEPTION 'vmq_pgevents_partitions: from % to % would need more than 1000 partitions of % at once',
      first, last, tbl;
  END IF;
  WHILE p <= last LOOP
    name := tbl || '_p' || to_char(p AT TIME ZONE 'UTC', fmt);
    IF to_regclass(quote_ident(name)) IS NULL
       AND (keep_seconds <= 0 OR p + step > at - make_interval(secs => keep_seconds) OR lo IS NOT NULL) THEN
      IF EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(quote_ident(tbl))) THEN
        -- an earlier version's layout: the table's key and indexes on it
        EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES FROM (%L) TO (%L)',
                       name, tbl, p, p + step);
      ELSE
        -- this version's: the lean column order, the partition's own key
        -- and indexes (above); attaching an empty table reads nothing and
        -- does not stop the writer's COPY
        -- (distributed, ATTACH makes it a distributed table of its own,
        -- its shards placed beside the table's)
        EXECUTE format('CREATE TABLE %I (%s)', name, vmq_pgevents_lean_columns(tbl));
        PERFORM vmq_pgevents_key_index(name, dist);
        PERFORM vmq_pgevents_hot_indexes(name);
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                       tbl, name, p, p + step);
      END IF;
      created := created + 1;
    END IF;
    p := p + step;
  END LOOP;
  -- A DROP of a partition takes the whole table first, and every write
  -- and read of it queues behind the DROP while it waits. So retention
  -- waits for nobody: not while a compression or an erasure runs on the
  -- table (they hold it, and its oldest partitions, for minutes; the
  -- DROP would also deadlock with the compression's swap), nor more than
  -- 500 ms behind a long query on it. What it leaves goes at a later
  -- upkeep.
  IF keep_seconds > 0 THEN
    IF NOT pg_try_advisory_xact_lock(hashtext('vmq_pgevents compress ' || tbl)) THEN
      RAISE NOTICE 'vmq_pgevents_partitions: % is being compressed or erased: retention at a later upkeep', tbl;
    ELSE
      was := current_setting('lock_timeout');
      PERFORM set_config('lock_timeout', '500ms', true);
      FOR r IN SELECT l.name FROM vmq_pgevents_partition_list(tbl) l
               WHERE l.hi <= at - make_interval(secs => keep_seconds) AND (NOT late OR l.hi <= first)
               ORDER BY 1 LOOP
        BEGIN
          EXECUTE format('DROP TABLE %I', r.name);
          dropped := dropped || r.name;
        EXCEPTION WHEN lock_not_available THEN
          RAISE NOTICE 'vmq_pgevents_partitions: % is in use (a long query?): it and the ones after it at a later upkeep',
            r.name;
          EXIT;
        END;
      END LOOP;
      PERFORM set_config('lock_timeout', was, true);
    END IF;
  END IF;
  RETURN NEXT;
END
$f$;

-- Compressed history: every heap partition of tbl whose period ended
-- older_than or longer before `at` is rewritten as a columnar table (the
-- extension citus_columnar, made here when missing and the role may), its
-- rows in (client_id, ts) order so that each client's rows are together,
-- and swapped in for the heap partition under the same name. At most
-- max_partitions of them (NULL: all), oldest first. Returns one row per
-- partition compressed.
--
-- One transaction: stopped at any point (the server, the caller) it leaves
-- the heap partitions as they were, and a rerun does the job. The copy
-- takes SHARE on the partition being copied (late rows for that period wait
-- until the commit; rows for today's partitions do not) and, for the swap
-- only, ACCESS EXCLUSIVE on tbl: asked for with a 2 s lock_timeout, up to
-- 30 times, 1 s apart, so that a long query on tbl does not make every
-- write wait behind it. One run per table at a time (an advisory lock): a
-- second caller returns nothing.
CREATE OR REPLACE FUNCTION vmq_pgevents_compress(
    tbl text, older_than interval, at timestamptz DEFAULT now(), max_partitions integer DEFAULT NULL)
RETURNS TABLE (partition text, rows bigint, heap_bytes bigint, columnar_bytes bigint)
LANGUAGE plpgsql AS $f$
DECLARE
  cols text;
  r record;
  names text[] := '{}';
  tmps text[] := '{}';
  los timestamptz[] := '{}';
  his timestamptz[] := '{}';
  counts bigint[] := '{}';
  before bigint[] := '{}';
  tmp text;
  n bigint;
  -- login rows and the plugin's own rows stay on the heap: failed logins,
  -- a connection's client and how it ended are found by index there (an
  -- index lookup into columnar storage reads a whole chunk: ~10 ms)
  logins constant text := '''auth_on_register'', ''auth_on_register_m5'', ''on_register'', ''on_register_m5'', '
                           || btrim(vmq_pgevents_plugin_hooks(), '()');
  i integer;
  k integer;
  leaves integer;
  -- rows per columnar table (below); a DBA may set vmq_pgevents.compress_leaf_rows
  leaf_rows constant bigint := coalesce(nullif(current_setting('vmq_pgevents.compress_leaf_rows', true), '')::bigint,
                                        2000000);
  locked boolean := false;
  was constant text := current_setting('lock_timeout');   -- the caller's, put back after the swap's
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(quote_ident(tbl))) THEN
    RAISE EXCEPTION 'vmq_pgevents_compress: % is not a partitioned events table (partition = day or hour)', tbl;
  END IF;
  IF vmq_pgevents_distributed(tbl) THEN
    RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE = format(
      'vmq_pgevents_compress: %I is a Citus distributed table; its partitions are not compressed by this '
      'function (docs/scale-out.md)', tbl);
  END IF;
  IF EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(quote_ident(tbl))) THEN
    RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = format(
      'vmq_pgevents_compress: %I has indexes of its own (an earlier version''s layout), which every '
      'partition would have to carry; run SELECT vmq_pgevents_split_indexes(%L) once as its owner '
      '(docs/months-of-data.md, "Compressed history")', tbl, tbl);
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_am WHERE amname = 'columnar') THEN
    IF NOT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'citus_columnar') THEN
      RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE =
        'vmq_pgevents_compress: this PostgreSQL server has no columnar storage: install Citus '
        '(11.1 or later, its extension citus_columnar) on the server (docs/months-of-data.md, "Compressed history")';
    END IF;
    BEGIN
      CREATE EXTENSION IF NOT EXISTS citus_columnar;
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE =
        'vmq_pgevents_compress: Citus is installed on the server but the extension citus_columnar is '
        'not in this database, and this role may not create it: a superuser runs '
        'CREATE EXTENSION citus_columnar; in it (docs/months-of-data.md, "Compressed history")';
    END;
  END IF;
  IF NOT pg_try_advisory_xact_lock(hashtext('vmq_pgevents compress ' || tbl)) THEN
    RETURN;   -- another broker or a cron job is at it
  END IF;
  SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
  FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(tbl)) AND attnum > 0 AND NOT attisdropped;

  -- the copies, each beside its heap partition
  FOR r IN SELECT * FROM vmq_pgevents_partition_list(tbl) l
           WHERE l.kind = 'heap' AND l.hi <= at - older_than
           ORDER BY l.hi LIMIT max_partitions LOOP
    -- short, so that PostgreSQL's names for its indexes keep it whole
    tmp := 'vmq_pgev_c' || to_regclass(quote_ident(r.name))::oid;
    EXECUTE format('LOCK TABLE %I IN SHARE MODE', r.name);
    -- the period as a constraint from the start: ATTACH below needs no scan
    -- (with the table's CHECK constraints, a DBA's too: ATTACH needs them)
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS, '
                   'CONSTRAINT %I CHECK (ts >= %L AND ts < %L)) '
                   'PARTITION BY LIST (hook)', tmp, tbl, tmp || '_period', r.lo, r.hi);
    EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES IN (%s)', tmp || '_l', tmp, logins);
    -- the columnar part, split by a hash of client_id into 1 to 16
    -- tables (<partition>_c0 to _cf) of at most leaf_rows rows each where
    -- it can: a client's question reads one of them, and columnar reads
    -- the metadata of every chunk of a table it scans (a day of 50 million
    -- rows, a device's day: 39 ms in one table, 6.1 ms in 16)
    EXECUTE format('SELECT count(*) FROM %I', r.name) INTO n;
    leaves := least(16, greatest(1, ceil(n::numeric / greatest(leaf_rows, 1))))::integer;
    EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT PARTITION BY HASH (client_id)', tmp || '_c', tmp);
    FOR k IN 0..leaves - 1 LOOP
      -- chunks of 5,000 rows: a client's question decompresses the
      -- whole chunk of each of its runs of rows, and reads the metadata
      -- of all of them (half of 10,000, columnar's default: less of the
      -- first, twice the second)
      EXECUTE format('CREATE TABLE %I PARTITION OF %I FOR VALUES WITH (MODULUS %s, REMAINDER %s) USING columnar',
                     tmp || '_c' || to_hex(k), tmp || '_c', leaves, k);
      EXECUTE format('ALTER TABLE %I SET (columnar.chunk_group_row_limit = 5000)', tmp || '_c' || to_hex(k));
      -- no statistics on ts and client_id: columnar skips chunks by a
      -- column's minimum and maximum only when the column's statistics
      -- say it is in table order (columnar.qual_pushdown_correlation_threshold),
      -- or when it has none. Rows go in by quarter of a day, then client,
      -- so each is in order where it matters but client_id not in the
      -- whole table's order
      EXECUTE format('ALTER TABLE %I ALTER COLUMN ts SET STATISTICS 0, ALTER COLUMN client_id SET STATISTICS 0',
                     tmp || '_c' || to_hex(k));
    END LOOP;
    -- by quarter of a day (UTC), then client and time: a time range reads
    -- the chunks of its quarters only (an hour: a quarter of a day's rows),
    -- and a client's rows are together in each quarter (one or two
    -- chunks). Measured on a day of 50 million rows in 16 tables with
    -- chunks of 10,000 rows: by hour, a client's day read 24 chunks (71
    -- ms); by client alone, an hour read the whole day (1.0 s); by
    -- quarter, 13 ms and 0.36 s (docs/internals/measurements.md, "Choosing the compressed layout")
    EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM %I '
                   'ORDER BY date_bin(''6 hours'', ts, ''2000-01-01 00:00+00''), client_id, ts, node, incarnation, seq',
                   tmp, cols, cols, r.name);
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM vmq_pgevents_cold_indexes(tmp || '_l');
    names := names || r.name;
    tmps := tmps || tmp;
    los := los || r.lo;
    his := his || r.hi;
    counts := counts || n;
    before := before || pg_total_relation_size(to_regclass(quote_ident(r.name)));
  END LOOP;
  IF cardinality(names) = 0 THEN
    RETURN;
  END IF;

  -- the swap: the table to ourselves for a moment
  FOR i IN 1..30 LOOP
    BEGIN
      PERFORM set_config('lock_timeout', '2s', true);
      EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', tbl);
      locked := true;
    EXCEPTION WHEN lock_not_available THEN
      PERFORM pg_sleep(1);
    END;
    EXIT WHEN locked;
  END LOOP;
  PERFORM set_config('lock_timeout', was, true);
  IF NOT locked THEN
    RAISE EXCEPTION USING ERRCODE = 'lock_not_available', MESSAGE = format(
      'vmq_pgevents_compress: %I was never free for a moment in 90 s (long queries on it?); nothing changed', tbl);
  END IF;
  FOR i IN 1..cardinality(names) LOOP
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', tbl, names[i]);
    EXECUTE format('DROP TABLE %I', names[i]);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tmps[i], names[i]);
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tmps[i] || '_l', names[i] || '_l');
    EXECUTE format('ALTER TABLE %I RENAME TO %I', tmps[i] || '_c', names[i] || '_c');
    -- its columnar tables too, where the name fits (a table name of 48
    -- or 49 bytes and partition = hour: they keep vmq_pgev_c<oid>_c<k>)
    FOR r IN SELECT c.relname::text AS leaf, replace(c.relname, tmps[i], names[i]) AS want
             FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhrelid
             WHERE h.inhparent = to_regclass(quote_ident(names[i] || '_c')) LOOP
      IF octet_length(r.want) <= 63 THEN
        EXECUTE format('ALTER TABLE %I RENAME TO %I', r.leaf, r.want);
      END IF;
    END LOOP;
    -- its indexes named after it too, where the name fits
    FOR r IN SELECT c.relname::text AS idx, replace(c.relname, tmps[i], names[i]) AS want
             FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid
             WHERE x.indrelid = to_regclass(quote_ident(names[i] || '_l')) LOOP
      IF octet_length(r.want) <= 63 AND r.want <> r.idx AND to_regclass(quote_ident(r.want)) IS NULL THEN
        EXECUTE format('ALTER INDEX %I RENAME TO %I', r.idx, r.want);
      END IF;
    END LOOP;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   tbl, names[i], los[i], his[i]);
    partition := names[i];
    rows := counts[i];
    heap_bytes := before[i];
    SELECT sum(pg_total_relation_size(relid)) INTO columnar_bytes
    FROM pg_partition_tree(to_regclass(quote_ident(names[i])));
    RETURN NEXT;
  END LOOP;
END
$f$;

-- Upgrades a table partitioned by an earlier version (the key and indexes
-- on the table itself, so on every partition) to this version's layout:
-- each partition keeps the indexes it has, as its own, and the table none.
-- One transaction holding the table: every partition is detached, the
-- table's key and indexes dropped (their partitions' copies stay), and the
-- partitions attached again (PostgreSQL reads each to check its period).
-- Returns how many partitions it moved.
CREATE OR REPLACE FUNCTION vmq_pgevents_split_indexes(tbl text) RETURNS integer LANGUAGE plpgsql AS $f$
DECLARE
  parts record;
  list text[] := '{}';
  los timestamptz[] := '{}';
  his timestamptz[] := '{}';
  c record;
  i integer;
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(quote_ident(tbl))) THEN
    RAISE EXCEPTION 'vmq_pgevents_split_indexes: % is not a partitioned table', tbl;
  END IF;
  EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', tbl);
  FOR parts IN SELECT * FROM vmq_pgevents_partition_list(tbl) LOOP
    EXECUTE format('ALTER TABLE %I DETACH PARTITION %I', tbl, parts.name);
    list := list || parts.name;
    los := los || parts.lo;
    his := his || parts.hi;
  END LOOP;
  FOR c IN SELECT conname FROM pg_constraint
           WHERE conrelid = to_regclass(quote_ident(tbl)) AND contype IN ('p', 'u') LOOP
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', tbl, c.conname);
  END LOOP;
  FOR c IN SELECT indexrelid::regclass::text AS idx FROM pg_index
           WHERE indrelid = to_regclass(quote_ident(tbl)) LOOP
    EXECUTE format('DROP INDEX %s', c.idx);
  END LOOP;
  FOR i IN 1..coalesce(cardinality(list), 0) LOOP
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   tbl, list[i], los[i], his[i]);
  END LOOP;
  RETURN coalesce(cardinality(list), 0);
END
$f$;

-- Upgrades a local events table (made before, or with distribute = off)
-- on a Citus coordinator to a distributed table on client_id, in one
-- transaction holding the table: each partition's key gains client_id;
-- the rows with no client_id (on_auth_m5 before the client id is known)
-- get '', as the plugin writes them to a distributed table;
-- create_distributed_table copies the rows to the workers' shards, the
-- coordinator's local copy is emptied, <tbl>_dead becomes a reference
-- table and the views and functions their distributed form. Refuses a
-- table with compressed partitions (Citus distributes one level of
-- partitions only). Returns how many rows went to the workers.
CREATE OR REPLACE FUNCTION vmq_pgevents_distribute(tbl text) RETURNS bigint LANGUAGE plpgsql AS $f$
DECLARE
  r record;
  n bigint;
BEGIN
  -- Citus's notices (the local data copied, a hint to truncate it, which
  -- is done below) are not for the caller
  PERFORM set_config('client_min_messages', 'warning', true);
  IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus') THEN
    RAISE EXCEPTION 'vmq_pgevents_distribute: this database has no Citus (CREATE EXTENSION citus, on its coordinator)';
  END IF;
  -- one connection per worker for the whole transaction: the views and
  -- functions are made again at its end, which Citus refuses after a
  -- parallel operation on a distributed table in the same transaction
  PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
  IF NOT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = to_regclass(quote_ident(tbl))) THEN
    RAISE EXCEPTION 'vmq_pgevents_distribute: % is not a partitioned events table (partition = day or hour)', tbl;
  END IF;
  IF vmq_pgevents_distributed(tbl) THEN
    RETURN 0;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(quote_ident(tbl))) THEN
    RAISE EXCEPTION 'vmq_pgevents_distribute: % has indexes of its own (an earlier version''s layout): '
                    'run SELECT vmq_pgevents_split_indexes(%L) first', tbl, tbl;
  END IF;
  IF EXISTS (SELECT 1 FROM vmq_pgevents_partition_list(tbl) WHERE kind <> 'heap') THEN
    RAISE EXCEPTION 'vmq_pgevents_distribute: % has compressed partitions; Citus distributes no partition '
                    'that is itself partitioned (drop them, or keep the table local)', tbl;
  END IF;
  EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', tbl);
  -- Citus places no row without a value of the distribution column
  EXECUTE format('UPDATE %I SET client_id = '''' WHERE client_id IS NULL', tbl);
  -- each partition's key with client_id in it
  FOR r IN SELECT l.name, x.indexrelid::regclass::text AS idx
           FROM vmq_pgevents_partition_list(tbl) l
           JOIN pg_index x ON x.indrelid = to_regclass(quote_ident(l.name)) AND x.indisunique LOOP
    EXECUTE format('DROP INDEX %s', r.idx);
    PERFORM vmq_pgevents_key_index(r.name, true);
  END LOOP;
  EXECUTE format('SELECT count(*) FROM %I', tbl) INTO n;
  EXECUTE 'SELECT create_distributed_table($1, ''client_id'')' USING to_regclass(quote_ident(tbl));
  EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)' USING to_regclass(quote_ident(tbl));
  IF to_regclass(quote_ident(tbl || '_dead')) IS NOT NULL THEN
    EXECUTE 'SELECT create_reference_table($1)' USING to_regclass(quote_ident(tbl || '_dead'));
    EXECUTE 'SELECT truncate_local_data_after_distributing_table($1)' USING to_regclass(quote_ident(tbl || '_dead'));
  END IF;
  PERFORM vmq_pgevents_views(tbl);   -- their distributed form
  RETURN n;
END
$f$;

-- The views and functions people query with psql (docs/queries.md), for
-- the events table tbl: <tbl>_connections, <tbl>_failed_logins(since),
-- <tbl>_timeline(client_id, since, mountpoint), <tbl>_connection(node, incarnation,
-- conn_id), <tbl>_journey(client_id, since, within, mountpoint). Made again only when
-- this file's version of them differs from the one in the database (the
-- version is the comment on <tbl>_connections).
-- The roles other than its owner that may SELECT from rel, as GRANT names
-- them (PUBLIC, or the role's name quoted)
DROP FUNCTION IF EXISTS vmq_pgevents_selectors(text);
CREATE OR REPLACE FUNCTION vmq_pgevents_selectors(rel text) RETURNS text[] LANGUAGE sql STABLE AS $f$
  SELECT ARRAY(SELECT DISTINCT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END
               FROM pg_class c CROSS JOIN LATERAL aclexplode(c.relacl) a
               WHERE c.oid = to_regclass(quote_ident(rel)) AND a.privilege_type = 'SELECT'
                 AND a.grantee <> c.relowner)
$f$;

CREATE OR REPLACE FUNCTION vmq_pgevents_views(tbl text) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  -- the views' version and the table they were made for (a table renamed
  -- and made again gets views of its own)
  -- distributed (Citus), the functions are PL/pgSQL: Citus plans no SQL
  -- function with parameters over a distributed table, nor a lateral
  -- subquery with LIMIT or a join on other columns than client_id
  dist constant boolean := vmq_pgevents_distributed(tbl);
  nsp constant text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.oid = to_regclass(quote_ident(tbl)));
  version constant text := 'vmq_pgevents views 6, table ' || to_regclass(quote_ident(tbl))::oid
                           || CASE WHEN dist THEN ', distributed' ELSE '' END;
  logins constant text := '(''auth_on_register'', ''auth_on_register_m5'')';
  registers constant text := '(''on_register'', ''on_register_m5'')';
  login_rows constant text := '(''auth_on_register'', ''auth_on_register_m5'', ''on_register'', ''on_register_m5'')';
  publishes constant text := '(''on_publish'', ''on_publish_m5'')';
  delivers constant text := '(''on_deliver'', ''on_deliver_m5'')';
  plugin constant text := vmq_pgevents_plugin_hooks();
  -- those of 0.4.0 (its plugin index has no other)
  before constant text := '(''pgevents_start'', ''pgevents_stop'', ''pgevents_crashed'', ''pgevents_dropped'')';
  owner constant name := (SELECT pg_get_userbyid(c.relowner) FROM pg_class c WHERE c.oid = to_regclass(quote_ident(tbl)));
  readers text[];   -- who may read the view
  i integer;
  ended text;  -- how a connection without an end row ended
  head text;   -- a function's CREATE and signature, for both of its bodies
BEGIN
  IF obj_description(to_regclass(quote_ident(tbl || '_connections')), 'pg_class') IS NOT DISTINCT FROM version THEN
    RETURN;
  END IF;

  -- those given the view by hand (vmq_pgevents_grant's readers are given
  -- it again below): given it again too
  readers := vmq_pgevents_selectors(tbl || '_connections');
  EXECUTE format('DROP VIEW IF EXISTS %I', tbl || '_connections');
  EXECUTE format('DROP FUNCTION IF EXISTS %I(timestamptz)', tbl || '_completeness');
  -- (views 2's client questions had no mountpoint)
  EXECUTE format('DROP FUNCTION IF EXISTS %I(text, timestamptz), %I(text, timestamptz, text), '
                 '%I(text, bigint, bigint), %I(text, timestamptz, interval), '
                 '%I(text, timestamptz, interval, text), %I(timestamptz)',
                 tbl || '_timeline', tbl || '_timeline', tbl || '_connection', tbl || '_journey',
                 tbl || '_journey', tbl || '_failed_logins');

  -- A connection without an end row (no hook tells of it): its node
  -- stopped (a pgevents_stop of its incarnation after its last row), its
  -- node crashed (no such stop, and a later incarnation of the same node),
  -- or it is open. 'unknown' when its incarnation has no plugin row (an
  -- earlier version's; a start row dropped by retention leaves the
  -- pgevents_running rows). The plugin rows have no mountpoint: a reader
  -- limited to some does not see them, so (not distributed) a function of
  -- the table's owner reads them and tells only this.
  EXECUTE format('DROP FUNCTION IF EXISTS %I.%I(text, bigint, bigint, timestamptz)', nsp, tbl || '_node_end');
  IF dist THEN
    -- distributed: Citus plans no correlated subquery here, and runs a
    -- function in the view on the workers (where it cannot ask the
    -- distributed table): the plugin rows of each incarnation, summed once
    -- (with the reader's rights: a reader limited to some mountpoints sees
    -- 'unknown'; docs/queries.md)
    ended := $v$
      CASE WHEN i.node IS NULL THEN 'unknown'
           WHEN i.last_stop > w.last_seq THEN 'node stopped'
           WHEN i.newest > w.incarnation THEN 'node crashed'
           ELSE 'open' END$v$;
  ELSE
    -- each question looks only at the partitions of the incarnation's
    -- start, or from a day before the connection on (a pgevents_running
    -- row at least every hour), by the plugin rows' index (0.4.0's too:
    -- those of 0.4.0's rows asked apart from pgevents_running)
    EXECUTE format($v$
      CREATE FUNCTION %1$I.%2$I(node text, incarnation bigint, last_seq bigint, connected_at timestamptz)
      RETURNS text LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $b$
      SELECT CASE WHEN NOT EXISTS (SELECT 1 FROM %1$I.%3$I s
                                   WHERE s.hook = 'pgevents_start' AND s.incarnation = $2 AND s.node = $1
                                     AND s.ts >= to_timestamp($2 / 1000000.0) - interval '1 hour'
                                     AND s.ts < to_timestamp($2 / 1000000.0) + interval '1 hour')
                       AND NOT EXISTS (SELECT 1 FROM %1$I.%3$I s
                                       WHERE s.hook IN %4$s AND s.incarnation = $2 AND s.node = $1
                                         AND s.ts >= $4 - interval '1 day')
                       AND NOT EXISTS (SELECT 1 FROM %1$I.%3$I s
                                       WHERE s.hook = 'pgevents_running' AND s.incarnation = $2 AND s.node = $1
                                         AND s.ts >= $4 - interval '1 day' AND s.ts < $4 + interval '1 day')
                  THEN 'unknown'
                  WHEN EXISTS (SELECT 1 FROM %1$I.%3$I s
                               WHERE s.hook = 'pgevents_stop' AND s.incarnation = $2 AND s.node = $1
                                 AND s.seq > $3 AND s.ts >= $4 - interval '1 hour') THEN 'node stopped'
                  WHEN EXISTS (SELECT 1 FROM %1$I.%3$I s
                               WHERE s.hook = 'pgevents_start' AND s.incarnation > $2 AND s.node = $1
                                 AND s.ts >= $4 - interval '1 hour') THEN 'node crashed'
                  ELSE 'open' END
      $b$
      $v$, nsp, tbl || '_node_end', tbl, before);
    ended := format('%I.%I(w.node, w.incarnation, w.last_seq, w.connected_at)', nsp, tbl || '_node_end');
    EXECUTE format('REVOKE ALL ON FUNCTION %I.%I(text, bigint, bigint, timestamptz) FROM PUBLIC',
                   nsp, tbl || '_node_end');
    -- the table owner's, whoever applies this (its rights are what it reads with)
    IF owner IS DISTINCT FROM current_user::name AND pg_has_role(owner, 'MEMBER') THEN
      BEGIN
        EXECUTE format('ALTER FUNCTION %I.%I(text, bigint, bigint, timestamptz) OWNER TO %I',
                       nsp, tbl || '_node_end', owner);
      EXCEPTION WHEN insufficient_privilege THEN
        NULL;   -- a membership without SET (PostgreSQL 16): the applier's, who reads every row too
      END;
    END IF;
  END IF;

  -- one row per MQTT connection (node, incarnation, conn_id); filtered on
  -- client_id it reads that client's rows only (its client_id index)
  -- with the caller's rights (PostgreSQL 15 and later): a reader limited
  -- to some mountpoints (vmq_pgevents_grant) sees their rows only here too
  EXECUTE format($v$
    CREATE VIEW %1$I%7$s AS
    SELECT w.node, w.incarnation, conn_id, mountpoint, client_id, username, peer_addr, peer_port,
           mqtt_version, clean_session,
           CASE WHEN registered_at IS NOT NULL THEN 'registered'
                WHEN login_at IS NOT NULL THEN 'refused' END AS login,
           connected_at,
           CASE WHEN registered_at IS NOT NULL THEN coalesce(least(offline_at, gone_at), expired_at) END AS ended_at,
           -- taken over: its end came after the next connection's login
           -- (no end at all: above)
           CASE WHEN login_at IS NOT NULL AND registered_at IS NULL THEN 'refused'
                WHEN next_login < least(offline_at, gone_at) THEN 'taken over'
                WHEN expired_at IS NOT NULL THEN 'session expired'
                WHEN gone_at IS NOT NULL THEN 'gone'
                WHEN offline_at IS NOT NULL THEN 'offline'
                ELSE %8$s END AS ended_how,
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
                       count(*) AS events,
                       max(seq) AS last_seq
                FROM %6$I
                WHERE conn_id IS NOT NULL
                GROUP BY node, incarnation, conn_id, mountpoint, client_id) c) w
    %9$s
    $v$, tbl || '_connections', logins, registers, publishes, delivers, tbl,
    CASE WHEN current_setting('server_version_num')::integer >= 150000
         THEN ' WITH (security_invoker = true)' ELSE '' END,
    ended,
    CASE WHEN dist THEN format($j$
      LEFT JOIN (SELECT a.node, a.incarnation, a.last_stop, max(a.incarnation) OVER (PARTITION BY a.node) AS newest
                 FROM (SELECT node, incarnation, max(seq) FILTER (WHERE hook = 'pgevents_stop') AS last_stop
                       FROM %1$I WHERE hook IN %2$s GROUP BY node, incarnation) a) i
        ON i.node = w.node AND i.incarnation = w.incarnation$j$, tbl, plugin) ELSE '' END);

  -- CONNECTs refused by the auth chain since `since` (default: the last
  -- day): an auth_on_register* and no on_register* on the same connection
  -- (VerneMQ has no refusal hook). From the login index alone (index-only:
  -- no table pages for the logins that succeeded), then each failed
  -- login's row by client and time
  head := format($v$
    CREATE FUNCTION %1$I(since timestamptz DEFAULT now() - interval '1 day')
    RETURNS TABLE (ts timestamptz, node text, incarnation bigint, conn_id bigint, mountpoint text,
                   client_id text, username text, peer_addr inet, peer_port integer,
                   clean_session boolean, hook text)
    $v$, tbl || '_failed_logins');
  IF dist THEN
  -- distributed: the first login row of each connection whose login
  -- rows are all auth_on_register*, from one aggregate that each shard
  -- answers for its clients (grouped by client_id, the distribution
  -- column); ties in ts go to the lower seq
  EXECUTE head || format($v$
    LANGUAGE plpgsql STABLE AS $b$
    #variable_conflict use_column
    BEGIN
      RETURN QUERY
      SELECT min(l.ts), l.node, l.incarnation, l.conn_id,
             (array_agg(l.mountpoint ORDER BY l.ts, l.seq))[1],
             l.client_id,
             (array_agg(l.username ORDER BY l.ts, l.seq))[1],
             (array_agg(l.peer_addr ORDER BY l.ts, l.seq))[1],
             (array_agg(l.peer_port ORDER BY l.ts, l.seq))[1],
             (array_agg(l.clean_session ORDER BY l.ts, l.seq))[1],
             (array_agg(l.hook ORDER BY l.ts, l.seq))[1]
      FROM %2$I l
      WHERE l.hook IN %3$s AND l.ts >= $1
      GROUP BY l.client_id, l.node, l.incarnation, l.conn_id
      HAVING bool_and(l.hook IN %4$s)
      ORDER BY 1, 2, 3, 4;
    END
    $b$
    $v$, tbl || '_failed_logins', tbl,
    login_rows, logins);
  ELSE
  EXECUTE head || format($v$
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
                        WHERE e.conn_id = f.conn_id AND e.ts = f.ts AND e.client_id IS NOT DISTINCT FROM f.client_id
                          AND e.node = f.node AND e.incarnation = f.incarnation AND e.hook IN %4$s
                        LIMIT 1) e
    ORDER BY e.ts, e.node, e.incarnation, e.conn_id
    $b$
    $v$, tbl || '_failed_logins', tbl,
    login_rows, logins);
  END IF;

  -- a client's events in order, across its connections and the nodes
  -- (ts, then each node's own order). A client is VerneMQ's (mountpoint,
  -- client_id): the default mountpoint '' unless one is named
  EXECUTE format($v$
    CREATE FUNCTION %1$I(client_id text, since timestamptz DEFAULT '-infinity', mountpoint text DEFAULT '')
    RETURNS SETOF %2$I LANGUAGE %3$s STABLE AS
    $b$%4$s SELECT * FROM %2$I WHERE client_id = $1 AND mountpoint = $3 AND ts >= $2
           ORDER BY ts, node, incarnation, seq%5$s$b$
    $v$, tbl || '_timeline', tbl, CASE WHEN dist THEN 'plpgsql' ELSE 'sql' END,
    CASE WHEN dist THEN '#variable_conflict use_column BEGIN RETURN QUERY' ELSE '' END,
    CASE WHEN dist THEN '; END' ELSE '' END);

  -- one connection's events in order: its client from its login row
  -- (login_idx), then that client's rows (its client_id index)
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

  -- a client's (mountpoint, client_id; the default mountpoint '' unless
  -- one is named) publishes since `since`, each with the deliveries it
  -- produced within `within`: same mountpoint, topic, payload size and
  -- payload_hash. candidates: how many publishes match that delivery
  -- (more than 1: it cannot be told which of them it was)
  head := format($v$
    CREATE FUNCTION %1$I(client_id text, since timestamptz DEFAULT now() - interval '1 hour',
                                    within interval DEFAULT interval '1 hour', mountpoint text DEFAULT '')
    RETURNS TABLE (published_at timestamptz, node text, incarnation bigint, seq bigint, topic text,
                   qos smallint, payload_size integer, delivered_at timestamptz, to_client_id text,
                   to_node text, to_conn_id bigint, latency_ms double precision, candidates bigint)
    $v$, tbl || '_journey');
  IF dist THEN
  -- distributed: the client's publishes from its shard, then the
  -- deliveries of their payload hashes and the publishes those could
  -- have come from, each one query over every shard (materialized on
  -- the coordinator), then matched there as below
  EXECUTE head || format($v$
    LANGUAGE plpgsql STABLE AS $b$
    #variable_conflict use_column
    BEGIN
    RETURN QUERY
    WITH p AS MATERIALIZED (
      SELECT p.ts, p.node, p.incarnation, p.seq, p.topic, p.qos, p.payload_size, p.payload_hash, p.mountpoint
      FROM %2$I p WHERE p.client_id = $1 AND p.mountpoint = $4 AND p.ts >= $2 AND p.hook IN %4$s),
    d AS MATERIALIZED (
      SELECT d.ts, d.client_id, d.node, d.conn_id, d.seq, d.payload_hash, d.topic, d.payload_size, d.mountpoint
      FROM %2$I d
      WHERE d.payload_hash IN (SELECT payload_hash FROM p) AND d.hook IN %3$s
        AND d.ts >= (SELECT min(ts) FROM p) - interval '1 second' AND d.ts < (SELECT max(ts) FROM p) + $3),
    o AS MATERIALIZED (
      SELECT o.ts, o.payload_hash, o.topic, o.payload_size, o.mountpoint
      FROM %2$I o
      WHERE o.payload_hash IN (SELECT payload_hash FROM d) AND o.hook IN %4$s
        AND o.ts > (SELECT min(ts) FROM d) - $3 AND o.ts <= (SELECT max(ts) FROM d) + interval '1 second')
    SELECT p.ts, p.node, p.incarnation, p.seq, p.topic, p.qos, p.payload_size,
           d.ts, d.client_id, d.node, d.conn_id,
           (extract(epoch FROM d.ts - p.ts) * 1000)::double precision,
           d.candidates
    FROM p
    LEFT JOIN LATERAL (
      SELECT d.ts, d.client_id, d.node, d.conn_id, d.seq,
             (SELECT count(*) FROM o
              WHERE o.payload_hash = d.payload_hash AND o.ts > d.ts - $3 AND o.ts <= d.ts + interval '1 second'
                AND o.topic = d.topic AND o.payload_size = d.payload_size
                AND o.mountpoint IS NOT DISTINCT FROM d.mountpoint) AS candidates
      FROM d
      WHERE d.payload_hash = p.payload_hash AND d.ts >= p.ts - interval '1 second' AND d.ts < p.ts + $3
        AND d.topic = p.topic AND d.payload_size = p.payload_size
        AND d.mountpoint IS NOT DISTINCT FROM p.mountpoint) d ON true
    ORDER BY p.ts, p.node, p.incarnation, p.seq, d.ts, d.node, d.seq;
    END
    $b$
    $v$, tbl || '_journey', tbl, delivers, publishes);
  ELSE
  EXECUTE head || format($v$
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
    WHERE p.client_id = $1 AND p.mountpoint = $4 AND p.ts >= $2 AND p.hook IN %4$s
    ORDER BY p.ts, p.node, p.incarnation, p.seq, d.ts, d.node, d.seq
    $b$
    $v$, tbl || '_journey', tbl, delivers, publishes);
  END IF;

  -- How complete the record is since `since`: one row per node and
  -- incarnation with rows since then. ended: stopped (its last start or
  -- stop row is a stop), crashed (not stopped, and a later incarnation of
  -- the same node, or one that said it crashed), running, or unknown (no
  -- plugin row: an earlier version's). first_seq is 1 when it began since
  -- then. missing: the numbers from first_seq to last_seq in neither the
  -- table nor <tbl>_dead, as ranges (a row numbered after first_seq whose
  -- ts is up to a minute before `since` is no gap: ts is taken before the
  -- number), each with why: dropped (the reasons of the
  -- pgevents_dropped rows, or of a pgevents_stop telling the last drops,
  -- whose ranges hold it) or not yet written (still in a journal). Distributed, the rows are gathered on the coordinator.
  EXECUTE format($v$
    CREATE FUNCTION %1$I(since timestamptz DEFAULT now() - interval '1 day')
    RETURNS TABLE (node text, incarnation bigint, started timestamptz, ended text,
                   first_seq bigint, last_seq bigint, rows_written bigint, rows_dead bigint,
                   missing bigint, missing_ranges jsonb)
    LANGUAGE plpgsql STABLE AS $b$
    #variable_conflict use_column
    BEGIN
    RETURN QUERY
    WITH r AS MATERIALIZED (
      SELECT e.node, e.incarnation, min(e.seq) AS lo, max(e.seq) AS hi, count(*) AS n
      FROM %2$I e WHERE e.ts >= $1 GROUP BY e.node, e.incarnation),
    d AS MATERIALIZED (
      SELECT e.node, e.incarnation, min(e.seq) AS lo, max(e.seq) AS hi, count(*) AS n
      FROM %3$I e WHERE e.ts >= $1 GROUP BY e.node, e.incarnation),
    i AS MATERIALIZED (
      SELECT x.node, x.incarnation,
             CASE WHEN to_timestamp(x.incarnation / 1000000.0) >= $1 THEN 1::bigint ELSE x.lo END AS lo,
             x.hi, x.n, x.dn
      FROM (SELECT coalesce(r.node, d.node) AS node, coalesce(r.incarnation, d.incarnation) AS incarnation,
                   least(r.lo, d.lo) AS lo, greatest(r.hi, d.hi) AS hi,
                   coalesce(r.n, 0) AS n, coalesce(d.n, 0) AS dn
            FROM r FULL JOIN d ON d.node = r.node AND d.incarnation = r.incarnation) x),
    -- the plugin's rows of those incarnations and of later ones
    p AS MATERIALIZED (
      SELECT e.node, e.incarnation, e.seq, e.hook, e.extra FROM %2$I e
      WHERE e.hook IN %4$s
        AND e.ts >= least($1, (SELECT to_timestamp(min(i.incarnation) / 1000000.0) FROM i) - interval '1 hour')
      UNION ALL
      -- the first pgevents_running row of each incarnation: that it ran
      -- (its start row may be gone with retention)
      (SELECT DISTINCT ON (e.node, e.incarnation) e.node, e.incarnation, e.seq, e.hook, e.extra FROM %2$I e
       WHERE e.hook = 'pgevents_running' AND e.ts >= $1 - interval '2 hours'
       ORDER BY e.node, e.incarnation, e.seq)),
    s AS MATERIALIZED (
      SELECT e.node, e.incarnation, e.seq FROM %2$I e JOIN i ON i.node = e.node AND i.incarnation = e.incarnation
      WHERE e.ts >= $1 - interval '1 minute' AND e.seq BETWEEN i.lo AND i.hi AND i.hi - i.lo + 1 > i.n + i.dn
      UNION ALL
      SELECT e.node, e.incarnation, e.seq FROM %3$I e JOIN i ON i.node = e.node AND i.incarnation = e.incarnation
      WHERE e.ts >= $1 - interval '1 minute' AND e.seq BETWEEN i.lo AND i.hi AND i.hi - i.lo + 1 > i.n + i.dn),
    gaps AS MATERIALIZED (
      SELECT g.node, g.incarnation, g.prev + 1 AS gfrom, g.seq - 1 AS gto
      FROM (SELECT s.node, s.incarnation, s.seq,
                   coalesce(lag(s.seq) OVER (PARTITION BY s.node, s.incarnation ORDER BY s.seq), i.lo - 1) AS prev
            FROM s JOIN i ON i.node = s.node AND i.incarnation = s.incarnation) g
      WHERE g.seq - g.prev > 1),
    drops AS MATERIALIZED (
      SELECT p.node, p.incarnation, (p.extra->>'first_seq')::bigint AS df, (p.extra->>'last_seq')::bigint AS dl,
             p.extra->'reasons' AS reasons
      FROM p WHERE p.hook IN ('pgevents_dropped', 'pgevents_stop') AND p.extra ? 'first_seq'),
    why AS MATERIALIZED (
      SELECT g.node, g.incarnation, g.gfrom, g.gto,
             (SELECT coalesce(sum(least(g.gto, x.dl) - greatest(g.gfrom, x.df) + 1), 0) FROM drops x
              WHERE x.node = g.node AND x.incarnation = g.incarnation AND x.df <= g.gto AND x.dl >= g.gfrom) AS dropped,
             (SELECT string_agg(DISTINCT k.k, ', ' ORDER BY k.k) FROM drops x, jsonb_object_keys(x.reasons) k(k)
              WHERE x.node = g.node AND x.incarnation = g.incarnation AND x.df <= g.gto AND x.dl >= g.gfrom) AS reasons
      FROM gaps g)
    SELECT i.node, i.incarnation, to_timestamp(i.incarnation / 1000000.0),
           CASE WHEN (SELECT x.hook FROM p x WHERE x.node = i.node AND x.incarnation = i.incarnation
                        AND x.hook IN ('pgevents_start', 'pgevents_stop') ORDER BY x.seq DESC LIMIT 1) = 'pgevents_stop'
                  THEN 'stopped'
                WHEN NOT EXISTS (SELECT 1 FROM p x WHERE x.node = i.node AND x.incarnation = i.incarnation)
                  THEN 'unknown'
                WHEN EXISTS (SELECT 1 FROM p x WHERE x.node = i.node AND x.incarnation > i.incarnation)
                  OR EXISTS (SELECT 1 FROM p x WHERE x.node = i.node AND x.hook = 'pgevents_crashed'
                               AND x.extra->>'incarnation' = i.incarnation::text) THEN 'crashed'
                ELSE 'running' END,
           i.lo, i.hi, i.n, i.dn,
           coalesce((SELECT sum(g.gto - g.gfrom + 1) FROM gaps g WHERE g.node = i.node AND g.incarnation = i.incarnation),
                    0)::bigint,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                               'from', w.gfrom, 'to', w.gto, 'count', w.gto - w.gfrom + 1,
                               'why', CASE WHEN w.dropped >= w.gto - w.gfrom + 1 THEN 'dropped: ' || w.reasons
                                           WHEN w.dropped > 0
                                             THEN 'dropped: ' || w.reasons || ' (' || w.dropped || '); the rest not yet written'
                                           ELSE 'not yet written' END) ORDER BY w.gfrom)
                     FROM why w WHERE w.node = i.node AND w.incarnation = i.incarnation), '[]'::jsonb)
    FROM i
    ORDER BY i.node, i.incarnation;
    END
    $b$
    $v$, tbl || '_completeness', tbl, tbl || '_dead', before);
  -- a reader limited to some mountpoints would see gaps that are other
  -- tenants' rows: only readers of every row are given it
  EXECUTE format('REVOKE ALL ON FUNCTION %I(timestamptz) FROM PUBLIC', tbl || '_completeness');

  EXECUTE format('COMMENT ON VIEW %I IS %L', tbl || '_connections', version);
  -- the view's readers: given by hand before, and by the owner's default
  -- privileges now; each may call the function the view calls
  FOR i IN 1 .. coalesce(array_length(readers, 1), 0) LOOP
    EXECUTE format('GRANT SELECT ON %I TO %s', tbl || '_connections', readers[i]);
  END LOOP;
  IF NOT dist THEN
    readers := vmq_pgevents_selectors(tbl || '_connections');
    FOR i IN 1 .. coalesce(array_length(readers, 1), 0) LOOP
      EXECUTE format('GRANT EXECUTE ON FUNCTION %I.%I(text, bigint, bigint, timestamptz) TO %s', nsp, tbl || '_node_end',
                     readers[i]);
    END LOOP;
  END IF;
  -- made again: the readers' grants on them are gone with the old ones
  PERFORM vmq_pgevents_reader_objects(tbl, r.role, true, r.sees = 'true') FROM vmq_pgevents_readers(tbl) r;
END
$f$;

-- Personal data: erasing one client (docs/personal-data.md).
--
-- <tbl>_erased, one row per vmq_pgevents_forget call: when, who asked
-- (session_user), the client, how many rows it removed, and how many of
-- that client's older events it removed later as they arrived from a
-- broker's journal (rows_later, later_at).
CREATE OR REPLACE FUNCTION vmq_pgevents_erased_table(tbl text) RETURNS void LANGUAGE plpgsql AS $f$
BEGIN
  IF to_regclass(quote_ident(tbl || '_erased')) IS NULL THEN
    EXECUTE format('CREATE TABLE %I (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, '
                   'erased_at timestamptz NOT NULL DEFAULT now(), asked_by text NOT NULL DEFAULT session_user, '
                   'mountpoint text NOT NULL, client_id text NOT NULL, rows bigint NOT NULL, '
                   'rows_later bigint NOT NULL DEFAULT 0, later_at timestamptz)', tbl || '_erased');
  END IF;
END
$f$;

-- Removes the rows of the client (mp, cid) whose ts is at or before upto
-- from tbl, heap and (with columnar) compressed partitions alike, and from
-- <tbl>_dead. A columnar table (of a compressed partition) takes no
-- DELETE: the one that holds such rows (one per client: they are split by
-- client_id) is copied without them, emptied and filled again, in this
-- transaction. Returns how many rows it removed; without columnar, rows
-- in columnar tables are left and counted in pending.
CREATE OR REPLACE FUNCTION vmq_pgevents_erase(tbl text, mp text, cid text, upto timestamptz,
                                              columnar boolean DEFAULT true, OUT removed bigint, OUT pending bigint)
LANGUAGE plpgsql AS $f$
DECLARE
  rel constant regclass := to_regclass(quote_ident(tbl));
  k bigint;
  leaf record;
BEGIN
  removed := 0;
  pending := 0;
  IF NOT EXISTS (SELECT 1 FROM pg_partition_tree(rel) t JOIN pg_class c ON c.oid = t.relid
                 JOIN pg_am a ON a.oid = c.relam WHERE t.isleaf AND a.amname = 'columnar') THEN
    -- each partition's client_id index (distributed: the client's shard)
    EXECUTE format('DELETE FROM %I WHERE client_id = $1 AND mountpoint = $2 AND ts <= $3', tbl)
      USING cid, mp, upto;
    GET DIAGNOSTICS removed = ROW_COUNT;
  ELSE
    FOR leaf IN SELECT t.relid::regclass AS rel, coalesce(a.amname = 'columnar', false) AS columnar
                FROM pg_partition_tree(rel) t JOIN pg_class c ON c.oid = t.relid
                LEFT JOIN pg_am a ON a.oid = c.relam
                WHERE t.isleaf ORDER BY t.relid LOOP
      IF NOT leaf.columnar THEN
        EXECUTE format('DELETE FROM %s WHERE client_id = $1 AND mountpoint = $2 AND ts <= $3', leaf.rel)
          USING cid, mp, upto;
        GET DIAGNOSTICS k = ROW_COUNT;
        removed := removed + k;
        CONTINUE;
      END IF;
      -- a columnar table: asked first without a lock (its chunks of other
      -- clients are skipped), locked only where the client has rows
      EXECUTE format('SELECT count(*) FROM %s WHERE client_id = $1 AND mountpoint = $2 AND ts <= $3', leaf.rel)
        INTO k USING cid, mp, upto;
      IF k = 0 THEN
        CONTINUE;
      ELSIF NOT columnar THEN
        pending := pending + k;
        CONTINUE;
      END IF;
      -- no row comes in between the count and the refill
      EXECUTE format('LOCK TABLE %s IN EXCLUSIVE MODE', leaf.rel);
      EXECUTE format('SELECT count(*) FROM %s WHERE client_id = $1 AND mountpoint = $2 AND ts <= $3', leaf.rel)
        INTO k USING cid, mp, upto;
      -- the copy in this session's own temporary schema, named so: no
      -- table of another schema on the search path can stand in for it
      EXECUTE format('CREATE TEMP TABLE vmq_pgev_keep (LIKE %s) ON COMMIT DROP', leaf.rel);
      EXECUTE format('INSERT INTO pg_temp.vmq_pgev_keep SELECT * FROM %s '
                     'WHERE client_id IS DISTINCT FROM $1 OR mountpoint IS DISTINCT FROM $2 OR ts > $3', leaf.rel)
        USING cid, mp, upto;
      EXECUTE format('TRUNCATE %s', leaf.rel);
      -- in vmq_pgevents_compress's order
      EXECUTE format('INSERT INTO %s SELECT * FROM pg_temp.vmq_pgev_keep ORDER BY '
                     'date_bin(''6 hours'', ts, ''2000-01-01 00:00+00''), client_id, ts, node, incarnation, seq',
                     leaf.rel);
      DROP TABLE pg_temp.vmq_pgev_keep;
      removed := removed + k;
    END LOOP;
  END IF;
  IF to_regclass(quote_ident(tbl || '_dead')) IS NOT NULL THEN
    EXECUTE format('DELETE FROM %I WHERE client_id = $1 AND mountpoint = $2 AND ts <= $3', tbl || '_dead')
      USING cid, mp, upto;
    GET DIAGNOSTICS k = ROW_COUNT;
    removed := removed + k;
  END IF;
END
$f$;

-- Erases every stored row of one client, VerneMQ's (mountpoint, client_id):
-- the default mountpoint is ''. Records the erasure in <tbl>_erased and
-- returns how many rows it removed. That client's older events still in a
-- broker's journal are removed as they arrive (vmq_pgevents_forget_late).
CREATE OR REPLACE FUNCTION vmq_pgevents_forget(tbl text, mountpoint text, client_id text)
RETURNS bigint LANGUAGE plpgsql AS $f$
DECLARE
  n bigint;
BEGIN
  IF to_regclass(quote_ident(tbl)) IS NULL THEN
    RAISE EXCEPTION 'vmq_pgevents_forget: there is no table %', tbl;
  END IF;
  IF mountpoint IS NULL OR client_id IS NULL THEN
    RAISE EXCEPTION 'vmq_pgevents_forget: name the client: its mountpoint ('''' for the default one) and client_id';
  END IF;
  -- not beside a compression of the table: its copy of a partition
  -- would bring the rows back
  PERFORM pg_advisory_xact_lock(hashtext('vmq_pgevents compress ' || tbl));
  PERFORM vmq_pgevents_erased_table(tbl);
  n := (vmq_pgevents_erase(tbl, mountpoint, client_id, 'infinity')).removed;
  -- the time of the erasure, not of its transaction's start: older
  -- events of the client that arrive later are removed by it
  EXECUTE format('INSERT INTO %I (erased_at, mountpoint, client_id, rows) VALUES (clock_timestamp(), $1, $2, $3)',
                 tbl || '_erased') USING mountpoint, client_id, n;
  RETURN n;
END
$f$;

-- Rows of clients erased in the last 7 days that arrived after their
-- erasure with a ts before it (events that waited in a broker's journal):
-- removed, and counted in their erasure's rows_later. The plugin calls it
-- at every upkeep (vmq_pgevents_upkeep) without columnar: such rows in a
-- compressed partition (a columnar table to rewrite, which may take long)
-- are only counted there (pending), for the owner to run this function.
-- Skipped while a compression or an erasure of the table runs (the next
-- upkeep does it).
CREATE OR REPLACE FUNCTION vmq_pgevents_forget_late(tbl text, columnar boolean DEFAULT true,
                                                    OUT erased bigint, OUT pending bigint)
LANGUAGE plpgsql AS $f$
DECLARE
  e record;
  r record;
BEGIN
  erased := 0;
  pending := 0;
  IF to_regclass(quote_ident(tbl || '_erased')) IS NULL THEN
    RETURN;
  END IF;
  FOR e IN EXECUTE format('SELECT id, mountpoint, client_id, erased_at FROM %I '
                          'WHERE erased_at > now() - interval ''7 days'' ORDER BY id', tbl || '_erased') LOOP
    IF erased = 0 AND pending = 0 AND NOT pg_try_advisory_xact_lock(hashtext('vmq_pgevents compress ' || tbl)) THEN
      RETURN;
    END IF;
    r := vmq_pgevents_erase(tbl, e.mountpoint, e.client_id, e.erased_at, columnar);
    IF r.removed > 0 THEN
      EXECUTE format('UPDATE %I SET rows_later = rows_later + $1, later_at = now() WHERE id = $2', tbl || '_erased')
        USING r.removed, e.id;
    END IF;
    erased := erased + r.removed;
    pending := pending + r.pending;
  END LOOP;
END
$f$;

-- What the plugin does every minute (and when events need a partition):
-- the partitions (day or hour: made ahead, dropped past keep_seconds;
-- vmq_pgevents_partitions) and the late rows of erased clients (outside
-- columnar tables; a failure there is a warning and leaves the partitions
-- made: pending -1).
CREATE OR REPLACE FUNCTION vmq_pgevents_upkeep(
    tbl text, period text, ahead integer, keep_seconds bigint,
    at timestamptz DEFAULT now(), lo timestamptz DEFAULT NULL, hi timestamptz DEFAULT NULL)
RETURNS TABLE (created integer, dropped text[], erased bigint, pending bigint) LANGUAGE plpgsql AS $f$
BEGIN
  created := 0;
  dropped := '{}';
  IF period IN ('day', 'hour') THEN
    SELECT p.created, p.dropped INTO created, dropped
    FROM vmq_pgevents_partitions(tbl, period, ahead, keep_seconds, at, lo, hi) p;
  END IF;
  BEGIN
    SELECT l.erased, l.pending INTO erased, pending FROM vmq_pgevents_forget_late(tbl, false) l;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'vmq_pgevents_upkeep: late rows of erased clients: %', SQLERRM;
    erased := 0;
    pending := -1;
  END;
  RETURN NEXT;
END
$f$;

-- Roles (docs/personal-data.md): vmq_pgevents_grant and vmq_pgevents_revoke.
--
-- A writer gets INSERT on tbl and <tbl>_dead and three functions of the
-- table's owner (SECURITY DEFINER) that the plugin calls when it may:
-- <tbl>_resume (its own resume point), <tbl>_upkeep (partitions ahead,
-- retention, late rows of erased clients) and <tbl>_compress. Whatever it
-- passes them, they keep the table's own period, make at most 7 periods
-- ahead and no more than 1000 partitions at once, drop no partition younger
-- than the retention of the grant (keep_seconds; 0: none at all), and
-- compress no partition whose period ended less than a period (a day, an
-- hour) ago. Nothing
-- else: it reads no row, makes no object of its own, alters no table.
CREATE OR REPLACE FUNCTION vmq_pgevents_writer_functions(tbl text, owner name, keep_seconds bigint)
RETURNS regprocedure[] LANGUAGE plpgsql AS $f$
DECLARE
  nsp constant text := (SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                        WHERE c.oid = to_regclass(quote_ident(tbl)));
  -- objects made go to the table's schema; pg_catalog is searched first
  path constant text := format('%I, pg_temp', nsp);
  fns regprocedure[];
  f regprocedure;
BEGIN
  -- made anew (a version's may return other columns); granted again by the
  -- caller. (The notices of functions not there yet are not for the caller)
  PERFORM set_config('client_min_messages', 'warning', true);
  EXECUTE format('DROP FUNCTION IF EXISTS %1$I.%2$I(text, bigint, double precision, double precision), '
                 '%1$I.%3$I(text, integer, bigint, timestamptz, timestamptz), %1$I.%4$I(interval, integer)',
                 nsp, tbl || '_resume', tbl || '_upkeep', tbl || '_compress');
  EXECUTE format($d$
    CREATE OR REPLACE FUNCTION %1$I.%2$I(node text, incarnation bigint, lo double precision, hi double precision)
    RETURNS bigint LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = %4$s AS
    $b$#variable_conflict use_column
    BEGIN   -- PL/pgSQL: Citus plans no SQL function with parameters over a distributed table
      RETURN (SELECT coalesce(max(seq), 0) FROM %1$I.%3$I
              WHERE node = $1 AND incarnation = $2 AND ts >= to_timestamp($3) AND ts <= to_timestamp($4));
    END$b$
    $d$, nsp, tbl || '_resume', tbl, path);
  EXECUTE format($d$
    CREATE OR REPLACE FUNCTION %1$I.%2$I(period text, ahead integer, keep_seconds bigint,
                                         lo timestamptz, hi timestamptz)
    RETURNS TABLE (created integer, dropped text[], erased bigint, pending bigint)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = %4$s AS
    $b$
    DECLARE
      -- the table's own period (its newest partition's), whatever is asked
      p text := coalesce((SELECT CASE WHEN l.hi - l.lo <= interval '1 hour' THEN 'hour' ELSE 'day' END
                          FROM %1$I.vmq_pgevents_partition_list(%3$L) l ORDER BY l.lo DESC LIMIT 1),
                         CASE WHEN $1 IN ('day', 'hour') THEN $1 ELSE 'none' END);
      step interval;
      -- the grant's retention: never a younger one (0: nothing dropped)
      keep constant bigint := CASE WHEN %5$s <= 0 OR $3 <= 0 THEN 0 ELSE greatest($3, %5$s) END;
    BEGIN
      step := CASE p WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END;
      IF $4 < now() - 1000 * step OR $5 > now() + 1000 * step THEN
        RAISE EXCEPTION '%%: events from %% to %% would need more than 1000 partitions at once', %2$L, $4, $5;
      END IF;
      RETURN QUERY SELECT * FROM %1$I.vmq_pgevents_upkeep(%3$L, p, least(greatest($2, 0), 7), keep, now(), $4, $5);
    END$b$
    $d$, nsp, tbl || '_upkeep', tbl, path, keep_seconds);
  EXECUTE format($d$
    CREATE OR REPLACE FUNCTION %1$I.%2$I(older_than interval, max_partitions integer)
    RETURNS TABLE (partition text, rows bigint, heap_bytes bigint, columnar_bytes bigint)
    LANGUAGE sql SECURITY DEFINER SET search_path = %4$s AS
    $b$SELECT * FROM %1$I.vmq_pgevents_compress(
         %3$L, greatest($1, interval '1 hour', (SELECT max(l.hi - l.lo) FROM %1$I.vmq_pgevents_partition_list(%3$L) l)),
         now(), $2)$b$
    $d$, nsp, tbl || '_compress', tbl, path);
  fns := ARRAY[format('%I.%I(text, bigint, double precision, double precision)', nsp, tbl || '_resume'),
               format('%I.%I(text, integer, bigint, timestamptz, timestamptz)', nsp, tbl || '_upkeep'),
               format('%I.%I(interval, integer)', nsp, tbl || '_compress')]::regprocedure[];
  FOREACH f IN ARRAY fns LOOP
    EXECUTE format('ALTER FUNCTION %s OWNER TO %I', f, owner);
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
  END LOOP;
  RETURN fns;
END
$f$;

-- The row-level security policy of one reader of a table
CREATE OR REPLACE FUNCTION vmq_pgevents_reader_policy(role name) RETURNS name LANGUAGE sql IMMUTABLE AS $f$
  SELECT (CASE WHEN octet_length('vmq_pgevents reader ' || role) <= 63 THEN 'vmq_pgevents reader ' || role
               ELSE 'vmq_pgevents reader ' || md5(role) END)::name
$f$;

-- The readers of tbl (vmq_pgevents_grant ... 'reader') and the rows each sees
CREATE OR REPLACE FUNCTION vmq_pgevents_readers(tbl text) RETURNS TABLE (role name, sees text)
LANGUAGE sql STABLE AS $f$
  -- a limited reader that bypasses row-level security (BYPASSRLS given
  -- after its grant, or a superuser) reads every row whatever its policy
  SELECT r.rolname, CASE WHEN (r.rolbypassrls OR r.rolsuper) AND pg_get_expr(p.polqual, p.polrelid) <> 'true'
                         THEN 'every row: the role bypasses row-level security (not '
                              || pg_get_expr(p.polqual, p.polrelid) || ')'
                         ELSE pg_get_expr(p.polqual, p.polrelid) END
  FROM pg_policy p CROSS JOIN LATERAL unnest(p.polroles) u(oid) JOIN pg_roles r ON r.oid = u.oid
  WHERE p.polrelid = to_regclass(quote_ident(tbl)) AND p.polname = vmq_pgevents_reader_policy(r.rolname)
  ORDER BY 1
$f$;

-- What a reader may read: the table, <tbl>_connections and the client
-- questions (they run with the caller's rights: the policy applies; the
-- view's <tbl>_node_end tells how a node's incarnation ended), and
-- a reader of every mountpoint (whole) <tbl>_dead too
CREATE OR REPLACE FUNCTION vmq_pgevents_reader_objects(tbl text, role name, yes boolean, whole boolean)
RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
  verb constant text := CASE WHEN yes THEN 'GRANT %s ON %s %s TO %I' ELSE 'REVOKE %s ON %s %s FROM %I' END;
  f regprocedure;
BEGIN
  EXECUTE format(verb, 'SELECT', 'TABLE', quote_ident(tbl), role);
  IF to_regclass(quote_ident(tbl || '_dead')) IS NOT NULL AND (whole OR NOT yes) THEN
    EXECUTE format(verb, 'SELECT', 'TABLE', quote_ident(tbl || '_dead'), role);
  END IF;
  IF to_regclass(quote_ident(tbl || '_connections')) IS NOT NULL THEN
    EXECUTE format(verb, 'SELECT', 'TABLE', quote_ident(tbl || '_connections'), role);
  END IF;
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.proname IN (tbl || '_failed_logins', tbl || '_timeline', tbl || '_connection', tbl || '_journey',
                               tbl || '_node_end')
             AND p.pronamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(quote_ident(tbl))) LOOP
    EXECUTE format(verb, 'EXECUTE', 'FUNCTION', f, role);
  END LOOP;
  -- the record's completeness: a reader of every row only
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
           WHERE p.proname = tbl || '_completeness' AND (whole OR NOT yes)
             AND p.pronamespace = (SELECT relnamespace FROM pg_class WHERE oid = to_regclass(quote_ident(tbl))) LOOP
    EXECUTE format(verb, 'EXECUTE', 'FUNCTION', f, role);
  END LOOP;
END
$f$;

-- vmq_pgevents_grant(tbl, role, 'writer' [, retention => interval]): what
-- the plugin needs with auto_create = off (above); retention NULL: it drops
-- no partition. vmq_pgevents_grant(tbl, role, 'reader',
-- mountpoints): the table, <tbl>_connections and the client questions,
-- limited by row-level security to the rows of those mountpoints ('' is
-- the default one); NULL: every row, and <tbl>_dead. Each reader has a
-- policy; row-level security is on while one of them is limited. Run as
-- the table's owner or a superuser.
CREATE OR REPLACE FUNCTION vmq_pgevents_grant(tbl text, role name, what text, mountpoints text[] DEFAULT NULL,
                                              retention interval DEFAULT NULL)
RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
  rel constant regclass := to_regclass(quote_ident(tbl));
  nsp text;
  nsp_oid oid;
  owner name;
  rls boolean;
  bypass boolean;
  others text;
  pol name;
  obj record;
BEGIN
  IF rel IS NULL THEN
    RAISE EXCEPTION 'vmq_pgevents_grant: there is no table %', tbl;
  END IF;
  -- (a superuser bypasses row-level security as BYPASSRLS does)
  SELECT r.rolbypassrls OR r.rolsuper INTO bypass FROM pg_roles r WHERE r.rolname = role;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'vmq_pgevents_grant: there is no role % (CREATE ROLE % LOGIN first)', role, role;
  END IF;
  SELECT n.nspname, n.oid, pg_get_userbyid(c.relowner), c.relrowsecurity INTO nsp, nsp_oid, owner, rls
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = rel;
  IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
      'vmq_pgevents_grant: only the owner of %I (%I) or a superuser may grant on it', tbl, owner);
  END IF;
  IF retention IS NOT NULL AND what <> 'writer' THEN
    RAISE EXCEPTION 'vmq_pgevents_grant: a retention is for a writer';
  END IF;
  IF pg_has_role(role, owner, 'USAGE') THEN
    RAISE EXCEPTION 'vmq_pgevents_grant: % owns % (or is a member of its owner): it has every right already', role, tbl;
  END IF;
  IF vmq_pgevents_distributed(tbl) THEN
    -- one connection per worker: Citus makes no function after a
    -- parallel command (a grant on the shards) in the same transaction
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
  END IF;
  IF what = 'writer' THEN
    IF mountpoints IS NOT NULL THEN
      RAISE EXCEPTION 'vmq_pgevents_grant: a writer writes the events of every mountpoint (no mountpoints for a writer)';
    END IF;
    IF retention IS NOT NULL AND retention < interval '1 hour' THEN
      RAISE EXCEPTION 'vmq_pgevents_grant: a retention of at least an hour, or NULL (drop nothing)';
    END IF;
    -- PostgreSQL takes no COPY into a table with row-level security from a
    -- role subject to it: once readers are limited, the writer must bypass
    -- it, which only a superuser can give (ALTER ROLE ... BYPASSRLS)
    IF rls AND NOT bypass THEN
      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
        'vmq_pgevents_grant: %I has readers limited by row-level security, and PostgreSQL takes no COPY '
        'into it from a role subject to that: a superuser runs ALTER ROLE %I BYPASSRLS; first', tbl, role);
    END IF;
    -- the owner's functions run names of this schema: no one else may make
    -- objects there that would stand in for them
    SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname) INTO others
    FROM pg_roles r
    WHERE r.rolname NOT LIKE 'pg\_%' AND NOT r.rolsuper AND has_schema_privilege(r.oid, nsp_oid, 'CREATE')
      AND NOT pg_has_role(r.oid, owner, 'USAGE');
    IF others IS NOT NULL THEN
      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
        'vmq_pgevents_grant: %s may create objects in the schema %I, where the functions the writer calls as '
        'the owner of %I look names up: REVOKE CREATE ON SCHEMA %I FROM %s; first', others, nsp, tbl, nsp, others);
    END IF;
    IF NOT has_schema_privilege(role, nsp_oid, 'USAGE') THEN
      EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', nsp, role);
    END IF;
    PERFORM vmq_pgevents_erased_table(tbl);
    EXECUTE format('GRANT INSERT ON %I, %I TO %I', tbl, tbl || '_dead', role);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I',
                   array_to_string(vmq_pgevents_writer_functions(
                     tbl, owner, coalesce(extract(epoch FROM retention)::bigint, 0))::text[], ', '), role);
    RETURN format('%s may write events into %s and %s, read its resume point, keep the partitions%s and compress '
                  'them (auto_create = off)', role, tbl, tbl || '_dead',
                  CASE WHEN retention IS NULL THEN ' (dropping none)'
                       ELSE format(' (dropping those older than %s)', retention) END);
  ELSIF what = 'reader' THEN
    IF mountpoints IS NOT NULL AND current_setting('server_version_num')::integer < 150000 THEN
      RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE =
        'vmq_pgevents_grant: a reader limited to mountpoints needs PostgreSQL 15 or later '
        '(views with the caller''s rights)';
    END IF;
    pol := vmq_pgevents_reader_policy(role);
    IF mountpoints IS NOT NULL AND bypass THEN
      RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
        'vmq_pgevents_grant: %I bypasses row-level security (BYPASSRLS, or a superuser): it would read the rows of '
        'every mountpoint. A superuser runs ALTER ROLE %I NOBYPASSRLS; first', role, role);
    END IF;
    IF mountpoints IS NOT NULL AND NOT rls THEN
      -- every role that may write into it must bypass row-level security
      SELECT string_agg(quote_ident(r.rolname), ', ' ORDER BY r.rolname) INTO others
      FROM pg_roles r
      WHERE r.rolname NOT LIKE 'pg\_%' AND NOT r.rolsuper AND NOT r.rolbypassrls
        AND has_table_privilege(r.oid, rel, 'INSERT') AND NOT pg_has_role(r.oid, owner, 'USAGE');
      IF others IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
          'vmq_pgevents_grant: %s may write into %I but not bypass row-level security, which a reader limited to '
          'mountpoints turns on: PostgreSQL would refuse its COPY. A superuser runs ALTER ROLE %s BYPASSRLS; first '
          '(it grants no row to read)', others, tbl, others);
      END IF;
      EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', tbl);
    END IF;
    IF mountpoints IS NOT NULL THEN
      -- the view must run with the reader's rights (a table whose views
      -- were made on PostgreSQL 14 or older: apply schema.sql again)
      IF NOT coalesce((SELECT 'security_invoker=true' = ANY (c.reloptions) FROM pg_class c
                       WHERE c.oid = to_regclass(quote_ident(tbl || '_connections'))), true) THEN
        RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = format(
          'vmq_pgevents_grant: %I runs with its owner''s rights: ALTER VIEW %I SET (security_invoker = true); first',
          tbl || '_connections', tbl || '_connections');
      END IF;
      -- row-level security is the table's only: nothing else of it to read
      -- by name (its partitions, the dead letters, the erasures), now or
      -- later (default privileges of the owner)
      IF EXISTS (SELECT 1 FROM pg_default_acl d CROSS JOIN LATERAL aclexplode(d.defaclacl) a
                 WHERE d.defaclrole = to_regrole(owner) AND d.defaclobjtype = 'r' AND a.privilege_type = 'SELECT'
                   AND (a.grantee = 0 OR pg_has_role(role, a.grantee, 'USAGE'))) THEN
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
          'vmq_pgevents_grant: %I (or PUBLIC, or a role it is a member of) reads every table %I makes, its '
          'partitions too, which row-level security does not cover: ALTER DEFAULT PRIVILEGES FOR ROLE %I ... '
          'REVOKE SELECT ON TABLES FROM ...; first', role, owner, owner);
      END IF;
      FOR obj IN SELECT t.relid::regclass AS part FROM pg_partition_tree(rel) t WHERE t.relid <> rel
                 UNION ALL SELECT to_regclass(quote_ident(tbl || x)) FROM unnest(ARRAY['_dead', '_erased']) x
                           WHERE to_regclass(quote_ident(tbl || x)) IS NOT NULL LOOP
        EXECUTE format('REVOKE ALL ON %s FROM %I', obj.part, role);
        IF has_table_privilege(role, obj.part, 'SELECT') THEN
          RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
            'vmq_pgevents_grant: %I may read %s through another role (or PUBLIC), which row-level security does '
            'not cover: revoke that first', role, obj.part);
        END IF;
      END LOOP;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = rel AND polname = pol) THEN
      EXECUTE format('DROP POLICY %I ON %I', pol, tbl);
    END IF;
    IF mountpoints IS NULL THEN
      EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO %I USING (true)', pol, tbl, role);
    ELSE
      EXECUTE format('CREATE POLICY %I ON %I FOR SELECT TO %I USING (mountpoint = ANY (%L::text[]))',
                     pol, tbl, role, mountpoints);
    END IF;
    IF NOT has_schema_privilege(role, nsp_oid, 'USAGE') THEN
      EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', nsp, role);
    END IF;
    PERFORM vmq_pgevents_reader_objects(tbl, role, false, false);
    PERFORM vmq_pgevents_reader_objects(tbl, role, true, mountpoints IS NULL);
    RETURN format('%s may read the rows of %s', role,
                  CASE WHEN mountpoints IS NULL THEN 'every mountpoint'
                       ELSE 'mountpoints ' || array_to_string(mountpoints, ', ') END);
  END IF;
  RAISE EXCEPTION 'vmq_pgevents_grant: grant a ''writer'' or a ''reader'', not %', what;
END
$f$;

-- Undoes vmq_pgevents_grant for that role (BYPASSRLS stays: ALTER ROLE
-- ... NOBYPASSRLS). Row-level security is turned off with the last reader
-- limited to mountpoints.
CREATE OR REPLACE FUNCTION vmq_pgevents_revoke(tbl text, role name, what text) RETURNS text LANGUAGE plpgsql AS $f$
DECLARE
  rel constant regclass := to_regclass(quote_ident(tbl));
  owner name;
  f regprocedure;
BEGIN
  IF rel IS NULL THEN
    RAISE EXCEPTION 'vmq_pgevents_revoke: there is no table %', tbl;
  END IF;
  SELECT pg_get_userbyid(c.relowner) INTO owner FROM pg_class c WHERE c.oid = rel;
  IF NOT pg_has_role(current_user, owner, 'USAGE') THEN
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE = format(
      'vmq_pgevents_revoke: only the owner of %I (%I) or a superuser may revoke on it', tbl, owner);
  END IF;
  IF vmq_pgevents_distributed(tbl) THEN
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
  END IF;
  IF what = 'writer' THEN
    EXECUTE format('REVOKE INSERT ON %I FROM %I', tbl, role);
    IF to_regclass(quote_ident(tbl || '_dead')) IS NOT NULL THEN
      EXECUTE format('REVOKE INSERT ON %I FROM %I', tbl || '_dead', role);
    END IF;
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.proname IN (tbl || '_resume', tbl || '_upkeep', tbl || '_compress')
               AND p.pronamespace = (SELECT relnamespace FROM pg_class WHERE oid = rel) LOOP
      EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM %I', f, role);
    END LOOP;
    RETURN format('%s may no longer write into %s', role, tbl);
  ELSIF what = 'reader' THEN
    IF EXISTS (SELECT 1 FROM pg_policy WHERE polrelid = rel AND polname = vmq_pgevents_reader_policy(role)) THEN
      EXECUTE format('DROP POLICY %I ON %I', vmq_pgevents_reader_policy(role), tbl);
    END IF;
    PERFORM vmq_pgevents_reader_objects(tbl, role, false, false);
    -- off with the last reader limited to mountpoints (and no policy of another's)
    IF NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = rel
                   AND NOT (p.polname LIKE 'vmq\_pgevents reader %' AND pg_get_expr(p.polqual, p.polrelid) = 'true')) THEN
      EXECUTE format('ALTER TABLE %I DISABLE ROW LEVEL SECURITY', tbl);
    END IF;
    RETURN format('%s may no longer read %s', role, tbl);
  END IF;
  RAISE EXCEPTION 'vmq_pgevents_revoke: revoke a ''writer'' or a ''reader'', not %', what;
END
$f$;

DO $vmq_pgevents$
DECLARE
  t text := coalesce(nullif(current_setting('vmq_pgevents.table', true), ''), 'vmq_events');
  part text := coalesce(nullif(current_setting('vmq_pgevents.partition', true), ''), 'day');
  distribute text := coalesce(nullif(current_setting('vmq_pgevents.distribute', true), ''), 'auto');
  citus constant boolean := EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus');
  workers integer := 0;
  dist boolean;
  kind "char";
  twice boolean;
BEGIN
  IF part NOT IN ('day', 'hour', 'none') THEN
    RAISE EXCEPTION 'vmq_pgevents.partition must be day, hour or none, not %', part;
  END IF;
  IF distribute NOT IN ('off', 'on', 'auto') THEN
    RAISE EXCEPTION 'vmq_pgevents.distribute must be off, on or auto, not %', distribute;
  END IF;
  IF octet_length(t) > 49 THEN
    RAISE EXCEPTION 'vmq_pgevents: the table name may have at most 49 bytes (<table>_failed_logins must fit in 63)';
  END IF;
  SELECT c.relkind INTO kind FROM pg_class c WHERE c.oid = to_regclass(quote_ident(t));
  -- distribute: a new table is made a Citus distributed table on
  -- client_id with distribute = on, or auto on a server that has the
  -- extension citus and active workers (docs/scale-out.md); a
  -- table that exists stays what it is
  IF citus THEN
    EXECUTE 'SELECT count(*) FROM citus_get_active_worker_nodes()' INTO workers;
  END IF;
  IF kind IS NULL THEN
    dist := distribute = 'on' OR (distribute = 'auto' AND citus AND workers > 0 AND part <> 'none');
    IF dist AND NOT citus THEN
      RAISE EXCEPTION USING ERRCODE = 'feature_not_supported', MESSAGE =
        'vmq_pgevents: distribute = on, but this database has no Citus (the extension citus, on a server that '
        'preloads it): nothing is written until then, events wait in the journal. Set distribute = off or auto, '
        'or make this server a Citus coordinator (docs/scale-out.md)';
    END IF;
    IF dist AND part = 'none' THEN
      RAISE EXCEPTION 'vmq_pgevents: distribute = on needs partition = day or hour, not none';
    END IF;
  ELSE
    dist := vmq_pgevents_distributed(t);
    IF distribute = 'on' AND NOT dist THEN
      RAISE EXCEPTION USING ERRCODE = 'object_not_in_prerequisite_state', MESSAGE = format(
        'vmq_pgevents: distribute = on, but %I is a local table (made before, or with distribute = off): '
        'nothing is written until then, events wait in the journal. Either set distribute = auto (it stays '
        'local), or distribute it once, as its owner: SELECT vmq_pgevents_distribute(%L); '
        '(docs/scale-out.md)', t, t);
    END IF;
  END IF;
  IF dist THEN
    -- one connection per worker in this transaction: Citus refuses to
    -- make the views and functions (below) after a parallel operation on
    -- a distributed table (making shards) in the same transaction
    PERFORM set_config('citus.multi_shard_modify_mode', 'sequential', true);
  END IF;
  IF kind = 'r' AND part <> 'none' THEN
    RAISE EXCEPTION USING MESSAGE = format(
      'vmq_pgevents: %I is a plain table (an earlier version, or partition = none) and partition = %s '
      'needs a partitioned one; nothing is written until then, events wait in the journal. Either set '
      'partition = none, or rename it (ALTER TABLE %I RENAME TO %I; ALTER TABLE %I RENAME TO %I;) and '
      'the plugin makes the partitioned table at its next connect; then move the rows: '
      'docs/months-of-data.md', t, part, t, t || '_old', t || '_dead', t || '_old_dead');
  END IF;
  -- partitioned, the key and the indexes are each partition's own
  -- (vmq_pgevents_hot_indexes); a plain table has them itself
  EXECUTE format($ddl$
    CREATE TABLE IF NOT EXISTS %I (
      node              text        NOT NULL,  -- Erlang node name of the broker
      incarnation       bigint      NOT NULL,  -- when the plugin was loaded (µs since 1970)
      seq               bigint      NOT NULL,  -- per node and incarnation, in hook call order
      ts                timestamptz NOT NULL,  -- broker wall clock at the hook call (µs)
      hook              text        NOT NULL,  -- e.g. on_publish, auth_on_register_m5
      conn_id           bigint,                -- one MQTT connection (docs/queries.md)
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
      payload_hash      bigint                 -- of the stored payload (message journeys)
      %s
    )%s$ddl$, t,
    CASE WHEN part = 'none' THEN ', PRIMARY KEY (node, incarnation, seq)' ELSE '' END,
    CASE WHEN part = 'none' THEN '' ELSE ' PARTITION BY RANGE (ts)' END);
  IF kind IS NULL AND dist THEN
    -- before its partitions: each is distributed as it is attached
    EXECUTE 'SELECT create_distributed_table($1, ''client_id'')' USING to_regclass(quote_ident(t));
  END IF;
  IF part <> 'none' THEN
    PERFORM vmq_pgevents_partitions(t, part, 2, 0);
  END IF;
  -- a table of an earlier version gains the column (no rewrite: NULL);
  -- asked first, as a distributed table would take even a no-op ALTER to
  -- every shard
  IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(t))
                 AND attname = 'payload_hash' AND NOT attisdropped) THEN
    EXECUTE format('ALTER TABLE %I ADD COLUMN payload_hash bigint', t);
  END IF;
  -- the indexes on the table itself: a plain table, or one partitioned by
  -- an earlier version (its key and indexes are its partitions' too;
  -- vmq_pgevents_split_indexes turns it into this version's layout)
  IF EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass(quote_ident(t))) THEN
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
    -- the plugin's own rows: how a connection ended, completeness
    IF to_regclass(quote_ident(t || '_plugin_idx')) IS NULL THEN
      PERFORM vmq_pgevents_plugin_index(t, t || '_plugin_idx');
    END IF;
    -- publishes and deliveries: the deliveries of a publish (message journey)
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %I (payload_hash, ts) WHERE payload_hash IS NOT NULL '
                   'AND hook IN (''on_publish'', ''on_publish_m5'', ''on_deliver'', ''on_deliver_m5'')',
                   t || '_payload_hash_idx', t);
  END IF;
  -- rows PostgreSQL refused for their data (e.g. a CHECK a DBA added):
  -- the same columns without constraints or indexes, plus the error
  -- (distributed: a Citus reference table, a copy on every node, as its
  -- rows are few and may have no client_id)
  IF to_regclass(quote_ident(t || '_dead')) IS NULL THEN
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS, '
                   'dead_error text, dead_sqlstate text, dead_at timestamptz NOT NULL DEFAULT now())',
                   t || '_dead', t);
    IF dist THEN
      EXECUTE 'SELECT create_reference_table($1)' USING to_regclass(quote_ident(t || '_dead'));
    END IF;
  ELSIF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = to_regclass(quote_ident(t || '_dead'))
                    AND attname = 'payload_hash' AND NOT attisdropped) THEN
    EXECUTE format('ALTER TABLE %I ADD COLUMN payload_hash bigint', t || '_dead');
  END IF;
  -- an event is dead-lettered once: a dead-letter COPY whose answer was
  -- lost may have committed, and the writer's next try then collides
  -- (or waits for it, and collides). Not unique where an earlier version
  -- wrote a row twice.
  -- (found by its columns: a table renamed away keeps its index's name)
  IF NOT EXISTS (SELECT 1 FROM pg_index i
                 WHERE i.indrelid = to_regclass(quote_ident(t || '_dead'))
                   AND i.indkey::int2[] = (SELECT array_agg(a.attnum ORDER BY p.o)
                                           FROM unnest(ARRAY['incarnation', 'seq', 'node']) WITH ORDINALITY p(n, o)
                                           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attname = p.n)) THEN
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I GROUP BY incarnation, seq, node HAVING count(*) > 1)',
                   t || '_dead') INTO twice;
    EXECUTE format('CREATE %s INDEX %s ON %I (incarnation, seq, node)',
                   CASE WHEN twice THEN '' ELSE 'UNIQUE' END,
                   CASE WHEN to_regclass(quote_ident(t || '_dead_key')) IS NULL
                        THEN quote_ident(t || '_dead_key') ELSE '' END, t || '_dead');
  END IF;
  PERFORM vmq_pgevents_erased_table(t);
  PERFORM vmq_pgevents_views(t);
END
$vmq_pgevents$;
