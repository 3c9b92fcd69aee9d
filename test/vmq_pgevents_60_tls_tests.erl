%% @doc TLS to PostgreSQL through libpq, and a least-privilege role: a
%% second private server (test/pg.sh init ... tls) accepts TCP only with
%% TLS and requires a client certificate for the role vmq_cert, which may
%% only INSERT into its events table and read the three columns of the
%% resume point. The plugin runs with sslmode=verify-full and
%% auto_create off, as the README's Security section describes.
-module(vmq_pgevents_60_tls_tests).
-include_lib("eunit/include/eunit.hrl").

tls_test_() ->
    {timeout, 180, fun tls/0}.

tls() ->
    Dir = string:trim(os:cmd("mktemp -d /tmp/vmq_pgevents_tls.XXXXXX")),
    try
        pgev_pg:pg("init", [Dir, "fast", "tls"]),
        pgev_pg:pg("start", [Dir]),
        Port = string:trim(element(2, file:read_file(Dir ++ "/port"))),
        %% the DBA: table from priv/schema.sql, a role that may only insert
        pgev_pg:sql(Dir, "CREATE ROLE vmq_cert LOGIN"),
        pgev_pg:sql(Dir, "SELECT set_config('vmq_pgevents.table', 'tls_events', false); " ++ schema_sql()),
        pgev_pg:sql(Dir, "GRANT INSERT ON tls_events, tls_events_dead TO vmq_cert; "
                         "GRANT SELECT (node, incarnation, seq, ts) ON tls_events TO vmq_cert"),
        Dsn = fun(Ca) ->
                      lists:flatten(
                        ["host=localhost hostaddr=127.0.0.1 port=", Port,
                         " dbname=postgres user=vmq_cert sslmode=verify-full",
                         " sslrootcert=", Dir, "/", Ca, " sslcert=", Dir, "/client.crt",
                         " sslkey=", Dir, "/client.key"])
              end,
        %% a CA the server's certificate does not chain to: refused
        pgev_app:start("tls_events", [{dsn, Dsn("other_ca.crt")}, {auto_create, false},
                                      {stop_timeout_ms, 200}]),
        ok = vmq_pgevents:on_client_gone({"", <<"nope">>}),
        pgev_app:wait_for(connection_refused, fun() ->
            maps:get(last_error, vmq_pgevents:status()) =/= <<>>
        end),
        #{state := disconnected, last_error := Err, spooled_at_stop := Sp0} = vmq_pgevents:status(),
        ?assertNotEqual(nomatch, binary:match(Err, <<"certificate verify failed">>)),
        pgev_app:stop(),
        %% still unwritten at stop: spooled, written after the next start
        %% (with the start's and the stop's own rows)
        #{spooled_at_stop := Sp1} = vmq_pgevents:status(),
        ?assertEqual(3, Sp1 - Sp0),
        %% the right CA: verified, encrypted, client certificate accepted
        pgev_app:restart("tls_events", [{dsn, Dsn("ca.crt")}, {auto_create, false}]),
        try
            ok = vmq_pgevents:on_client_gone({"", <<"over-tls">>}),
            pgev_app:flush(),
            ?assertEqual("t", string:trim(pgev_pg:sql(Dir,
                "SELECT bool_and(s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                "WHERE a.usename = 'vmq_cert' AND a.application_name = 'vmq_pgevents'"))),
            ?assertEqual("nope,over-tls", string:trim(pgev_pg:sql(Dir,
                "SELECT string_agg(client_id, ',' ORDER BY seq) FROM tls_events")))
        after
            pgev_app:stop()
        end
    after
        pgev_pg:pg("stop", [Dir]),
        os:cmd("rm -rf " ++ Dir)
    end.

schema_sql() ->
    {ok, B} = file:read_file("priv/schema.sql"),
    binary_to_list(B).
