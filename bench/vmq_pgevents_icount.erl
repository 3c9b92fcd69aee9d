%% @doc What bench/run_bench_icount.sh runs under callgrind: the plugin
%% started without a reachable PostgreSQL (its writer waits; every event
%% goes into the journal), then Calls calls of one hook from one process,
%% with the arguments of vmq_pgevents_bench's hook lines (its hook_fun). `disabled':
%% on_publish with the hook left out of `hooks' (the NIF walks the
%% arguments, finds the hook and returns): the floor of any call.
-module(vmq_pgevents_icount).

-export([main/1]).

main([Spool, Hook, Calls]) ->
    logger:set_primary_config(level, error),
    _ = application:load(vmq_pgevents),
    Hooks = case Hook of "disabled" -> "on_deliver"; _ -> "all" end,
    [application:set_env(vmq_pgevents, K, V) ||
        {K, V} <- [{dsn, "host=/nonexistent-vmq-pgevents-icount"}, {table, "icount"},
                   {hooks, Hooks}, {spool_dir, Spool},
                   {backoff_min_ms, 600000}, {backoff_max_ms, 600000}]],
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    Fun = vmq_pgevents_bench:hook_fun(case Hook of "disabled" -> on_publish; _ -> list_to_atom(Hook) end, 1),
    loop(Fun, list_to_integer(Calls)),
    #{per_hook := Per} = vmq_pgevents:status(),
    io:format("recorded ~p~n", [lists:sum([maps:get(recorded, M, 0) || M <- maps:values(Per)])]),
    halt(0).

loop(_, 0) -> ok;
loop(F, N) -> F(), loop(F, N - 1).
