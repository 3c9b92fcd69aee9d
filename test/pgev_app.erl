%% @doc Test helper: start/stop the plugin application against the test
%% PostgreSQL with a given table and extra app env.
-module(pgev_app).

-export([start/1, start/2, stop/0, flush/0, rows/1]).

start(Table) -> start(Table, []).

start(Table, Env) ->
    _ = application:load(vmq_pgevents),
    Base = [{dsn, pgev_pg:dsn()}, {table, Table}, {flush_interval_ms, 20},
            {backoff_min_ms, 20}, {backoff_max_ms, 200}],
    [application:set_env(vmq_pgevents, K, V) || {K, V} <- Base ++ Env],
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    ok.

stop() ->
    ok = application:stop(vmq_pgevents),
    ok = application:unload(vmq_pgevents).

flush() ->
    {ok, _} = vmq_pgevents:flush(30000),
    ok.

%% every row of the table, in seq order
rows(Table) ->
    pgev_pg:rows("SELECT * FROM \"" ++ Table ++ "\" ORDER BY incarnation, seq").
