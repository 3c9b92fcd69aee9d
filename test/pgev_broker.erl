%% @doc Stands in for VerneMQ in the tests: calls the plugin's hooks the
%% way vmq_plugin does, in the process VerneMQ would call them from.
%%
%% - Dispatch by name and arity from the app env vmq_plugin_hooks, as
%%   vmq_plugin_mgr does; all_till_ok hooks must answer next/ok/{ok,_}/
%%   {error,_} (next exhausts this one-plugin chain: {error,
%%   plugin_chain_exhausted}), all hooks may answer anything.
%% - Processes (vernemq-hooks.md, "Which process calls what"): every
%%   CONNECT gets a fresh connection process (auth_on_register*,
%%   on_auth_m5), pending until its on_register*; from then on it is the
%%   client's connection and makes the client's other connection-side
%%   calls (a refused CONNECT never registers, so it never makes them); the
%%   subscriber's connection process makes on_deliver*; one queue process
%%   per client id, outliving its connections, makes the queue-side calls.
%% - Trace files record on_message_drop's promise as {'$fun_result', R};
%%   here it becomes the fun VerneMQ passes.
-module(pgev_broker).

-export([replay/1, replay_calls/1, call/2, all_till_ok_hooks/0]).

all_till_ok_hooks() ->
    [auth_on_register, auth_on_register_m5, on_auth_m5, auth_on_publish,
     auth_on_publish_m5, auth_on_subscribe, auth_on_subscribe_m5, on_unsubscribe,
     on_unsubscribe_m5, on_deliver, on_deliver_m5].

%% Replays a trace file; returns [{Hook, Args, Result, Where}] where Where
%% is {conn, N} or {queue, ClientId}: the process that made the call.
replay(File) ->
    {ok, Calls} = file:consult(File),
    replay_calls(Calls).

replay_calls(Calls) ->
    {Results, State} = lists:mapfoldl(fun step/2, #{conns => #{}, queues => #{}, n => 0}, Calls),
    [P ! stop || P <- procs(State)],
    Results.

step({Hook, Args0}, State0) ->
    Args = [unfun(A) || A <- Args0],
    {Where, Pid, State} = route(Hook, Args, State0),
    {{Hook, Args, call_in(Pid, Hook, Args), Where}, State}.

unfun({'$fun_result', R}) -> fun() -> R end;
unfun(A) -> A.

route(Hook, Args, State = #{conns := Conns, queues := Queues, n := N}) ->
    SubId = subscriber_id(Hook, Args),
    Conn = maps:get(SubId, Conns, #{}),
    case side(Hook, Args) of
        new_connection ->
            Pid = spawn_proc(),
            Where = {conn, N + 1},
            {Where, Pid, State#{conns := Conns#{SubId => Conn#{pending => {Where, Pid}}}, n := N + 1}};
        registration ->
            case maps:find(pending, Conn) of
                {ok, {Where, Pid} = P} ->
                    {Where, Pid, State#{conns := Conns#{SubId => #{current => P}}}};
                error -> error({no_pending_connection_for, Hook, SubId})
            end;
        connection ->
            case maps:find(current, Conn) of
                {ok, {Where, Pid}} -> {Where, Pid, State};
                error ->
                    case maps:find(pending, Conn) of
                        {ok, {Where, Pid}} -> {Where, Pid, State};
                        error -> error({no_connection_for, Hook, SubId})
                    end
            end;
        queue ->
            case maps:find(SubId, Queues) of
                {ok, Pid} -> {{queue, SubId}, Pid, State};
                error ->
                    Pid = spawn_proc(),
                    {{queue, SubId}, Pid, State#{queues := Queues#{SubId => Pid}}}
            end
    end.

side(H, _) when H =:= auth_on_register; H =:= auth_on_register_m5; H =:= on_auth_m5 ->
    new_connection;
side(H, _) when H =:= on_register; H =:= on_register_m5 -> registration;
side(on_topic_unsubscribed, [_, all_topics]) -> queue;
side(on_topic_unsubscribed, _) -> connection;
side(H, _) when H =:= on_offline_message; H =:= on_client_wakeup; H =:= on_client_offline;
                H =:= on_client_gone; H =:= on_session_expired; H =:= on_message_drop ->
    queue;
side(_, _) -> connection.

subscriber_id(H, [S | _]) when H =:= on_offline_message; H =:= on_client_wakeup;
                               H =:= on_client_offline; H =:= on_client_gone;
                               H =:= on_session_expired; H =:= on_message_drop;
                               H =:= on_topic_unsubscribed ->
    S;
subscriber_id(_, [_, S | _]) -> S.

procs(#{conns := C, queues := Q}) ->
    [P || Conn <- maps:values(C), {_, P} <- maps:values(Conn)] ++ maps:values(Q).

spawn_proc() ->
    spawn(fun loop/0).

loop() ->
    receive
        {call, From, Ref, Hook, Args} ->
            From ! {Ref, call(Hook, Args)},
            loop();
        stop -> ok
    end.

call_in(Pid, Hook, Args) ->
    Ref = make_ref(),
    Pid ! {call, self(), Ref, Hook, Args},
    receive {Ref, R} -> R after 10000 -> error({hook_timeout, Hook}) end.

%% vmq_plugin:all/2 and all_till_ok/2 over the one plugin under test
call(Hook, Args) ->
    {ok, Hooks} = application:get_env(vmq_pgevents, vmq_plugin_hooks),
    Arity = length(Args),
    case [M || {M, F, A, _} <- Hooks, F =:= Hook, A =:= Arity] of
        [] -> {error, no_matching_hook_found};
        [M] ->
            R = try apply(M, Hook, Args)
                catch C:E:St -> {hook_raised, C, E, St}
                end,
            case lists:member(Hook, all_till_ok_hooks()) of
                true -> till_ok(R);
                false -> R
            end
    end.

till_ok(next) -> {error, plugin_chain_exhausted};
till_ok(ok) -> ok;
till_ok({ok, _} = R) -> R;
till_ok({error, _} = R) -> R;
till_ok(Other) -> {bad_all_till_ok_answer, Other}.
