%% @doc Part of `make bench`: what a long PostgreSQL outage costs the hook
%% path. The plugin (journal on) in a real VM against a private
%% PostgreSQL: hook cost with PostgreSQL up (the no-op hook too), then
%% PostgreSQL stopped, a backlog of BACKLOG events (default 10 million)
%% piled into the journal by untimed calls, and the same lines again on
%% top of it. Every line starts after a `sync'. For each: p50/p99/p99.9;
%% per million calls the minor and major page faults of the scheduler
%% threads (where hooks run) and of the whole process, the schedulers'
%% involuntary context switches and the machine's TLB-shootdown and
%% function-call interrupts; the CPU of the journal's own threads (the
%% kernel's per-thread counters, /proc/self/task/*: what
%% getrusage(RUSAGE_THREAD) reads). Then the plugin is stopped with that
%% backlog, 100 callers timing on_publish from the stop's start to its end
%% (their events are refused: counted drops), started again (the backlog
%% taken over from its files, timed), PostgreSQL started and the backlog
%% written, timed. p99 at 100 callers moves a lot between runs on a small
%% machine: the on_publish x100 line with PostgreSQL down and the stop's
%% line are run twice more (each stop followed by a start), the up line
%% twice more once the backlog is written, and the medians of the three
%% are compared with the up line's. Prints lines; writes JSON.
-module(vmq_pgevents_outage).

-export([main/1]).

-define(CALLS, 1000000).
-define(SUSTAINED, 5000000).
-define(FILL_PROCS, 100).
-define(STOP_TIMEOUT_MS, 2000).

main([PgDir, OutJson, BacklogS]) ->
    logger:set_primary_config(level, error),
    put(pgdir, PgDir),
    Backlog = list_to_integer(BacklogS),
    start(),
    Lines = [line(H, P, up, C) || {H, P, C} <- lines()],
    pg("stop"),
    Fill = fill(Backlog),
    Down = [line(H, P, down, C) || {H, P, C} <- lines(), H =/= noop],
    Stop = writer_stop_line(),
    Restart = restart(),
    Again = [again() || _ <- [2, 3]],
    Drain = drain(),
    Ups = [line(on_publish, 100, up, ?CALLS) || _ <- [2, 3]],
    stop(),
    Medians = medians(Lines, Ups, Down, Again, Stop),
    Result = #{backlog_events => Backlog, fill => Fill, lines => Lines ++ Down,
               writer_stop => Stop, restart => Restart, drain => Drain, again => Again,
               up_again => Ups, p99_medians => Medians},
    ok = file:write_file(OutJson, vmq_pgevents_bench:json(Result)),
    io:format("JSON: ~ts~n", [OutJson]),
    halt(0).

%% {Hook, Callers, Calls}. Each line starts with the kernel's writeback
%% of earlier lines done, and is over in about a second: before the
%% journal's first sync writes what it wrote. The last line goes on for
%% ?SUSTAINED calls: the hooks while their own pages are written back.
lines() ->
    [{noop, 1, ?CALLS}, {noop, 100, ?CALLS}] ++
    [{on_publish, P, ?CALLS} || P <- [1, 10, 100]] ++
    [{H, P, ?CALLS} || H <- [on_deliver, auth_on_register], P <- [1, 100]] ++
    [{on_publish, 100, ?SUSTAINED}].

pg(Cmd) -> vmq_pgevents_bench:pg(Cmd).

%% the plugin as the rest of `make bench' runs it, with room on disk for
%% the backlog and PostgreSQL's absence retried once a second
start() ->
    vmq_pgevents_bench:start("bench_outage", [{spool_max_bytes, 64000000000}, {backoff_max_ms, 1000},
                                              {stop_timeout_ms, ?STOP_TIMEOUT_MS}]).

stop() -> vmq_pgevents_bench:stop().

%% untimed calls of on_publish by ?FILL_PROCS processes until N events
%% wait in the journal
fill(N) ->
    #{queued := Q0} = vmq_pgevents:status(),
    T0 = erlang:monotonic_time(millisecond),
    vmq_pgevents_bench:calls(on_publish, ?FILL_PROCS, max(0, N - Q0) div ?FILL_PROCS, fun(F, K) -> loop(F, K) end),
    Ms = erlang:monotonic_time(millisecond) - T0,
    #{queued := Q, journal_bytes := B, dropped := D} = vmq_pgevents:status(),
    io:format("outage: ~b events waiting in the journal (~.1f GB on disk), piled in ~.1f s, ~b dropped~n",
              [Q, B / 1.0e9, Ms / 1000, D]),
    #{queued => Q, journal_bytes => B, seconds => Ms / 1000, dropped => D}.

loop(_, 0) -> ok;
loop(F, K) -> F(), loop(F, K - 1).

line(Hook, Procs, PgState, Calls0) ->
    Hist = counters:new(3000, [write_concurrency]),
    Per = Calls0 div Procs,
    #{queued := Q, journal_disk_segments := Disk0} = vmq_pgevents:status(),
    settle(),
    I0 = ipis(),
    T0 = threads(),
    vmq_pgevents_bench:calls(Hook, Procs, Per, fun(F, K) -> vmq_pgevents_bench:timed_calls(F, K, Hist) end),
    T1 = threads(),
    I1 = ipis(),
    #{dropped := Dropped, journal_disk_segments := Disk1} = vmq_pgevents:status(),
    %% with PostgreSQL up, every line starts from an empty journal
    case PgState of up -> {ok, _} = vmq_pgevents:flush(600000); down -> ok end,
    {P50, P99, P999} = vmq_pgevents_bench:percentiles(Hist, Per * Procs),
    Calls = Per * Procs,
    PerM = fun(Group, Field) -> delta(T0, T1, Group, Field) * 1000000 / Calls end,
    JCpu = delta(T0, T1, journal, cpu) / 100,
    Ipis = (I1 - I0) * 1000000 / Calls,
    Nvcsw = PerM(schedulers, nvcsw),
    io:format("outage ~p x~p, ~b calls (postgresql ~p, ~b waiting): p50 ~.2f us, p99 ~.2f us, p99.9 ~.2f us;"
              " per 1M calls: schedulers ~.1f minor / ~.1f major faults, process ~.1f / ~.1f;"
              " journal threads ~.2f s CPU; IPIs ~.1f, schedulers preempted ~.1f;"
              " segments made on disk only ~b~n",
              [Hook, Procs, Calls, PgState, Q, P50, P99, P999, PerM(schedulers, minflt),
               PerM(schedulers, majflt), PerM(all, minflt), PerM(all, majflt), JCpu, Ipis, Nvcsw,
               Disk1 - Disk0]),
    #{hook => Hook, procs => Procs, postgresql => PgState, waiting => Q, calls => Calls,
      p50_us => P50, p99_us => P99, p999_us => P999, dropped => Dropped,
      sched_minflt_per_m => PerM(schedulers, minflt), sched_majflt_per_m => PerM(schedulers, majflt),
      proc_minflt_per_m => PerM(all, minflt), proc_majflt_per_m => PerM(all, majflt),
      journal_cpu_s => JCpu, ipis_per_m => Ipis, sched_preempted_per_m => Nvcsw,
      disk_segments => Disk1 - Disk0}.

%% the machine's TLB shootdowns and function-call interrupts so far, all
%% CPUs (a virtual machine's flushes arrive as the latter): what writing
%% back pages mapped in the VM costs the CPUs its schedulers run on
ipis() ->
    {ok, B} = file:read_file("/proc/interrupts"),
    Ipi = [lists:sum([binary_to_integer(X) || X <- Xs, re:run(X, "^[0-9]+$") =/= nomatch])
           || L <- binary:split(B, <<"\n">>, [global]),
              <<K:4/binary, Rest/binary>> <- [string:trim(L, leading)],
              K =:= <<"TLB:">> orelse K =:= <<"CAL:">>,
              Xs <- [string:lexemes(Rest, " ")]],
    lists:sum(Ipi).

%% a line starts with nothing left dirty by what ran before it (`sync'):
%% a backlog piled up over an hour is on disk already, piling it in
%% seconds is only the bench's shortcut
settle() -> _ = os:cmd("sync"), ok.

%% the hooks during a stop of the plugin with the backlog waiting and
%% PostgreSQL down: the writer tries for stop_timeout_ms, then leaves the
%% backlog in the journal's files. 100 callers time on_publish from just
%% before the stop until it has returned.
writer_stop_line() ->
    Hist = counters:new(3000, [write_concurrency]),
    Done = atomics:new(1, []),
    #{queued := Q} = vmq_pgevents:status(),
    #{spooled_at_stop := Left0} = vmq_pgevents_nif:status(),   %% since the VM started
    settle(),
    Self = self(),
    Stopper = spawn_link(fun() ->
                                 receive go -> ok end,
                                 timer:sleep(100),
                                 T0 = erlang:monotonic_time(millisecond),
                                 ok = application:stop(vmq_pgevents),
                                 Self ! {stopped, erlang:monotonic_time(millisecond) - T0},
                                 atomics:put(Done, 1, 1)
                         end),
    Stopper ! go,
    vmq_pgevents_bench:calls(on_publish, 100, 0, fun(F, _) -> until_done(F, Done, Hist) end),
    Ms = receive {stopped, M} -> M end,
    Calls = lists:sum([counters:get(Hist, I) || I <- lists:seq(1, 3000)]),
    {P50, P99, P999} = vmq_pgevents_bench:percentiles(Hist, Calls),
    #{spooled_at_stop := Left1} = vmq_pgevents_nif:status(),
    Left = Left1 - Left0,
    io:format("outage on_publish x100 during a stop of the writer (postgresql down, ~b waiting; the stop took ~.1f s, "
              "~b left in the journal), ~b calls: p50 ~.2f us, p99 ~.2f us, p99.9 ~.2f us~n",
              [Q, Ms / 1000, Left, Calls, P50, P99, P999]),
    #{waiting => Q, stop_seconds => Ms / 1000, left => Left, calls => Calls,
      p50_us => P50, p99_us => P99, p999_us => P999}.

%% the down line and the stop again, then a start (the backlog taken over)
again() ->
    Down = line(on_publish, 100, down, ?CALLS),
    Stop = writer_stop_line(),
    Restart = restart(),
    #{down => Down, writer_stop => Stop, restart => Restart}.

%% the median p99 of the three runs of each: up, down, during a stop
medians(Lines, Ups, Down, Again, Stop) ->
    X100 = fun(Ls) -> [L || L = #{hook := on_publish, procs := 100, calls := ?CALLS} <- Ls] end,
    P99 = fun(Ls) -> [P || #{p99_us := P} <- Ls] end,
    Up = P99(X100(Lines) ++ Ups),
    Dn = P99(X100(Down) ++ [D || #{down := D} <- Again]),
    St = P99([Stop | [S || #{writer_stop := S} <- Again]]),
    Med = fun(Ps) -> lists:nth((length(Ps) + 1) div 2, lists:sort(Ps)) end,
    U = Med(Up),
    Show = fun(Ps) -> string:join([io_lib:format("~.2f", [P]) || P <- Ps], ", ") end,
    io:format("outage on_publish x100, p99 median of ~b runs: up ~.2f us (~s); "
              "postgresql down ~.2f us (~s), ~.2fx up; during a writer stop ~.2f us (~s), ~.2fx up~n",
              [length(Up), U, Show(Up), Med(Dn), Show(Dn), Med(Dn) / U, Med(St), Show(St),
               Med(St) / U]),
    #{up_us => U, down_us => Med(Dn), writer_stop_us => Med(St), down_x_up => Med(Dn) / U,
      writer_stop_x_up => Med(St) / U, up_runs => Up, down_runs => Dn, writer_stop_runs => St}.

until_done(F, Done, Hist) ->
    case atomics:get(Done, 1) of
        1 -> ok;
        0 -> vmq_pgevents_bench:timed_calls(F, 100, Hist), until_done(F, Done, Hist)
    end.

%% the plugin started again (PostgreSQL still down): the journal's files
%% the stop left are taken over before the start returns
restart() ->
    T0 = erlang:monotonic_time(millisecond),
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    Ms = erlang:monotonic_time(millisecond) - T0,
    #{queued := Q0, inflight := I} = vmq_pgevents:status(),
    Q = Q0 + I,   %% the writer holds its first batch already
    io:format("outage: started again, ~b events taken over from the journal's files in ~.1f s~n", [Q, Ms / 1000]),
    #{events => Q, seconds => Ms / 1000}.

drain() ->
    #{queued := Q0, inflight := I} = vmq_pgevents:status(),
    Q = Q0 + I,
    pg("start"),
    T0 = erlang:monotonic_time(millisecond),
    {ok, _} = vmq_pgevents:flush(3600000),
    Ms = erlang:monotonic_time(millisecond) - T0,
    io:format("outage: PostgreSQL back, ~b events (taken over at the start) written in ~.1f s (~b rows/s)~n",
              [Q, Ms / 1000, Q * 1000 div max(1, Ms)]),
    #{events => Q, seconds => Ms / 1000}.

%% ---- the kernel's per-thread counters ---------------------------------------

%% #{Group => #{minflt, majflt, cpu (ticks), nvcsw}} summed over the
%% threads of each group: schedulers (the hooks' threads), journal (its
%% two threads), all (the process)
threads() ->
    {ok, Tids} = file:list_dir("/proc/self/task"),
    lists:foldl(fun(Tid, Acc) ->
                        case file:read_file("/proc/self/task/" ++ Tid ++ "/stat") of
                            {ok, Stat} -> add(Tid, Stat, Acc);
                            _ -> Acc   %% the thread ended
                        end
                end, #{}, Tids).

add(Tid, Stat, Acc) ->
    [Left, Right] = string:split(Stat, ")", trailing),
    [_, Comm] = string:split(Left, "("),
    F = string:lexemes(Right, " "),
    N = fun(I) -> binary_to_integer(lists:nth(I - 2, F)) end,
    C = #{minflt => N(10), majflt => N(12), cpu => N(14) + N(15), nvcsw => nvcsw(Tid)},
    Groups = [all | group(Comm)],
    lists:foldl(fun(G, A) ->
                        maps:update_with(G, fun(Old) -> maps:merge_with(fun(_, X, Y) -> X + Y end, Old, C) end,
                                         C, A)
                end, Acc, Groups).

%% times the thread was taken off its CPU without asking
nvcsw(Tid) ->
    case file:read_file("/proc/self/task/" ++ Tid ++ "/status") of
        {ok, S} ->
            {match, [V]} = re:run(S, "nonvoluntary_ctxt_switches:\\s+([0-9]+)", [{capture, all_but_first, binary}]),
            binary_to_integer(V);
        _ -> 0
    end.

group(Comm) ->
    case re:run(Comm, "^[0-9]+_scheduler$") of
        {match, _} -> [schedulers];
        nomatch when Comm =:= <<"vmq_pgev_jrnl">>; Comm =:= <<"vmq_pgev_disk">> -> [journal];
        nomatch -> []
    end.

delta(T0, T1, Group, Field) ->
    maps:get(Field, maps:get(Group, T1, #{}), 0) - maps:get(Field, maps:get(Group, T0, #{}), 0).
