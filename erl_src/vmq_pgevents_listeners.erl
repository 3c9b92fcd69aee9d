%% @doc VerneMQ 2.2's per-listener plugin chains: a listener with its own
%% auth_plugins or authz_plugins calls only the plugins named there for
%% those hooks, so a chain that leaves vmq_pgevents out means its logins
%% (auth_on_register*, on_auth_m5) or its authorizations (auth_on_publish*,
%% auth_on_subscribe*) are not recorded. This module finds such listeners
%% in VerneMQ's listener configuration (boot config and those started with
%% `vmq-admin listener start'), for the log and for status.
-module(vmq_pgevents_listeners).

-export([warnings/0, warnings/1]).

%% the warnings for the running broker's listeners ([] outside VerneMQ or
%% on a release without per-listener chains)
-spec warnings() -> [binary()].
warnings() ->
    try warnings(vmq_config:get_env(listeners))
    catch _:_ -> []
    end.

%% Listeners: [{Type, [{{Addr, Port}, Opts}]}], as vmq_server keeps them
-spec warnings(term()) -> [binary()].
warnings(Listeners) when is_list(Listeners) ->
    lists:usort([warning(Addr, Port, Key)
                 || {Type, Ls} <- Listeners, is_list(Ls), mqtt_type(Type),
                    {{Addr, Port}, Opts} <- Ls, is_list(Opts),
                    Key <- [auth_plugins, authz_plugins],
                    left_out(proplists:get_value(Key, Opts))]);
warnings(_) ->
    [].

mqtt_type(T) -> lists:member(T, [mqtt, mqtts, mqttws, mqttwss]).

left_out(Chain) when is_list(Chain) -> not lists:member(vmq_pgevents, Chain);
left_out(_) -> false.   %% undefined: the global chain, where the plugin is

warning(Addr, Port, Key) ->
    What = case Key of
               auth_plugins -> "logins";
               authz_plugins -> "publish and subscribe authorizations"
           end,
    iolist_to_binary(io_lib:format("~ts on ~ts:~w are not recorded: vmq_pgevents is not in its ~ts",
                                   [What, addr(Addr), Port, Key])).

addr(A) when is_tuple(A) -> inet:ntoa(A);
addr(A) when is_list(A) -> A;
addr(A) when is_binary(A) -> A;
addr(A) -> io_lib:format("~p", [A]).
