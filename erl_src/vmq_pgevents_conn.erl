%% @doc Which MQTT connection an event belongs to (the conn_id column).
%%
%% Hooks run in two kinds of process (see docs/queries.md, "Connections"):
%% - the client's connection process: one process per connection, so its
%%   connection id lives in that process's dictionary and dies with it;
%% - the client's queue process, which outlives connections and sees only
%%   the subscriber id: it looks the id up in an ETS table keyed by
%%   subscriber id, holding the last registered connection ("current"),
%%   the one whose CONNECT is being authenticated ("pending") and when
%%   that began: {SubId, Current, Pending, PendingSinceMs}.
%% A CONNECT refused before it registers leaves an entry with a pending
%% connection only; sweep/1 (the server, every minute) removes those.
%% Nothing here raises: a hook must never throw into VerneMQ.
-module(vmq_pgevents_conn).

-export([init_table/1, conn/0, attempt/1, registered/1, current/1, waking/1,
         own_or_current/1, forget/1, sweep/1]).

-define(KEY, '$vmq_pgevents_conn').
-define(TAB, vmq_pgevents_conns).
-define(MAX_KEY, {?MODULE, max}).

init_table(Max) ->
    case ets:info(?TAB, name) of
        undefined ->
            ets:new(?TAB, [named_table, public, set,
                           {read_concurrency, true}, {write_concurrency, true}]);
        _ -> ok
    end,
    persistent_term:put(?MAX_KEY, Max),
    ok.

%% connection process: its id, made on first use (erlang:unique_integer is
%% unique and increasing for the life of the VM)
conn() ->
    case get(?KEY) of
        undefined ->
            C = erlang:unique_integer([positive, monotonic]),
            put(?KEY, C),
            C;
        C -> C
    end.

%% auth_on_register*, on_auth_m5: this connection is being authenticated
attempt(SubId) ->
    C = conn(),
    try
        Now = erlang:monotonic_time(millisecond),
        ets:update_element(?TAB, SubId, [{3, C}, {4, Now}]) orelse insert_new({SubId, undefined, C, Now})
    catch _:_ -> ok
    end,
    C.

%% on_register*: this connection is now the client's current one
registered(SubId) ->
    C = conn(),
    try
        ets:update_element(?TAB, SubId, [{2, C}, {3, undefined}]) orelse
            insert_new({SubId, C, undefined, 0})
    catch _:_ -> ok
    end,
    C.

%% queue process: the client's current connection
current(SubId) ->
    try ets:lookup(?TAB, SubId) of
        [{_, C, _, _}] -> C;
        _ -> undefined
    catch _:_ -> undefined
    end.

%% on_client_wakeup runs while a CONNECT is between auth and CONNACK
waking(SubId) ->
    try ets:lookup(?TAB, SubId) of
        [{_, _, P, _}] when P =/= undefined -> P;
        [{_, C, _, _}] -> C;
        _ -> undefined
    catch _:_ -> undefined
    end.

%% hooks that run in either process (on_topic_unsubscribed, on_message_drop)
own_or_current(SubId) ->
    case get(?KEY) of
        undefined -> current(SubId);
        C -> C
    end.

%% the session is over (on_client_gone, on_session_expired). On a takeover
%% the old session ends while the new connection is being authenticated:
%% that pending connection is kept (its on_client_wakeup comes next).
forget(SubId) ->
    try
        ets:select_delete(?TAB, [{{SubId, '_', undefined, '_'}, [], [true]}]),
        ets:update_element(?TAB, SubId, {2, undefined})
    catch _:_ -> ok
    end,
    ok.

%% the entries of CONNECTs authenticated more than MaxAgeMs ago that never
%% registered (refused, or the client went away): no current connection,
%% only that pending one. Returns how many went.
sweep(MaxAgeMs) ->
    Before = erlang:monotonic_time(millisecond) - MaxAgeMs,
    try ets:select_delete(?TAB, [{{'_', undefined, '_', '$1'}, [{'<', '$1', Before}], [true]}])
    catch _:_ -> 0
    end.

insert_new(Entry) ->
    Max = persistent_term:get(?MAX_KEY, 0),
    case ets:info(?TAB, size) < Max of
        true -> ets:insert_new(?TAB, Entry);
        false -> false
    end.
