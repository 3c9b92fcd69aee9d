%% @doc Owns the writer thread: starts it with the configuration, turns
%% its messages into log lines, and on shutdown stops it (writing what is
%% queued for up to stop_timeout_ms). Also owns the connection table.
-module(vmq_pgevents_server).
-behaviour(gen_server).

-export([start_link/0, written_per_second/0, problem/0]).

-define(SAMPLE_MS, 5000).
%% every minute, the connection table's entries of CONNECTs that never
%% registered within a minute go (vmq_pgevents_conn:sweep/1)
-define(SWEEP_MS, 60000).
-define(SAMPLES, 13).                %% one minute of 5 s samples
-define(PROBLEM, {vmq_pgevents, problem}).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% Never fails: a plugin whose start fails takes VerneMQ's plugin manager
%% and the whole broker down with it. A configuration the plugin cannot use
%% (e.g. a bad value set in advanced.config, which no schema checks) is
%% logged once, shown by status() and `vmq-admin pgevents status', and
%% nothing is recorded until the plugin is restarted with a good one.
init([]) ->
    process_flag(trap_exit, true),
    persistent_term:erase(?PROBLEM),
    case try vmq_pgevents_nif:load_error() catch error:undef -> <<"vmq_pgevents_nif is not loaded">> end of
        undefined -> start();
        Why -> not_recording(nif, Why)
    end.

start() ->
    try start_writer() of
        {ok, StopTimeout} ->
            {ok, warn_listeners(#{stop_timeout_ms => StopTimeout, samples => [sample()],
                                  warned => []})};
        {error, Why} ->
            not_recording(config, Why)
    catch
        Class:Reason ->
            not_recording(config, io_lib:format("start failed: ~0p:~0p", [Class, Reason]))
    end.

start_writer() ->
    case vmq_pgevents_config:read() of
        {ok, Config} ->
            vmq_pgevents_conn:init_table(maps:get(conn_table_max, Config)),
            StopTimeout = maps:get(stop_timeout_ms, Config),
            case start_nif(maps:without([conn_table_max, stop_timeout_ms], Config), StopTimeout) of
                ok ->
                    log_dropped_after_stop(),
                    persistent_term:erase({vmq_pgevents, hooks_overridden}),
                    logger:info("vmq_pgevents: recording to table ~ts via ~ts",
                                [maps:get(table, Config), masked_dsn()]),
                    erlang:send_after(?SAMPLE_MS, self(), sample),
                    erlang:start_timer(?SWEEP_MS, self(), sweep_conns),
                    vmq_pgevents:keep_applied_env(),
                    {ok, StopTimeout};
                {error, Why} ->
                    {error, Why}
            end;
        {error, Why} ->
            {error, ["bad configuration: ", Why]}
    end.

%% A writer still running here belongs to a server that was killed before
%% its terminate/2 ran: stop it (what it holds is written or stays in the journal) and
%% start one that reports to this process.
start_nif(Config, StopTimeout) ->
    case vmq_pgevents_nif:start(Config, self()) of
        {error, already_started} ->
            vmq_pgevents_nif:stop(StopTimeout),
            vmq_pgevents_nif:start(Config, self());
        Result ->
            Result
    end.

%% events that came while the plugin was stopped: said once, at the next start
log_dropped_after_stop() ->
    Key = {vmq_pgevents, dropped_after_stop_logged},
    #{incarnation := Inc} = S = vmq_pgevents_nif:status(),
    N = maps:get(dropped_after_stop, S, 0),
    %% the counter is the NIF instance's (incarnation): a new one starts at 0
    Before = case persistent_term:get(Key, undefined) of
                 {Inc, B} -> B;
                 _ -> 0
             end,
    case N - Before of
        New when New > 0 ->
            logger:warning("vmq_pgevents: ~b events of hooks called while the plugin was stopped "
                           "were not recorded (dropped_after_stop)", [New]);
        _ -> ok
    end,
    persistent_term:put(Key, {Inc, N}).

%% Kind: config (the configuration or the server refused it) or nif (the
%% NIF library did not load: a system library is missing, not a setting)
not_recording(Kind, Why) ->
    Text = iolist_to_binary(io_lib:format("~ts", [case is_atom(Why) of
                                                    true -> atom_to_list(Why);
                                                    false -> Why
                                                end])),
    {Msg, Hint} =
        case Kind of
            nif -> {<<"the NIF library cannot load: ", Text/binary,
                      " (install libpq5 and libjansson4, or use the release tarball built for this"
                      " broker's Erlang/OTP, which carries them; see docs/install.md)">>,
                    "restart the plugin or VerneMQ once the library is there"};
            config -> {Text, "fix the configuration and restart the plugin"}
        end,
    logger:error("vmq_pgevents: not recording: ~ts (the broker goes on without it; ~ts)", [Msg, Hint]),
    persistent_term:put(?PROBLEM, Msg),
    catch vmq_pgevents_conn:init_table(0),
    catch vmq_pgevents_nif:configure(#{hooks => []}),   %% nothing piles up in memory
    {ok, #{samples => [catch sample()]}}.

%% why the plugin is not recording, when it could not start; undefined otherwise
-spec problem() -> binary() | undefined.
problem() ->
    persistent_term:get(?PROBLEM, undefined).

%% rows written per second over the last minute (from 5 s samples)
handle_call(written_per_second, _From, State = #{samples := Samples}) ->
    Rate = try
               {T1, W1} = sample(),
               {T0, W0} = lists:last(Samples),
               case T1 - T0 of
                   0 -> 0.0;
                   Ms -> (W1 - W0) * 1000 / Ms
               end
           catch _:_ -> 0.0
           end,
    {reply, Rate, State};
handle_call(_Req, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(sample, State = #{samples := Samples}) ->
    erlang:send_after(?SAMPLE_MS, self(), sample),
    {noreply, warn_listeners(State#{samples := lists:sublist([sample() | Samples], ?SAMPLES)})};
handle_info({timeout, _, sweep_conns}, State) ->
    erlang:start_timer(?SWEEP_MS, self(), sweep_conns),
    vmq_pgevents_conn:sweep(?SWEEP_MS),
    {noreply, State};
handle_info({vmq_pgevents_log, Level, Msg}, State) ->
    logger:log(Level, "vmq_pgevents: ~ts", [Msg]),
    {noreply, State};
handle_info(_Msg, State) ->
    {noreply, State}.

terminate(_Reason, #{stop_timeout_ms := Timeout}) ->
    vmq_pgevents_nif:stop(Timeout),
    drain_logs(),
    %% VerneMQ may go on calling the hooks (they stay registered when the
    %% application stops by itself or at vmq-admin node stop)
    logger:info("vmq_pgevents: stopped; events of hooks called until it starts again are not "
                "recorded (counted in dropped_after_stop)"),
    ok;
terminate(_Reason, _State) ->
    persistent_term:erase(?PROBLEM),
    ok.

%% once for each listener whose plugin chain leaves the plugin out (at
%% start, and within 5 s of a listener started at run time)
warn_listeners(State = #{warned := Warned}) ->
    Now = vmq_pgevents_listeners:warnings(),
    [logger:warning("vmq_pgevents: ~ts (name vmq_pgevents first in that listener's "
                    "auth_plugins and authz_plugins; see docs/install.md)", [W])
     || W <- Now -- Warned],
    State#{warned := lists:usort(Warned ++ Now)};
warn_listeners(State) ->
    State.

drain_logs() ->
    receive
        {vmq_pgevents_log, Level, Msg} ->
            logger:log(Level, "vmq_pgevents: ~ts", [Msg]),
            drain_logs()
    after 0 ->
        ok
    end.

%% (0.0 while the server is busy starting or not there: for status only)
written_per_second() ->
    try gen_server:call(?MODULE, written_per_second, 2000)
    catch exit:_ -> 0.0
    end.

sample() ->
    #{written := W} = vmq_pgevents_nif:status(),
    {erlang:monotonic_time(millisecond), W}.

masked_dsn() ->
    case maps:get(dsn_masked, vmq_pgevents_nif:status(), <<>>) of
        <<>> -> <<"libpq defaults (PG* environment)">>;
        Dsn -> Dsn
    end.
