%% @doc The plugin module VerneMQ calls: one function per hook and arity
%% (declared in vmq_plugin_hooks in vmq_pgevents.app.src), plus the
%% operator API (status/0, flush/1, set_hooks/1).
%%
%% Each hook hands its name and raw arguments to the NIF together with the
%% connection id (vmq_pgevents_conn) and returns at once: `next' from
%% all_till_ok hooks (this plugin only observes; it never authorizes,
%% rejects or modifies), `ok' from `all' hooks. Passwords are replaced by
%% the atom `hidden' before anything leaves this module. No hook can raise.
-module(vmq_pgevents).

%% hooks
-export([auth_on_register/5, auth_on_register/6,
         auth_on_register_m5/6, auth_on_register_m5/7,
         on_auth_m5/3,
         on_register/3, on_register_m5/4,
         auth_on_publish/6, auth_on_publish_m5/7,
         on_publish/6, on_publish_m5/7,
         auth_on_subscribe/3, auth_on_subscribe_m5/4,
         on_subscribe/3, on_subscribe_m5/4,
         on_unsubscribe/3, on_unsubscribe_m5/4,
         on_topic_unsubscribed/2,
         on_deliver/6, on_deliver/7,
         on_deliver_m5/5, on_deliver_m5/7,
         on_offline_message/5,
         on_client_wakeup/1, on_client_offline/1, on_client_gone/1,
         on_session_expired/1,
         on_message_drop/3]).
%% operator API
-export([status/0, flush/1, set_hooks/1, enable/1, disable/1, hooks_overridden/0,
         reconfigure/0, keep_applied_env/0, restore_applied_env/1]).

-define(C, vmq_pgevents_conn).
-define(DELIVER5, '$vmq_pgevents_deliver_m5').

%% ---- connection process ----------------------------------------------

auth_on_register(Peer, S, U, _Pw, Clean) ->
    rec(auth_on_register, [Peer, S, U, hidden, Clean], ?C:attempt(S)), next.
auth_on_register(Peer, S, U, _Pw, Clean, Opts) ->
    rec(auth_on_register, [Peer, S, U, hidden, Clean, Opts], ?C:attempt(S)), next.
auth_on_register_m5(Peer, S, U, _Pw, Clean, Props) ->
    rec(auth_on_register_m5, [Peer, S, U, hidden, Clean, Props], ?C:attempt(S)), next.
auth_on_register_m5(Peer, S, U, _Pw, Clean, Props, Opts) ->
    rec(auth_on_register_m5, [Peer, S, U, hidden, Clean, Props, Opts], ?C:attempt(S)), next.
on_auth_m5(U, S, Props) ->
    rec(on_auth_m5, [U, S, Props], ?C:attempt(S)), next.

on_register(Peer, S, U) ->
    rec(on_register, [Peer, S, U], ?C:registered(S)), ok.
on_register_m5(Peer, S, U, Props) ->
    rec(on_register_m5, [Peer, S, U, Props], ?C:registered(S)), ok.

auth_on_publish(U, S, Q, T, P, R) ->
    rec(auth_on_publish, [U, S, Q, T, P, R], ?C:conn()), next.
auth_on_publish_m5(U, S, Q, T, P, R, Props) ->
    rec(auth_on_publish_m5, [U, S, Q, T, P, R, Props], ?C:conn()), next.
on_publish(U, S, Q, T, P, R) ->
    rec(on_publish, [U, S, Q, T, P, R], ?C:conn()), ok.
on_publish_m5(U, S, Q, T, P, R, Props) ->
    rec(on_publish_m5, [U, S, Q, T, P, R, Props], ?C:conn()), ok.

auth_on_subscribe(U, S, Topics) ->
    rec(auth_on_subscribe, [U, S, Topics], ?C:conn()), next.
auth_on_subscribe_m5(U, S, Topics, Props) ->
    rec(auth_on_subscribe_m5, [U, S, Topics, Props], ?C:conn()), next.
on_subscribe(U, S, Topics) ->
    rec(on_subscribe, [U, S, Topics], ?C:conn()), ok.
on_subscribe_m5(U, S, Topics, Props) ->
    rec(on_subscribe_m5, [U, S, Topics, Props], ?C:conn()), ok.

on_unsubscribe(U, S, Topics) ->
    rec(on_unsubscribe, [U, S, Topics], ?C:conn()), next.
on_unsubscribe_m5(U, S, Topics, Props) ->
    rec(on_unsubscribe_m5, [U, S, Topics, Props], ?C:conn()), next.

%% the subscriber's connection process
on_deliver(U, S, Q, T, P, R) ->
    rec(on_deliver, [U, S, Q, T, P, R], ?C:conn()), next.
on_deliver(U, S, Q, T, P, R, Props) ->
    rec(on_deliver, [U, S, Q, T, P, R, Props], ?C:conn()), next.

%% VerneMQ calls on_deliver_m5/5 first and /7 only when the /5 chain ends
%% in an error (this plugin says `next'). /7 carries QoS and retain, so the
%% delivery is recorded there; /5 keeps its arguments in case another
%% plugin answers /5 and /7 never comes: then they are recorded at this
%% process's next /5 call.
on_deliver_m5(U, S, T, P, Props) ->
    record_stale_deliver(),
    put(?DELIVER5, [U, S, T, P, Props]),
    next.
on_deliver_m5(U, S, Q, T, P, R, Props) ->
    erase(?DELIVER5),
    rec(on_deliver_m5, [U, S, Q, T, P, R, Props], ?C:conn()), next.

%% ---- either process ---------------------------------------------------

on_topic_unsubscribed(S, Topics) ->
    rec(on_topic_unsubscribed, [S, Topics], ?C:own_or_current(S)), ok.
on_message_drop(S, Promise, Reason) ->
    %% the promise may read the message store: only for a drop to record
    %% (else the call is made without the message, and counted as before)
    Msg = case wants(on_message_drop, 3) of
              true -> dropped_message(Promise);
              false -> not_read
          end,
    rec(on_message_drop, [S, Msg, Reason], ?C:own_or_current(S)), ok.

%% ---- queue process ----------------------------------------------------

on_offline_message(S, Q, T, P, R) ->
    rec(on_offline_message, [S, Q, T, P, R], ?C:current(S)), ok.
on_client_wakeup(S) ->
    rec(on_client_wakeup, [S], ?C:waking(S)), ok.
on_client_offline(S) ->
    rec(on_client_offline, [S], ?C:current(S)), ok.
on_client_gone(S) ->
    rec(on_client_gone, [S], ?C:current(S)), ?C:forget(S), ok.
on_session_expired(S) ->
    rec(on_session_expired, [S], ?C:current(S)), ?C:forget(S), ok.

%% ---- helpers ------------------------------------------------------------

rec(Hook, Args, Conn) ->
    try vmq_pgevents_nif:event(Hook, Args, Conn)
    catch _:_ -> error
    end.

wants(Hook, Arity) ->
    try vmq_pgevents_nif:wants(Hook, Arity)
    catch _:_ -> false
    end.

record_stale_deliver() ->
    case erase(?DELIVER5) of
        undefined -> ok;
        Args -> rec(on_deliver_m5, Args, ?C:conn())
    end.

%% on_message_drop's second argument is a fun that fetches the message
dropped_message(Promise) when is_function(Promise, 0) ->
    try Promise() catch _:_ -> error end;
dropped_message(_) ->
    error.

%% ---- operator API -------------------------------------------------------

%% @doc Connection state, queue depth, counters (docs/operating.md, "Status").
%% When the plugin could not start (see vmq_pgevents_server), `state' is
%% `not_recording' and `last_error' says why. `warnings': the listeners
%% whose plugin chains leave this plugin out (vmq_pgevents_listeners).
-spec status() -> map().
status() ->
    S = (vmq_pgevents_nif:status())#{warnings => vmq_pgevents_listeners:warnings()},
    case vmq_pgevents_server:problem() of
        undefined -> S;
        Why -> S#{state := not_recording, last_error := Why}
    end.

%% @doc Writes what is queued (earlier starts' files too) now; waits up to TimeoutMs for it.
-spec flush(non_neg_integer()) -> {ok, non_neg_integer()} | {error, timeout}.
flush(TimeoutMs) ->
    #{written := Before} = vmq_pgevents_nif:status(),
    ok = vmq_pgevents_nif:flush(),
    Deadline = erlang:monotonic_time(millisecond) + TimeoutMs,
    wait_flushed(Before, Deadline).

wait_flushed(Before, Deadline) ->
    #{pending := Pending, written := Written, spool_bytes := Spool, state := State} =
        vmq_pgevents_nif:status(),
    case Pending =:= 0 andalso (Spool =:= 0 orelse State =:= stopped) of
        true -> {ok, Written - Before};
        false ->
            case erlang:monotonic_time(millisecond) >= Deadline of
                true -> {error, timeout};
                false ->
                    vmq_pgevents_nif:flush(),
                    timer:sleep(5),
                    wait_flushed(Before, Deadline)
            end
    end.

%% @doc Which hooks are recorded from now on: all, or a list of names.
%% A run-time choice: it holds until the plugin restarts, when the
%% configured `hooks' apply again.
-spec set_hooks(term()) -> ok | {error, term()}.
set_hooks(Hooks) ->
    try vmq_pgevents_config:parse_hooks(Hooks) of
        Parsed ->
            persistent_term:put({?MODULE, hooks_overridden}, true),
            vmq_pgevents_nif:configure(#{hooks => Parsed})
    catch throw:{config, Msg} -> {error, iolist_to_binary(Msg)}
    end.

%% @doc Starts recording a hook (every arity), or `all'.
-spec enable(atom() | string()) -> ok | {error, term()}.
enable(Hook) -> switch(Hook, true).

%% @doc Stops recording a hook (every arity), or `all'.
-spec disable(atom() | string()) -> ok | {error, term()}.
disable(Hook) -> switch(Hook, false).

switch(Hook, On) ->
    try
        Names = case vmq_pgevents_config:parse_hooks(Hook) of
                    all -> vmq_pgevents_config:hook_names();
                    L -> L
                end,
        #{per_hook := Per} = vmq_pgevents_nif:status(),
        Now = [H || {H, #{recording := true}} <- maps:to_list(Per)],
        set_hooks(case On of
                      true -> lists:usort(Now ++ Names);
                      false -> Now -- Names
                  end)
    catch throw:{config, Msg} -> {error, iolist_to_binary(Msg)}
    end.

%% @doc true when enable/disable/set_hooks changed what the configuration says.
-spec hooks_overridden() -> boolean().
hooks_overridden() ->
    persistent_term:get({?MODULE, hooks_overridden}, false).

%% @doc Applies the run-time keys of the application environment (after
%% `vmq-admin set vmq_pgevents.KEY=VALUE'); a run-time hook choice stays.
-spec reconfigure() -> ok | {error, binary()}.
reconfigure() ->
    R = case vmq_pgevents_config:runtime() of
            {ok, C} ->
                vmq_pgevents_nif:configure(case hooks_overridden() of
                                               true -> maps:remove(hooks, C);
                                               false -> C
                                           end);
            Error -> Error
        end,
    R =:= ok andalso keep_applied_env(),
    R.

%% @doc The run-time keys' values in the application environment, as the
%% plugin now uses them (at start and after each reconfigure/0 that took).
-spec keep_applied_env() -> true.
keep_applied_env() ->
    persistent_term:put({?MODULE, applied_env},
                        [{K, application:get_env(vmq_pgevents, K)} || K <- vmq_pgevents_config:runtime_keys()]),
    true.

%% @doc Puts back Key's applied value (vmq-admin set writes the environment
%% before the plugin may refuse the value): the environment, `vmq-admin
%% show' and a restart keep what the plugin uses.
-spec restore_applied_env(atom()) -> ok.
restore_applied_env(Key) ->
    case lists:keyfind(Key, 1, persistent_term:get({?MODULE, applied_env}, [])) of
        {Key, {ok, V}} -> application:set_env(vmq_pgevents, Key, V);
        {Key, undefined} -> application:unset_env(vmq_pgevents, Key);
        false -> ok
    end.
