%% @doc Test stand-in for clique (VerneMQ's CLI library), shaped like the
%% calls vmq_webhooks_cli makes: register_command/4 (command words, key
%% specs with typecast, flag specs, fun(Cmd, Keys, Flags) -> [Status]),
%% register_usage/2, register_config/2 (fun(KeyPath, Value)) and
%% register_config_whitelist/1, register_formatter/2 (fun(Value) -> shown).
%% run/1, set/1 and show/1 play `vmq-admin ...', `vmq-admin set key=value'
%% and `vmq-admin show key' against what was registered.
-module(clique).
-compile({no_auto_import, [registered/0]}).

-export([register_command/4, register_usage/2, register_config/2,
         register_config_whitelist/1, register_formatter/2]).
-export([registered/0, reset/0, run/1, set/1, show/1]).

-define(KEY, {?MODULE, registered}).

add(X) -> persistent_term:put(?KEY, registered() ++ [X]).
registered() -> persistent_term:get(?KEY, []).
reset() -> persistent_term:erase(?KEY), ok.

register_command(Cmd, KeySpecs, FlagSpecs, Callback)
  when is_list(Cmd), is_list(KeySpecs), is_list(FlagSpecs), is_function(Callback, 3) ->
    [true = io_lib:printable_list(W) || W <- Cmd],
    [true = is_function(F, 1) || {_, [{typecast, F}]} <- KeySpecs],
    add({command, Cmd, KeySpecs, FlagSpecs, Callback}),
    ok.

register_usage(Cmd, Usage) when is_list(Cmd) ->
    _ = iolist_to_binary(Usage),
    add({usage, Cmd, Usage}),
    ok.

%% KeyPath: the key's words, as clique looks it up (cuttlefish_variable:tokenize)
register_config(KeyPath, Callback) when is_list(KeyPath), is_function(Callback, 2) ->
    [nomatch = string:find(W, ".") || W <- KeyPath],
    add({config, KeyPath, Callback}),
    ok.

%% KeyPath as for register_config: show/1 passes the app env's value
%% through it (VerneMQ's clique: clique_config, get_local_env_vals)
register_formatter(KeyPath, Callback) when is_list(KeyPath), is_function(Callback, 1) ->
    add({formatter, KeyPath, Callback}),
    ok.

register_config_whitelist(Keys) when is_list(Keys) ->
    add({whitelist, Keys}),
    ok.

%% run(["vmq-admin", "pgevents", "enable", "hook=on_deliver"]) -> [Status]
run(Words) ->
    {Cmd, Args} = lists:splitwith(fun(W) -> not lists:member($=, W) end, Words),
    case [C || {command, C0, _, _, _} = C <- registered(), C0 =:= Cmd] of
        [{command, _, KeySpecs, _, Callback}] ->
            Keys = [begin
                        [K, V] = string:split(A, "="),
                        Key = list_to_atom(K),
                        {Key, [{typecast, F}]} = lists:keyfind(Key, 1, KeySpecs),
                        case F(V) of
                            {error, _} = E -> throw(E);
                            T -> {Key, T}
                        end
                    end || A <- Args],
            Callback(Cmd, Keys, []);
        [] -> {error, {no_such_command, Cmd}}
    end.

%% set("vmq_pgevents.topic_exclude=a/#"): what `vmq-admin set' does for a
%% whitelisted key: the value reaches the app env (as cuttlefish maps it),
%% then the callback registered for the key's words runs; what it returns
%% is printed ("" when all went well)
set(KeyVal) ->
    [Key, Val] = string:split(KeyVal, "="),
    [{whitelist, White}] = [W || {whitelist, _} = W <- registered()],
    true = lists:member(Key, White),
    ["vmq_pgevents", AppKey] = Words = string:split(Key, "."),
    application:set_env(vmq_pgevents, list_to_atom(AppKey), Val),
    [{config, _, Callback}] = [C || {config, K, _} = C <- registered(), K =:= Words],
    Callback(Words, Val).

%% show("vmq_pgevents.dsn"): what `vmq-admin show' prints for any key of
%% the plugin's schema, whitelisted or not: the app env's value, through
%% the formatter registered for the key's words if there is one
show(Key) ->
    ["vmq_pgevents", AppKey] = Words = string:split(Key, "."),
    {ok, Val} = application:get_env(vmq_pgevents, list_to_atom(AppKey)),
    case [F || {formatter, K, F} <- registered(), K =:= Words] of
        [] -> Val;
        [F | _] -> F(Val)
    end.
