%% @doc Tenants and personal data (docs/personal-data.md): readers limited
%% to mountpoints by row-level security through the table, the view and
%% every client question; a writer role with auto_create = off that records
%% through the real NIF, keeps partitions, retention and compression, and
%% can do nothing else; vmq_pgevents_forget in hot, compressed and dead-letter
%% rows, and again for rows that arrive from the journal after it. Real NIF,
%% real PostgreSQL with the Citus build (columnar).
%%
%% The Citus cluster tests (87) run readers/1, writer/1 and forget/1 on
%% a distributed table.
-module(vmq_pgevents_88_access_tests).
-include_lib("eunit/include/eunit.hrl").

-export([readers/1, writer/1, forget/1]).

readers_test_() -> {timeout, 120, fun() -> readers(local) end}.
writer_test_() -> {timeout, 180, fun() -> writer(local) end}.
forget_test_() -> {timeout, 120, fun() -> forget(local) end}.

%% local | distributed: what schema.sql made (distributed: on the
%% coordinator of the 87 tests' cluster)
kind(T) ->
    case trim("SELECT vmq_pgevents_distributed('" ++ T ++ "')") of
        "t" -> distributed;
        "f" -> local
    end.

sql(Sql) -> pgev_pg:sql(Sql).
scalar(Sql) -> pgev_pg:scalar(Sql).
trim(Sql) -> string:trim(sql(Sql)).

%% Sql run as Role (SET ROLE: row-level security and privileges are the role's)
%% (an error: its message)
as(Role, Sql) -> psql(["-c", "SET ROLE " ++ Role, "-c", Sql]).

%% Sql as the test's superuser (an error: its message)
try_sql(Sql) -> psql(["-c", Sql]).

psql(Args) ->
    try pgev_pg:pg("psql", [pgev_pg:dir(), "-Atq" | Args]) of
        Out -> string:trim(Out)
    catch error:{command_failed, _, Err} -> string:trim(binary_to_list(Err))
    end.

%% a role made afresh (what an earlier run left of it dropped first)
role(Role) ->
    sql("DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '" ++ Role ++ "') THEN "
        "EXECUTE 'DROP OWNED BY " ++ Role ++ "'; EXECUTE 'DROP ROLE " ++ Role ++ "'; END IF; END $$; "
        "CREATE ROLE " ++ Role ++ " LOGIN").

make_table(T) ->
    vmq_pgevents_85_compress_tests:make_table(T),
    sql("DROP TABLE IF EXISTS " ++ T ++ "_erased").

%% Two tenants, each with a dev-1 that logs in, publishes twice (delivered
%% to a backend of its tenant) and goes offline, and a failed login of
%% tenant-b's dev-1; rows of node n1, incarnation 1, in today's partition.
two_tenants(T) ->
    sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, username, "
        "peer_addr, peer_port, qos, topic, payload, payload_size, payload_truncated, payload_hash) "
        "SELECT 'n1', 1, row_number() OVER (ORDER BY t, k), now() - interval '1 minute' + t, hook, conn, mp, "
        "       cid, 'u', '10.0.0.1', 1000, q, topic, payload, length(payload), false, "
        "       CASE WHEN payload IS NOT NULL THEN hashtextextended(encode(payload, 'hex'), 0) END "
        "FROM (VALUES (1, 'tenant-a'), (2, 'tenant-b')) m(n, mp) "
        "CROSS JOIN LATERAL (VALUES "
        "  (0, m.n * interval '1 s', 'auth_on_register', m.n, 'dev-1', NULL::smallint, NULL, NULL::bytea),"
        "  (1, m.n * interval '1 s' + interval '1 ms', 'on_register', m.n, 'dev-1', NULL, NULL, NULL),"
        "  (2, m.n * interval '1 s' + interval '2 ms', 'on_publish', m.n, 'dev-1', 1, 't', convert_to(mp || '-1', 'UTF8')),"
        "  (3, m.n * interval '1 s' + interval '3 ms', 'on_deliver', 10 + m.n, 'backend', 1, 't', convert_to(mp || '-1', 'UTF8')),"
        "  (4, m.n * interval '1 s' + interval '4 ms', 'on_publish', m.n, 'dev-1', 1, 't', convert_to(mp || '-2', 'UTF8')),"
        "  (5, m.n * interval '1 s' + interval '5 ms', 'on_deliver', 10 + m.n, 'backend', 1, 't', convert_to(mp || '-2', 'UTF8')),"
        "  (6, m.n * interval '1 s' + interval '6 ms', 'on_client_offline', m.n, 'dev-1', NULL, NULL, NULL),"
        "  (7, m.n * interval '1 s' + interval '10 ms', 'auth_on_register', 20 + m.n, 'dev-1', NULL, NULL, NULL)"
        ") e(k, t, hook, conn, cid, q, topic, payload) "
        "WHERE NOT (k = 7 AND mp = 'tenant-a')").

%% What a reader of tenant-a sees through the table, the connections view
%% and each client question: tenant-a's rows only. A reader of every
%% mountpoint sees both; a partition, <table>_dead and a role without a
%% grant see nothing; the grants outlive the views being made again.
readers(Kind) ->
        T = "acc_rd",
        make_table(T),
        Kind = kind(T),
        two_tenants(T),
        [role(R) || R <- ["acc_ra", "acc_rall", "acc_none", "acc_plain", "acc_hand"]],
        Rls = fun() -> trim("SELECT relrowsecurity FROM pg_class WHERE oid = '" ++ T ++ "'::regclass") end,
        %% a reader of every mountpoint: no row-level security
        ?assertEqual("acc_rall may read the rows of every mountpoint",
                     trim("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_rall', 'reader')")),
        ?assertEqual("f", Rls()),
        %% a role that may write but not bypass row-level security: a
        %% limited reader's grant (which turns it on) is refused, naming it
        sql("GRANT INSERT ON " ++ T ++ " TO acc_plain"),
        ?assertMatch("ERROR:  vmq_pgevents_grant: acc_plain may write into acc_rd but not bypass" ++ _,
                     try_sql("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_ra', 'reader', ARRAY['tenant-a'])")),
        ?assertEqual("f", Rls()),
        sql("REVOKE INSERT ON " ++ T ++ " FROM acc_plain"),
        %% the owner's default privileges would give it every new partition
        %% (which row-level security does not cover): refused
        sql("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO acc_ra"),
        ?assertMatch("ERROR:  vmq_pgevents_grant: acc_ra (or PUBLIC, or a role it is a member of) reads every table" ++ _,
                     try_sql("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_ra', 'reader', ARRAY['tenant-a'])")),
        sql("ALTER DEFAULT PRIVILEGES REVOKE SELECT ON TABLES FROM acc_ra"),
        %% a role that bypasses row-level security would read every
        %% mountpoint whatever its policy: refused
        sql("ALTER ROLE acc_ra BYPASSRLS"),
        ?assertMatch("ERROR:  vmq_pgevents_grant: acc_ra bypasses row-level security (BYPASSRLS, or a superuser)" ++ _,
                     try_sql("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_ra', 'reader', ARRAY['tenant-a'])")),
        sql("ALTER ROLE acc_ra NOBYPASSRLS"),
        %% a partition it was given by name is taken away by the grant
        Part = trim("SELECT name FROM vmq_pgevents_partition_list('" ++ T ++ "') WHERE lo <= now() AND hi > now()"),
        sql("GRANT SELECT ON " ++ Part ++ ", " ++ T ++ "_dead TO acc_ra"),
        ?assertEqual("15", as("acc_ra", "SELECT count(*) FROM " ++ Part)),
        ?assertEqual("acc_ra may read the rows of mountpoints tenant-a",
                     trim("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_ra', 'reader', ARRAY['tenant-a'])")),
        ?assertEqual("t", Rls()),
        ?assertEqual("acc_ra|(mountpoint = ANY ('{tenant-a}'::text[]))\nacc_rall|true",
                     trim("SELECT role || '|' || sees FROM vmq_pgevents_readers('" ++ T ++ "')")),
        %% BYPASSRLS given after the grant: the listing says what it reads
        sql("ALTER ROLE acc_ra BYPASSRLS"),
        ?assertEqual("acc_ra|every row: the role bypasses row-level security (not (mountpoint = ANY "
                     "('{tenant-a}'::text[])))",
                     trim("SELECT role || '|' || sees FROM vmq_pgevents_readers('" ++ T ++ "') WHERE role = 'acc_ra'")),
        sql("ALTER ROLE acc_ra NOBYPASSRLS"),
        Sees = fun(Role) ->
            [as(Role, "SELECT string_agg(DISTINCT coalesce(mountpoint, 'NULL'), ',') FROM " ++ T),
             as(Role, "SELECT string_agg(DISTINCT mountpoint, ',') FROM " ++ T ++ "_connections"),
             as(Role, "SELECT string_agg(DISTINCT mountpoint, ',') FROM " ++ T ++ "_failed_logins('-infinity')"),
             as(Role, "SELECT count(*) FROM " ++ T ++ "_timeline('dev-1', mountpoint => 'tenant-a')"),
             as(Role, "SELECT count(*) FROM " ++ T ++ "_timeline('dev-1', mountpoint => 'tenant-b')"),
             as(Role, "SELECT count(*) FROM " ++ T ++ "_connection('n1', 1, 2)"),
             as(Role, "SELECT count(*) || '/' || count(to_client_id) FROM " ++ T ++
                      "_journey('dev-1', '-infinity', mountpoint => 'tenant-a')"),
             as(Role, "SELECT count(*) || '/' || count(to_client_id) FROM " ++ T ++
                      "_journey('dev-1', '-infinity', mountpoint => 'tenant-b')")]
        end,
        ?assertEqual(["tenant-a", "tenant-a", "", "5", "0", "0", "2/2", "0/0"], Sees("acc_ra")),
        ?assertEqual(["tenant-a,tenant-b", "tenant-a,tenant-b", "tenant-b", "5", "6", "5", "2/2", "2/2"],
                     Sees("acc_rall")),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_ra", "SELECT count(*) FROM " ++ Part)),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_ra", "SELECT count(*) FROM " ++ T ++ "_dead")),
        ?assertEqual("0", as("acc_rall", "SELECT count(*) FROM " ++ T ++ "_dead")),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_none", "SELECT count(*) FROM " ++ T)),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_none", "SELECT count(*) FROM " ++ T ++ "_connections")),
        %% the views made again (a new version of them): the grants too,
        %% those given by hand as well
        sql("GRANT SELECT ON " ++ T ++ ", " ++ T ++ "_connections TO acc_hand"),
        sql("COMMENT ON VIEW " ++ T ++ "_connections IS 'an older version'; "
            "SELECT vmq_pgevents_views('" ++ T ++ "')"),
        ?assertEqual(["tenant-a", "tenant-a", "", "5", "0", "0", "2/2", "0/0"], Sees("acc_ra")),
        %% how a connection without an end row ended comes from the plugin's
        %% rows (no mountpoint): a limited reader is told it (by a function
        %% of the owner's) without seeing them; on a Citus cluster, where
        %% the view cannot call it, told 'unknown' (docs/queries.md)
        sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, client_id, extra) VALUES "
            "('n1', 1, 100, now(), 'pgevents_stop', '', NULL)"),
        Ended = "SELECT string_agg(DISTINCT ended_how, ',') FROM " ++ T ++ "_connections WHERE client_id = 'backend'",
        ?assertEqual(case Kind of local -> "node stopped"; distributed -> "unknown" end, as("acc_ra", Ended)),
        ?assertEqual("node stopped", as("acc_rall", Ended)),
        ?assertEqual("0", as("acc_ra", "SELECT count(*) FROM " ++ T ++ " WHERE hook LIKE 'pgevents%'")),
        %% (no policy of its own: no row, but no refusal)
        ?assertEqual("0", as("acc_hand", "SELECT count(*) FROM " ++ T ++ "_connections")),
        sql("DELETE FROM " ++ T ++ " WHERE hook = 'pgevents_stop'"),
        ?assertEqual("unknown", as("acc_ra", Ended)),
        %% revoked: nothing; the last one gone, row-level security off
        ?assertEqual("acc_ra may no longer read acc_rd", trim("SELECT vmq_pgevents_revoke('" ++ T ++ "', 'acc_ra', 'reader')")),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_ra", "SELECT count(*) FROM " ++ T)),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_ra", "SELECT count(*) FROM " ++ T ++ "_timeline('dev-1', mountpoint => 'tenant-a')")),
        ?assertEqual("f", Rls()),
        ?assertEqual("15", as("acc_rall", "SELECT count(*) FROM " ++ T)),
        trim("SELECT vmq_pgevents_revoke('" ++ T ++ "', 'acc_rall', 'reader')"),
        ?assertMatch("ERROR:  permission denied" ++ _, as("acc_rall", "SELECT count(*) FROM " ++ T ++ "_dead")),
        ?assertMatch("ERROR:  vmq_pgevents_grant: grant a 'writer' or a 'reader', not admin" ++ _,
                     try_sql("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_ra', 'admin')")).

%% The plugin as a writer role of vmq_pgevents_grant, auto_create = off,
%% on a table of several days with a reader limited by row-level security:
%% it records the hooks, makes the partitions ahead, drops the one past
%% the retention and compresses the one past compress_after, all through
%% the owner's functions; it can read no row, make no object, alter nothing.
writer(Kind) ->
        T = "acc_wr",
        make_table(T),
        Kind = kind(T),
        role("acc_w"),
        role("acc_rb"),
        %% days of partitions: 5 days ago to today, one row 5 and one 2 days ago;
        %% none ahead of today (the writer makes them)
        Day = fun(N) -> trim("SELECT to_char(now() AT TIME ZONE 'UTC' + " ++ integer_to_list(N) ++
                             " * interval '1 day', 'YYYYMMDD')") end,
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 0, now(), now() - interval '5 days')"),
        sql("DROP TABLE IF EXISTS " ++ T ++ "_p" ++ Day(1) ++ ", " ++ T ++ "_p" ++ Day(2)),
        sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, mountpoint, client_id) VALUES "
            "('old', 1, 1, now() - interval '5 days', 'on_publish', 'tenant-a', 'dev-1'), "
            "('old', 1, 2, now() - interval '2 days', 'on_publish', 'tenant-b', 'dev-1')"),
        PartKind = fun(N) -> trim("SELECT coalesce((SELECT kind FROM vmq_pgevents_partition_list('" ++ T ++
                                  "') WHERE name = '" ++ T ++ "_p" ++ Day(N) ++ "'), 'none')") end,
        ?assertEqual(["heap", "heap", "none", "none"], [PartKind(N) || N <- [-5, -2, 1, 2]]),
        %% a role that may create objects in the schema, where the owner's
        %% functions look names up: the writer's grant refused
        role("acc_plant"),
        sql("GRANT CREATE ON SCHEMA public TO acc_plant"),
        ?assertMatch("ERROR:  vmq_pgevents_grant: acc_plant may create objects in the schema public" ++ _,
                     try_sql("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_w', 'writer')")),
        sql("REVOKE CREATE ON SCHEMA public FROM acc_plant"),
        ?assertEqual("acc_w may write events into acc_wr and acc_wr_dead, read its resume point, keep the partitions "
                     "(dropping those older than 3 days) and compress them (auto_create = off)",
                     trim("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_w', 'writer', retention => interval '3 days')")),
        %% a limited reader needs the writer to bypass row-level security,
        %% which only a superuser gives
        ?assertEqual("f", trim("SELECT rolbypassrls FROM pg_roles WHERE rolname = 'acc_w'")),
        ?assertMatch("ERROR:  vmq_pgevents_grant: acc_w may write into acc_wr but not bypass" ++ _,
                     try_sql("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_rb', 'reader', ARRAY['tenant-b'])")),
        sql("ALTER ROLE acc_w BYPASSRLS"),
        trim("SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_rb', 'reader', ARRAY['tenant-b'])"),
        %% (a distributed table's partitions are not compressed)
        Compress = case Kind of local -> [{compress_after, "1d"}, {compress_every_ms, 100}]; distributed -> [] end,
        Env = [{dsn, pgev_pg:dsn() ++ " user=acc_w"}, {auto_create, false}, {partition, "day"},
               {retention, "3d"} | Compress],
        pgev_app:capture_logs(),
        pgev_app:start(T, Env),
        try
            S = {"tenant-b", <<"dev-1">>},
            next = vmq_pgevents:auth_on_register({{10, 1, 2, 3}, 5}, S, <<"u">>, <<"pw">>, true),
            ok = vmq_pgevents:on_register({{10, 1, 2, 3}, 5}, S, <<"u">>),
            ok = vmq_pgevents:on_publish(<<"u">>, S, 1, [<<"a">>, <<"b">>], <<"hello">>, false),
            pgev_app:flush(),
            Old = case Kind of local -> "compressed"; distributed -> "heap" end,
            pgev_app:wait_for(upkept, fun() -> PartKind(-2) =:= Old end),
            ?assertEqual(["none", Old, "heap", "heap"], [PartKind(N) || N <- [-5, -2, 1, 2]]),
            ?assertEqual("on_publish|tenant-b|dev-1||\n"
                         "auth_on_register|tenant-b|dev-1||\non_register|tenant-b|dev-1||\n"
                         "on_publish|tenant-b|dev-1|a/b|hello",
                         trim("SELECT hook || '|' || mountpoint || '|' || client_id || '|' || coalesce(topic, '') "
                              "|| '|' || coalesce(convert_from(payload, 'UTF8'), '') FROM " ++ T ++
                              " WHERE hook NOT LIKE 'pgevents\\_%' ORDER BY node DESC, seq")),
            %% and its own rows, with RLS on: the start's
            ?assertEqual("pgevents_start", trim("SELECT string_agg(DISTINCT hook, ',') FROM " ++ T ++
                                                " WHERE hook LIKE 'pgevents\\_%'")),
            %% the reader of tenant-b sees the rows the writer wrote
            ?assertEqual("4", as("acc_rb", "SELECT count(*) FROM " ++ T)),
            Logs = pgev_app:captured_logs(),
            Logged = fun(Line) -> lists:any(fun(L) -> binary:match(L, list_to_binary(Line)) =/= nomatch end, Logs) end,
            ?assert(Logged("made 2 partition(s) of acc_wr ahead of time")),
            ?assert(Logged("retention: dropped partition(s) acc_wr_p" ++ Day(-5))),
            ?assert(Kind =:= distributed orelse Logged("compressed partition acc_wr_p" ++ Day(-2))),
            %% and nothing else
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "SELECT count(*) FROM " ++ T)),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "SELECT count(*) FROM " ++ T ++ "_dead")),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "SELECT count(*) FROM " ++ T ++ "_p" ++ Day(0))),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "SELECT count(*) FROM " ++ T ++ "_erased")),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "DELETE FROM " ++ T)),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "SELECT vmq_pgevents_forget('" ++ T ++ "', 'tenant-b', 'dev-1')")),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "CREATE TABLE acc_w_own (x int)")),
            ?assertMatch("ERROR:  must be owner" ++ _, as("acc_w", "ALTER TABLE " ++ T ++ " ADD COLUMN x int")),
            ?assertMatch("ERROR:  must be owner" ++ _, as("acc_w", "SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 1)")),
            ?assertMatch("ERROR:  vmq_pgevents_grant: only the owner" ++ _,
                         as("acc_w", "SELECT vmq_pgevents_grant('" ++ T ++ "', 'acc_w', 'reader')")),
            ?assertEqual("4", trim("SELECT count(*) FROM " ++ T ++ " WHERE hook NOT LIKE 'pgevents\\_%'")),
            %% the owner's functions, called by hand with other arguments:
            %% no partition younger than the grant's retention dropped, the
            %% table's period kept, no range of more than 1000 partitions,
            %% nothing compressed that ended less than a period ago
            Parts = fun() -> trim("SELECT string_agg(name || ':' || kind, ' ' ORDER BY name) FROM vmq_pgevents_partition_list('"
                                  ++ T ++ "')") end,
            Before = Parts(),
            as("acc_w", "SELECT * FROM " ++ T ++ "_upkeep('day', 2, 1, NULL, NULL)"),
            ?assertEqual(Before, Parts()),
            as("acc_w", "SELECT * FROM " ++ T ++ "_upkeep('hour', 2, 0, now() - interval '1 hour', now())"),
            ?assertEqual(Before, Parts()),
            ?assertMatch("ERROR:  acc_wr_upkeep: events from " ++ _,
                         as("acc_w", "SELECT * FROM " ++ T ++ "_upkeep('day', 2, 0, now() - interval '5 years', NULL)")),
            as("acc_w", "SELECT * FROM " ++ T ++ "_compress('-3 days', NULL)"),
            ?assertEqual(Before, Parts()),
            %% revoked, it may call none of them
            trim("SELECT vmq_pgevents_revoke('" ++ T ++ "', 'acc_w', 'writer')"),
            ?assertMatch("ERROR:  permission denied" ++ _, as("acc_w", "SELECT " ++ T ++ "_resume('n', 1, 0, 1)"))
        after
            pgev_app:stop()
        end,
        %% (its compressed partitions' tables are not left for 85's count)
        vmq_pgevents_85_compress_tests:drop(T).

%% Rows of tenant-a's dev-1 in a compressed partition (its columnar and
%% heap parts; local), a hot one and <table>_dead: all gone, counted and
%% recorded; tenant-b's dev-1 and the other clients untouched, the
%% partition still compressed and answering.
forget(Kind) ->
        T = "acc_fg",
        vmq_pgevents_85_compress_tests:make_table(T),
        Kind = kind(T),
        sql("DROP TABLE IF EXISTS " ++ T ++ "_erased; "
            "SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 1, 0, '2030-01-02 12:00+00', '2030-01-01 00:00+00')"),
        vmq_pgevents_85_compress_tests:fill(T, 40),
        %% device-7's and device-8's rows again as dev-1 of tenant-a and of
        %% tenant-b (another incarnation)
        Cols = "node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, username, peer_addr, peer_port, qos, "
               "topic, topics, retain, clean_session, payload, payload_size, payload_truncated, payload_json, "
               "properties, reason, extra, payload_hash",
        Copy = fun(From, Inc, Mp) ->
            "INSERT INTO " ++ T ++ " (" ++ Cols ++ ") SELECT " ++
            string:replace(string:replace(string:replace(Cols, "incarnation,", Inc ++ ","), "mountpoint,", "'" ++ Mp ++ "',"),
                           "client_id,", "'dev-1',") ++
            " FROM " ++ T ++ " WHERE client_id = '" ++ From ++ "'; " end,
        sql(lists:flatten(Copy("device-7", "2", "tenant-a") ++ Copy("device-8", "3", "tenant-b")) ++
            "INSERT INTO " ++ T ++ "_dead (node, incarnation, seq, ts, hook, mountpoint, client_id, dead_error) VALUES "
            "('n1', 9, 1, '2030-01-01 10:00+00', 'on_publish', 'tenant-a', 'dev-1', 'x'), "
            "('n1', 9, 2, '2030-01-01 10:00+00', 'on_publish', 'tenant-b', 'dev-1', 'x')"),
        Count = fun(Mp, Cid) -> scalar("SELECT (SELECT count(*) FROM " ++ T ++ " WHERE mountpoint = '" ++ Mp ++
                                       "' AND client_id = '" ++ Cid ++ "') + (SELECT count(*) FROM " ++ T ++
                                       "_dead WHERE mountpoint = '" ++ Mp ++ "' AND client_id = '" ++ Cid ++ "')") end,
        Day1 = case Kind of local -> "compressed"; distributed -> "heap" end,
        case Kind of
            local ->
                sql("SELECT set_config('vmq_pgevents.compress_leaf_rows', '30', false); "
                    "SELECT vmq_pgevents_compress('" ++ T ++ "', '1 day', '2030-01-03 06:00+00')"),
                %% dev-1 of tenant-a in the columnar and the heap (login) part
                ?assert(scalar("SELECT count(*) FROM acc_fg_p20300101_c WHERE mountpoint = 'tenant-a'") > 0),
                ?assert(scalar("SELECT count(*) FROM acc_fg_p20300101_l WHERE mountpoint = 'tenant-a'") > 0);
            distributed -> ok
        end,
        ?assertEqual(Day1, trim("SELECT kind FROM vmq_pgevents_partition_list('" ++ T ++ "') "
                                "WHERE name = 'acc_fg_p20300101'")),
        ?assert(scalar("SELECT count(*) FROM acc_fg_p20300102 WHERE mountpoint = 'tenant-a'") > 0),
        A = Count("tenant-a", "dev-1"),
        B = Count("tenant-b", "dev-1"),
        Others = scalar("SELECT count(*) FROM " ++ T ++ " WHERE mountpoint = ''"),
        ?assert(A > 10),
        ?assert(B > 10),
        ?assertEqual(integer_to_list(A),
                     trim("SELECT vmq_pgevents_forget('" ++ T ++ "', 'tenant-a', 'dev-1')")),
        ?assertEqual(0, Count("tenant-a", "dev-1")),
        ?assertEqual(B, Count("tenant-b", "dev-1")),
        ?assertEqual(Others, scalar("SELECT count(*) FROM " ++ T ++ " WHERE mountpoint = ''")),
        ?assertEqual(Day1, trim("SELECT kind FROM vmq_pgevents_partition_list('" ++ T ++ "') "
                                "WHERE name = 'acc_fg_p20300101'")),
        ?assertNotEqual("", trim("SELECT 1 FROM " ++ T ++ "_timeline('dev-1', mountpoint => 'tenant-b') LIMIT 1")),
        ?assertEqual("", trim("SELECT 1 FROM " ++ T ++ "_timeline('dev-1', mountpoint => 'tenant-a') LIMIT 1")),
        ?assertEqual("tenant-a|dev-1|" ++ integer_to_list(A) ++ "|0|true",
                     trim("SELECT mountpoint || '|' || client_id || '|' || rows || '|' || rows_later || '|' || "
                          "(asked_by = session_user AND erased_at > now() - interval '1 minute') FROM " ++ T ++ "_erased")),
        %% the default mountpoint is '' (and a client with no rows: 0, recorded)
        ?assertEqual("0", trim("SELECT vmq_pgevents_forget('" ++ T ++ "', '', 'nobody')")),
        ?assertMatch("ERROR:  vmq_pgevents_forget: name the client" ++ _,
                     try_sql("SELECT vmq_pgevents_forget('" ++ T ++ "', NULL, 'dev-1')")),
        vmq_pgevents_85_compress_tests:drop(T).

%% Events of a client still waiting in the plugin (here: its COPY waits
%% for a lock) when the client is erased arrive afterwards, older than the
%% erasure: the plugin's next upkeep removes them and counts them in the
%% erasure's rows_later; the client's events after the erasure stay.
late_rows_test_() ->
    {timeout, 120, fun() ->
        T = "acc_late",
        sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead, " ++ T ++ "_erased CASCADE"),
        pgev_app:capture_logs(),
        pgev_app:start(T, []),
        try
            S = {"tenant-a", <<"dev-1">>},
            Pub = fun(P) -> ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"t">>], P, false) end,
            Pub(<<"before">>),
            pgev_app:flush(),
            Held = hold("BEGIN; LOCK TABLE " ++ T ++ " IN ACCESS EXCLUSIVE MODE; SELECT 'locked';"),
            Pub(<<"waiting-1">>),
            Pub(<<"waiting-2">>),
            %% the writer's COPY is waiting for the lock
            pgev_app:wait_for(copy_waits, fun() ->
                trim("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'vmq_pgevents' "
                     "AND wait_event_type = 'Lock'") =:= "1" end),
            ?assertEqual("1", send(Held, "SELECT vmq_pgevents_forget('" ++ T ++ "', 'tenant-a', 'dev-1'); COMMIT;")),
            close(Held),
            pgev_app:wait_for(arrived, fun() -> scalar("SELECT count(*) FROM " ++ T ++
                                                       " WHERE hook = 'on_publish'") =:= 2 end),
            %% the connection is lost: the plugin connects again, and upkeeps
            sql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vmq_pgevents'"),
            Pub(<<"after">>),
            pgev_app:wait_for(erased_again, fun() ->
                trim("SELECT string_agg(convert_from(payload, 'UTF8'), ',') FROM " ++ T) =:= "after" end),
            ?assertEqual("1|2", trim("SELECT rows || '|' || rows_later FROM " ++ T ++ "_erased")),
            Logs = pgev_app:captured_logs(),
            ?assert(lists:any(fun(L) -> binary:match(L, <<"removed 2 row(s) of erased clients">>) =/= nomatch end, Logs))
        after
            pgev_app:stop()
        end
    end}.

%% a psql session of its own, held open: Sql's last line of output returned
hold(Sql) ->
    Port = open_port({spawn_executable, os:find_executable("bash")},
                     [{args, ["test/pg.sh", "psql", pgev_pg:dir(), "-Atq", "-v", "ON_ERROR_STOP=1"]},
                      binary, stderr_to_stdout, {line, 4096}]),
    "locked" = send(Port, Sql),
    Port.

send(Port, Sql) ->
    port_command(Port, [Sql, "\n\\echo --done--\n"]),
    read_until_done(Port, "").

read_until_done(Port, Last) ->
    receive
        {Port, {data, {eol, <<"--done--">>}}} -> Last;
        {Port, {data, {eol, L}}} -> read_until_done(Port, binary_to_list(L));
        {Port, {data, {noeol, L}}} -> read_until_done(Port, binary_to_list(L))
    after 30000 -> error({psql_no_answer, Last})
    end.

close(Port) ->
    port_command(Port, "\\q\n"),
    catch port_close(Port).
