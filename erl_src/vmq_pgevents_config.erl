%% @doc Reads the application environment (set by vernemq.conf through
%% priv/vmq_pgevents.schema, or by advanced.config) and turns it into the
%% map the NIF's start/2 takes. All validation messages name the key.
-module(vmq_pgevents_config).

-export([read/0, runtime/0, runtime_keys/0, parse_hooks/1, hook_names/0]).

-define(APP, vmq_pgevents).

-spec read() -> {ok, map()} | {error, binary()}.
read() ->
    try
        Hooks = parse_hooks(env(hooks, all)),
        AutoCreate = bool(auto_create, env(auto_create, true)),
        Config0 = #{dsn => text(dsn, env(dsn, "")),
                    table => text(table, env(table, "vmq_events")),
                    node => atom_to_binary(node(), utf8),
                    hooks => Hooks,
                    batch_size => int(batch_size, 1),
                    flush_interval_ms => int(flush_interval_ms, 1),
                    queue_max_events => int(queue_max_events, 1),
                    queue_max_bytes => int(queue_max_bytes, 1),
                    payload_max_bytes => int(payload_max_bytes, 0),
                    payload_json_max_bytes => int(payload_json_max_bytes, 0),
                    backoff_min_ms => int(backoff_min_ms, 1),
                    backoff_max_ms => int(backoff_max_ms, 1),
                    pg_timeout_ms => int(pg_timeout_ms, 100),
                    stop_timeout_ms => at_most(stop_timeout_ms, int(stop_timeout_ms, 0), 3600000),
                    conn_table_max => int(conn_table_max, 0),
                    payload_modes => payload_modes(),
                    payload_topics => text(payload_topics, env(payload_topics, "")),
                    peer_addr => peer_addr(),
                    topic_include => text(topic_include, env(topic_include, "")),
                    topic_exclude => text(topic_exclude, env(topic_exclude, "$SYS/#")),
                    mountpoints => text(mountpoints, env(mountpoints, "")),
                    spool_dir => spool_dir(),
                    spool_max_bytes => int(spool_max_bytes, 0),
                    journal => bool(journal, env(journal, true)) andalso not overflow_drop(),
                    partition => partition(),
                    distribute => distribute(),
                    retention_s => period(retention, env(retention, "off")),
                    compress_after_s => compress_after(),
                    compress_every_ms => int(compress_every_ms, 10),
                    running_row_every_ms => int(running_row_every_ms, 1000),
                    journal_sync_ms => int(journal_sync_ms, 1),
                    journal_memory_bytes => int(journal_memory_bytes, 0)},
        Config = case AutoCreate of
                     true -> Config0#{schema_sql => schema_sql()};
                     false -> Config0
                 end,
        {ok, Config}
    catch
        throw:{config, Msg} -> {error, iolist_to_binary(Msg)}
    end.

%% The keys that can change while the plugin runs (vmq-admin set), as the
%% NIF's configure/1 takes them.
-spec runtime_keys() -> [atom()].
runtime_keys() ->
    [hooks, batch_size, flush_interval_ms, queue_max_events, queue_max_bytes,
     payload_max_bytes, payload_json_max_bytes, payload_mode, payload_modes,
     topic_include, topic_exclude, mountpoints, payload_topics, peer_addr].

-spec runtime() -> {ok, map()} | {error, binary()}.
runtime() ->
    case read() of
        {ok, C} ->
            {ok, maps:with([hooks, batch_size, flush_interval_ms, queue_max_events,
                            queue_max_bytes, payload_max_bytes, payload_json_max_bytes,
                            payload_modes, topic_include, topic_exclude, mountpoints,
                            payload_topics, peer_addr], C)};
        Error -> Error
    end.

%% payload_mode (default for every hook) + payload_modes ("on_deliver:none,...")
%% -> #{Hook => none | truncated | full} for every hook
payload_modes() ->
    Default = mode(payload_mode, env(payload_mode, truncated)),
    Overrides = case env(payload_modes, "") of
                    M when is_map(M) -> maps:to_list(M);
                    L when is_list(L); is_binary(L) ->
                        [case string:split(string:trim(Item), ":") of
                             [H, Mo] -> {string:trim(H), string:trim(Mo)};
                             _ -> throw({config, io_lib:format("payload_modes: expected hook:mode, got ~ts",
                                                               [Item])})
                         end || Item <- string:lexemes(unicode:characters_to_list(L), ","),
                                string:trim(Item) =/= ""];
                    Other -> throw({config, io_lib:format("payload_modes: ~0p", [Other])})
                end,
    Known = hook_names(),
    Base = maps:from_list([{H, Default} || H <- Known]),
    lists:foldl(fun({H, Mo}, Acc) ->
                        Acc#{hook_name(H, Known) => mode(payload_modes, Mo)}
                end, Base, Overrides).

mode(_, M) when M =:= none; M =:= truncated; M =:= full -> M;
mode(K, M) when is_list(M); is_binary(M) ->
    case string:lowercase(unicode:characters_to_list(M)) of
        "none" -> none;
        "truncated" -> truncated;
        "full" -> full;
        _ -> mode(K, bad)
    end;
mode(K, M) -> throw({config, io_lib:format("~ts: expected none, truncated or full, got ~0p", [K, M])}).

%% hooks: all | "all" | "on_publish,on_deliver" | [on_publish, "on_deliver"]
-spec parse_hooks(term()) -> all | [atom()].
parse_hooks(all) -> all;
parse_hooks(<<"all">>) -> all;
parse_hooks("all") -> all;
parse_hooks(Bin) when is_binary(Bin) -> parse_hooks(binary_to_list(Bin));
parse_hooks([C | _] = Str) when is_integer(C) ->
    parse_hooks([string:trim(S) || S <- string:lexemes(Str, ", "), string:trim(S) =/= ""]);
parse_hooks(List) when is_list(List) ->
    Known = hook_names(),
    lists:usort([hook_name(H, Known) || H <- List]);
parse_hooks(Hook) when is_atom(Hook) -> parse_hooks([Hook]);
parse_hooks(Other) ->
    throw({config, io_lib:format("hooks: expected all or a list of hook names, got ~0p", [Other])}).

hook_name(H, Known) when is_atom(H) ->
    case lists:member(H, Known) of
        true -> H;
        false -> throw({config, io_lib:format("hooks: unknown hook ~0p (known: ~ts)",
                                              [H, lists:join(", ", [atom_to_list(K) || K <- Known])])})
    end;
hook_name(H, Known) when is_list(H); is_binary(H) ->
    Name = unicode:characters_to_list(H),
    case [K || K <- Known, atom_to_list(K) =:= Name] of
        [K] -> K;
        [] -> hook_name(list_to_atom(Name), Known)
    end;
hook_name(H, _) ->
    throw({config, io_lib:format("hooks: not a hook name: ~0p", [H])}).

%% the hook names this plugin declares to VerneMQ ([] once the application
%% is unloaded: `vmq-admin plugin disable')
-spec hook_names() -> [atom()].
hook_names() ->
    lists:usort([F || {_, F, _, _} <- application:get_env(?APP, vmq_plugin_hooks, [])]).

env(Key, Default) ->
    application:get_env(?APP, Key, Default).

text(Key, V) when is_binary(V) -> text(Key, binary_to_list(V));
text(Key, V) when is_list(V) ->
    case unicode:characters_to_binary(V) of
        B when is_binary(B) -> B;
        _ -> throw({config, io_lib:format("~ts: not a string", [Key])})
    end;
text(Key, V) when is_atom(V) -> text(Key, atom_to_list(V));
text(Key, _) -> throw({config, io_lib:format("~ts: not a string", [Key])}).

at_most(_Key, V, Max) when V =< Max -> V;
at_most(Key, _, Max) -> throw({config, io_lib:format("~ts: must be at most ~b", [Key, Max])}).

int(Key, Min) ->
    case env(Key, undefined) of
        V when is_integer(V), V >= Min -> V;
        V when is_list(V) ->
            try list_to_integer(V) of
                I when I >= Min -> I;
                _ -> throw({config, io_lib:format("~ts: must be at least ~b", [Key, Min])})
            catch error:badarg -> throw({config, io_lib:format("~ts: not an integer: ~ts", [Key, V])})
            end;
        V -> throw({config, io_lib:format("~ts: must be an integer of at least ~b, got ~0p",
                                          [Key, Min, V])})
    end.

bool(_, true) -> true;
bool(_, false) -> false;
bool(_, on) -> true;
bool(_, off) -> false;
bool(_, "on") -> true;
bool(_, "off") -> false;
bool(_, "true") -> true;
bool(_, "false") -> false;
bool(Key, V) -> throw({config, io_lib:format("~ts: expected on/off, got ~0p", [Key, V])}).

partition() ->
    case env(partition, day) of
        P when P =:= day; P =:= "day" -> <<"day">>;
        P when P =:= hour; P =:= "hour" -> <<"hour">>;
        P when P =:= none; P =:= "none" -> <<"none">>;
        P -> throw({config, io_lib:format("partition: expected day, hour or none, got ~0p", [P])})
    end.

%% what is kept of a client's address: full | network | none
peer_addr() ->
    case env(peer_addr, full) of
        P when P =:= full; P =:= "full" -> full;
        P when P =:= network; P =:= "network" -> network;
        P when P =:= none; P =:= "none" -> none;
        P -> throw({config, io_lib:format("peer_addr: expected full, network or none, got ~0p", [P])})
    end.

%% whether a new events table is made a Citus distributed table
distribute() ->
    case env(distribute, auto) of
        D when D =:= off; D =:= "off" -> <<"off">>;
        D when D =:= on; D =:= "on" -> <<"on">>;
        D when D =:= auto; D =:= "auto" -> <<"auto">>;
        D -> throw({config, io_lib:format("distribute: expected off, on or auto, got ~0p", [D])})
    end.

%% compress_after needs partitions to compress
compress_after() ->
    case {period(compress_after, env(compress_after, "off")), partition()} of
        {S, <<"none">>} when S > 0 ->
            throw({config, "compress_after needs partition = day or hour (it compresses whole partitions)"});
        {S, _} -> S
    end.

%% off | <N>d | <N>h -> seconds (0: off), for the setting Key
period(_, off) -> 0;
period(K, V) when is_atom(V) -> period(K, atom_to_list(V));
period(K, V) when is_binary(V) -> period(K, binary_to_list(V));
period(_, "off") -> 0;
period(K, V) when is_list(V) ->
    case re:run(V, "^([1-9][0-9]{0,5})([dh])$", [{capture, all_but_first, list}]) of
        {match, [N, "d"]} -> list_to_integer(N) * 86400;
        {match, [N, "h"]} -> list_to_integer(N) * 3600;
        nomatch -> throw({config, io_lib:format("~ts: expected off, <N>d or <N>h, got ~0p", [K, V])})
    end;
period(K, V) ->
    throw({config, io_lib:format("~ts: expected off, <N>d or <N>h, got ~0p", [K, V])}).

%% the journal's directory: absolute, made if missing
spool_dir() ->
    _ = overflow_drop(),   %% checked
    Dir = filename:absname(unicode:characters_to_list(text(spool_dir, env(spool_dir, "data/vmq_pgevents")))),
    %% a directory that cannot be made is not a reason to record nothing:
    %% the writer then logs "no journal: ..." and keeps events in memory
    _ = filelib:ensure_dir(filename:join(Dir, "x")),
    unicode:characters_to_binary(Dir).

%% overflow (from versions before the one log): drop is journal = off,
%% spool (the default) changes nothing
overflow_drop() ->
    case env(overflow, spool) of
        O when O =:= drop; O =:= "drop" -> true;
        O when O =:= spool; O =:= "spool" -> false;
        O -> throw({config, io_lib:format("overflow: expected spool or drop, got ~0p", [O])})
    end.

schema_sql() ->
    Path = filename:join(vmq_pgevents_nif:priv_dir(), "schema.sql"),
    case file:read_file(Path) of
        {ok, Sql} -> Sql;
        {error, Why} -> throw({config, io_lib:format("auto_create: cannot read ~ts: ~0p", [Path, Why])})
    end.
