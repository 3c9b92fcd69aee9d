%% @doc start/2 and stop/1 of the NIF called at once from several
%% processes (real VM, real NIF, no PostgreSQL needed: the writer only
%% tries to connect). The NIF itself makes them one at a time: exactly one
%% of several starts succeeds, the others get {error, already_started}; a
%% stop waits for a start under way and stops what it made; after the last
%% stop no thread of the plugin runs.
-module(vmq_pgevents_12_start_tests).
-include_lib("eunit/include/eunit.hrl").

-define(STARTERS, 8).
-define(ROUNDS, 10).

config(Spool) ->
    #{dsn => <<"host=/nonexistent/vmq_pgevents port=1">>, table => <<"start_race">>,
      node => <<"n">>, spool_dir => list_to_binary(Spool), spool_max_bytes => 16 bsl 20,
      journal_memory_bytes => 0, backoff_min_ms => 1000, backoff_max_ms => 1000}.

%% the names of this VM's threads that are the plugin's (writer, journal)
plugin_threads() ->
    Tasks = filelib:wildcard("/proc/self/task/*/comm"),
    [Name || F <- Tasks,
             {ok, B} <- [file:read_file(F)],
             Name <- [string:trim(binary_to_list(B))],
             lists:prefix("vmq_pgev", Name)].

%% Fun() in N processes released together; their results
at_once(N, Fun) ->
    Self = self(),
    Go = make_ref(),
    Pids = [spawn_link(fun() -> receive Go -> ok end, Self ! {self(), Fun()} end)
            || _ <- lists:seq(1, N)],
    [P ! Go || P <- Pids],
    [receive {P, R} -> R end || P <- Pids].

spool() ->
    Dir = filename:join("/tmp", "vmq_pgevents_start_race_" ++ os:getpid()),
    os:cmd("rm -rf " ++ Dir),
    Dir.

concurrent_starts_test_() ->
    {timeout, 120, fun() ->
        Spool = spool(),
        Cfg = config(Spool),
        ok = vmq_pgevents_nif:stop(1000),
        ?assertEqual([], plugin_threads()),
        try
            lists:foreach(
              fun(_) ->
                      Rs = at_once(?STARTERS, fun() -> vmq_pgevents_nif:start(Cfg, self()) end),
                      ?assertEqual({1, ?STARTERS - 1},
                                   {length([ok || ok <- Rs]),
                                    length([x || {error, already_started} <- Rs])}),
                      ?assertNotEqual(stopped, maps:get(state, vmq_pgevents_nif:status())),
                      ?assertNotEqual([], plugin_threads()),
                      ok = vmq_pgevents_nif:stop(1000),
                      ?assertEqual(stopped, maps:get(state, vmq_pgevents_nif:status())),
                      ?assertEqual([], plugin_threads())
              end, lists:seq(1, ?ROUNDS))
        after
            vmq_pgevents_nif:stop(1000),
            os:cmd("rm -rf " ++ Spool)
        end
    end}.

%% starts and stops at once, in any order: each start succeeds or is
%% refused as already started, each stop returns ok, and after a last stop
%% no thread of the plugin is left (a stop during a start waited for it and
%% stopped what it made; no start replaced a writer another had made)
starts_and_stops_test_() ->
    {timeout, 120, fun() ->
        Spool = spool(),
        Cfg = config(Spool),
        try
            lists:foreach(
              fun(_) ->
                      Rs = at_once(?STARTERS,
                                   fun() ->
                                           case rand:uniform(3) of
                                               3 -> vmq_pgevents_nif:stop(1000);
                                               _ -> vmq_pgevents_nif:start(Cfg, self())
                                           end
                                   end),
                      [?assert(R =:= ok orelse R =:= {error, already_started}) || R <- Rs],
                      ok = vmq_pgevents_nif:stop(1000),
                      ?assertEqual([], plugin_threads())
              end, lists:seq(1, ?ROUNDS))
        after
            vmq_pgevents_nif:stop(1000),
            os:cmd("rm -rf " ++ Spool)
        end
    end}.

%% The NIF's unload runs on a normal scheduler and cannot wait there: a
%% writer still running when the module goes (its server was killed, so
%% no stop/1 ran) is stopped by a thread of its own. Here the writer
%% cannot reach PostgreSQL and holds events, so stopping it takes the
%% whole unload stop timeout (2 s): the purge returns at once, with the
%% writer still being stopped, and a start of the module loaded again
%% waits until it is gone (one writer at a time).
unload_does_not_wait_test_() ->
    {timeout, 60, fun() ->
        Spool = spool(),
        Cfg = (config(Spool))#{journal => false},
        try
            ok = vmq_pgevents_nif:start(Cfg, self()),
            [ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"c">>}, 0, [<<"t">>], <<"p">>, false)
             || _ <- lists:seq(1, 10)],
            true = code:delete(vmq_pgevents_nif),
            code:purge(vmq_pgevents_nif),
            %% the purge returned while the writer still runs: its stop is
            %% the retiring thread's (no timing asserted: the threads tell)
            Left = plugin_threads(),
            ?assert(lists:member("vmq_pgevents", Left)),
            ?assert(lists:member("vmq_pgev_retire", Left)),
            {module, _} = code:load_file(vmq_pgevents_nif),
            ok = vmq_pgevents_nif:start(Cfg, self()),
            ?assertEqual(["vmq_pgevents"], [N || N <- plugin_threads(), N =:= "vmq_pgevents"]),
            ok = vmq_pgevents_nif:stop(1000),
            ?assertEqual([], [N || N <- plugin_threads(), N =/= "vmq_pgev_retire"])
        after
            vmq_pgevents_nif:stop(1000),
            os:cmd("rm -rf " ++ Spool)
        end
    end}.
