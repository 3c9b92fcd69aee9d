%% @doc Test helper: start/stop the plugin application against the test
%% PostgreSQL with a given table and extra app env.
-module(pgev_app).

-export([start/1, start/2, restart/2, stop/0, flush/0, rows/1, plugin_rows/1, spool_dir/1, with_plugin/3]).
-export([logs_so_far/0]).
-export([capture_logs/0, captured_logs/0, log/2]).
-export([wait_for/2, wait_for/3, log_seen/1]).

start(Table) -> start(Table, []).

%% each table gets its own empty spool directory: spooled events carry no
%% table, so one test's leftovers must not replay into another's table
start(Table, Env) ->
    _ = application:load(vmq_pgevents),
    Spool = spool_dir(Table),
    os:cmd("rm -rf '" ++ Spool ++ "'"),
    Base = [{dsn, pgev_pg:dsn()}, {table, Table}, {flush_interval_ms, 20},
            {backoff_min_ms, 20}, {backoff_max_ms, 200}, {spool_dir, Spool}],
    [application:set_env(vmq_pgevents, K, V) || {K, V} <- Base ++ Env],
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    ok.

stop() ->
    ok = application:stop(vmq_pgevents),
    ok = application:unload(vmq_pgevents).

flush() ->
    {ok, _} = vmq_pgevents:flush(30000),
    ok.

%% every row of the table of a hook's event (not the plugin's own rows), in
%% seq order
rows(Table) ->
    pgev_pg:rows("SELECT * FROM \"" ++ Table ++ "\" WHERE hook NOT LIKE 'pgevents\\_%' "
                 "ORDER BY incarnation, seq").

%% the plugin's own rows (pgevents_start, ...), in seq order
plugin_rows(Table) ->
    pgev_pg:rows("SELECT * FROM \"" ++ Table ++ "\" WHERE hook LIKE 'pgevents\\_%' "
                 "ORDER BY incarnation, seq").

%% logger handler that sends the plugin's log lines to the test process
capture_logs() ->
    _ = logger:remove_handler(pgev_capture),
    ok = logger:add_handler(pgev_capture, ?MODULE, #{config => #{pid => self()}, level => all}),
    logger:set_primary_config(level, all).

log(#{msg := Msg}, #{config := #{pid := Pid}}) ->
    Text = case Msg of
               {string, S} -> S;
               {report, R} -> io_lib:format("~0p", [R]);
               {Fmt, Args} -> io_lib:format(Fmt, Args)
           end,
    Pid ! {pgev_log, unicode:characters_to_binary(Text)}.

%% the captured lines so far (and stop capturing)
captured_logs() ->
    %% the writer's lines reach the logger through the server process: a
    %% call to it returns only after the lines sent before were logged
    catch vmq_pgevents_server:written_per_second(),
    _ = logger:remove_handler(pgev_capture),
    logger:set_primary_config(level, warning),
    collect_logs([]).

collect_logs(Acc) ->
    receive {pgev_log, L} -> collect_logs([L | Acc])
    after 0 -> lists:reverse(Acc)
    end.

spool_dir(Table) ->
    filename:join(pgev_pg:dir() ++ "_spool", Table).

%% start again without clearing the spool (what a broker restart does)
restart(Table, Env) ->
    _ = application:load(vmq_pgevents),
    Base = [{dsn, pgev_pg:dsn()}, {table, Table}, {flush_interval_ms, 20},
            {backoff_min_ms, 20}, {backoff_max_ms, 200}, {spool_dir, spool_dir(Table)}],
    [application:set_env(vmq_pgevents, K, V) || {K, V} <- Base ++ Env],
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    ok.

%% Fun() with the plugin started on a fresh, empty table
with_plugin(Table, Env, Fun) ->
    pgev_pg:sql("DROP TABLE IF EXISTS \"" ++ Table ++ "\" CASCADE"),
    start(Table, Env),
    try Fun() after stop() end.

%% Fun() polled every 20 ms until it returns true, for at most TimeoutMs
%% (30 s by default); if it never does, the test fails naming What
wait_for(What, Fun) -> wait_for(What, Fun, 30000).
wait_for(What, Fun, TimeoutMs) ->
    wait_for_(What, Fun, erlang:monotonic_time(millisecond) + TimeoutMs, TimeoutMs).

wait_for_(What, Fun, Deadline, TimeoutMs) ->
    case Fun() of
        true -> ok;
        false ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> error({condition_never_held, What, {waited_ms, TimeoutMs}});
                false -> timer:sleep(20), wait_for_(What, Fun, Deadline, TimeoutMs)
            end
    end.

%% the captured lines so far, left in the mailbox (capturing goes on)
logs_so_far() ->
    catch vmq_pgevents_server:written_per_second(),
    {messages, Msgs} = process_info(self(), messages),
    [L || {pgev_log, L} <- Msgs].

%% a captured log line (capture_logs/0) containing Pattern has arrived:
%% looks at the test process's mailbox without taking the lines out
log_seen(Pattern) ->
    {messages, Msgs} = process_info(self(), messages),
    lists:any(fun({pgev_log, L}) -> binary:match(L, Pattern) =/= nomatch;
                 (_) -> false
              end, Msgs).
