%% @doc Owns the writer thread: starts it with the configuration, turns
%% its messages into log lines, and on shutdown stops it (writing what is
%% queued for up to stop_timeout_ms). Also owns the connection table.
-module(vmq_pgevents_server).
-behaviour(gen_server).

-export([start_link/0, written_per_second/0]).

-define(SAMPLE_MS, 5000).
-define(SAMPLES, 13).                %% one minute of 5 s samples
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

init([]) ->
    process_flag(trap_exit, true),
    case vmq_pgevents_config:read() of
        {ok, Config} ->
            vmq_pgevents_conn:init_table(maps:get(conn_table_max, Config)),
            case vmq_pgevents_nif:start(maps:without([conn_table_max, stop_timeout_ms], Config),
                                        self()) of
                ok ->
                    persistent_term:erase({vmq_pgevents, hooks_overridden}),
                    logger:info("vmq_pgevents: recording to table ~ts via ~ts",
                                [maps:get(table, Config), masked_dsn()]),
                    erlang:send_after(?SAMPLE_MS, self(), sample),
                    {ok, #{stop_timeout_ms => maps:get(stop_timeout_ms, Config),
                           samples => [sample()]}};
                {error, Why} ->
                    {stop, {vmq_pgevents_start, Why}}
            end;
        {error, Why} ->
            logger:error("vmq_pgevents: bad configuration: ~ts", [Why]),
            {stop, {bad_config, Why}}
    end.

%% rows written per second over the last minute (from 5 s samples)
handle_call(written_per_second, _From, State = #{samples := Samples}) ->
    {T1, W1} = sample(),
    {T0, W0} = lists:last(Samples),
    Rate = case T1 - T0 of
               0 -> 0.0;
               Ms -> (W1 - W0) * 1000 / Ms
           end,
    {reply, Rate, State};
handle_call(_Req, _From, State) ->
    {reply, {error, unknown_call}, State}.

handle_cast(_Msg, State) ->
    {noreply, State}.

handle_info(sample, State = #{samples := Samples}) ->
    erlang:send_after(?SAMPLE_MS, self(), sample),
    {noreply, State#{samples := lists:sublist([sample() | Samples], ?SAMPLES)}};
handle_info({vmq_pgevents_log, Level, Msg}, State) ->
    logger:log(Level, "vmq_pgevents: ~ts", [Msg]),
    {noreply, State};
handle_info(_Msg, State) ->
    {noreply, State}.

terminate(_Reason, #{stop_timeout_ms := Timeout}) ->
    vmq_pgevents_nif:stop(Timeout),
    drain_logs(),
    ok;
terminate(_Reason, _State) ->
    ok.

drain_logs() ->
    receive
        {vmq_pgevents_log, Level, Msg} ->
            logger:log(Level, "vmq_pgevents: ~ts", [Msg]),
            drain_logs()
    after 0 ->
        ok
    end.

written_per_second() ->
    gen_server:call(?MODULE, written_per_second).

sample() ->
    #{written := W} = vmq_pgevents_nif:status(),
    {erlang:monotonic_time(millisecond), W}.

masked_dsn() ->
    case maps:get(dsn_masked, vmq_pgevents_nif:status(), <<>>) of
        <<>> -> <<"libpq defaults (PG* environment)">>;
        Dsn -> Dsn
    end.
