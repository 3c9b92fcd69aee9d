%% @doc `vmq-admin pgevents ...' through clique, as vmq_webhooks_cli does:
%%   show | status | enable hook=H | disable hook=H | flush |
%%   client client-id=C [mountpoint=M] [limit=N] | check
%% and `vmq-admin set vmq_pgevents.KEY=VALUE' for the run-time keys.
%% The tables and texts are built by plain functions (show_rows/2,
%% status_rows/2, switch_text/3), tested without clique.
-module(vmq_pgevents_cli).

-export([register_cli/0, unregister_cli/0]).
-export([show_rows/2, status_rows/2, switch_text/3, usage/0]).

-define(CMD, ["vmq-admin", "pgevents"]).

register_cli() ->
    Keys = ["vmq_pgevents." ++ atom_to_list(K) || K <- vmq_pgevents_config:runtime_keys()],
    %% clique looks a callback up by the key's words, as cuttlefish splits
    %% them (["vmq_pgevents", "batch_size"]), and prints what it returns
    [clique:register_config(string:tokens(K, "."), fun config_changed/2) || K <- Keys],
    %% `vmq-admin show KEY' prints any key of the schema from the app env,
    %% through the key's formatter: the connection strings' secrets masked
    [clique:register_formatter(["vmq_pgevents", K], fun masked_dsn/1) || K <- ["dsn", "cli_dsn"]],
    ok = whitelist(Keys),
    clique:register_usage(?CMD, usage()),
    command(["show"], [],
            fun(_, [], []) ->
                    [clique_status:table(show_rows(vmq_pgevents:status(),
                                                   vmq_pgevents:hooks_overridden()))];
               (_, _, _) -> usage_alert()
            end),
    command(["status"], [],
            fun(_, [], []) ->
                    [clique_status:table(status_rows(vmq_pgevents:status(),
                                                     vmq_pgevents_server:written_per_second()))];
               (_, _, _) -> usage_alert()
            end),
    [command([atom_to_list(Op)], [hook_keyspec()],
             fun(_, [{hook, H}], []) ->
                     R = vmq_pgevents:Op(H),
                     [clique_status:text(switch_text(Op, H, R))];
                (_, _, _) -> usage_alert()
             end) || Op <- [enable, disable]],
    command(["client"], client_keyspecs(),
            fun(_, Args, []) ->
                    case proplists:get_value('client-id', Args) of
                        undefined -> usage_alert();
                        C -> client_output(C, proplists:get_value(mountpoint, Args, ""),
                                           proplists:get_value(limit, Args, 20))
                    end;
               (_, _, _) -> usage_alert()
            end),
    command(["check"], [],
            fun(_, [], []) -> [clique_status:table(vmq_pgevents_ask:check())];
               (_, _, _) -> usage_alert()
            end),
    command(["flush"], [],
            fun(_, [], []) ->
                    case vmq_pgevents:flush(30000) of
                        {ok, N} -> [clique_status:text(io_lib:format("wrote ~b rows", [N]))];
                        {error, timeout} ->
                            [clique_status:alert([clique_status:text(
                               "not everything was written within 30 s (see status)")])]
                    end;
               (_, _, _) -> usage_alert()
            end),
    ok.

%% a vmq-admin pgevents command, answered only while the plugin runs: its
%% commands stay registered after `vmq-admin plugin disable' (clique has no
%% way to take them back), when its server and its hook list are gone
command(Words, KeySpecs, Callback) ->
    clique:register_command(?CMD ++ Words, KeySpecs, [],
                            fun(Cmd, Keys, Flags) ->
                                    case whereis(vmq_pgevents_server) of
                                        undefined ->
                                            [clique_status:alert([clique_status:text(
                                               "vmq_pgevents is not running (vmq-admin plugin show)")])];
                                        _ -> Callback(Cmd, Keys, Flags)
                                    end
                            end).

%% VerneMQ's plugin manager loads each plugin's schema into clique from
%% code:priv_dir(App) whenever a plugin is enabled or disabled, and finds
%% nothing when the plugin directory is not named vmq_pgevents. Then this
%% plugin's priv dir (found next to its ebin) is added to the directory
%% list the plugin manager always loads (vmq_plugin's default_schema_dir,
%% for as long as the plugin runs), and the schema is loaded again now.
whitelist(Keys) ->
    case clique:register_config_whitelist(Keys) of
        ok -> ok;
        {error, {invalid_config_keys, _}} ->
            Priv = vmq_pgevents_nif:priv_dir(),
            Default = schema_dirs(),
            application:set_env(vmq_plugin, default_schema_dir, Default ++ [Priv]),
            Plugins = try vmq_plugin:info(raw) catch _:_ -> [] end,
            Dirs = Default ++ [Priv | [D || {application, App, _} <- Plugins,
                                            is_list(D = code:priv_dir(App))]],
            ok = clique_config:load_schema(lists:usort(Dirs)),
            clique:register_config_whitelist(Keys);
        Error -> Error
    end.

%% undoes whitelist/1's change to vmq_plugin's default_schema_dir
%% a connection string as `vmq-admin show' prints it: every value libpq
%% marks secret (password, sslpassword) as ****, never the string itself
masked_dsn(V) ->
    M = try vmq_pgevents_nif:mask_dsn(V) catch _:_ -> <<>> end,
    case {M, V} of
        {<<>>, ""} -> "";
        {<<>>, _} -> "(hidden: libpq cannot read it)";
        _ -> binary_to_list(M)
    end.

unregister_cli() ->
    application:set_env(vmq_plugin, default_schema_dir, schema_dirs()),
    ok.

%% vmq_plugin's default_schema_dir without this plugin's priv dir
schema_dirs() ->
    Priv = vmq_pgevents_nif:priv_dir(),
    case application:get_env(vmq_plugin, default_schema_dir, []) of
        L when is_list(L) -> [D || D <- L, is_list(D), D =/= Priv];
        _ -> []
    end.

%% the new value is in the application environment (clique put it there):
%% applied now; a value the plugin cannot use is refused, the one before
%% put back into the environment, and logged (VerneMQ's vmq-admin prints
%% "set to" whatever the callback says)
config_changed(KeyPath, Value) ->
    case vmq_pgevents:reconfigure() of
        ok -> "";
        {error, Why} ->
            catch vmq_pgevents:restore_applied_env(list_to_existing_atom(lists:last(KeyPath))),
            Text = "not applied: " ++ unicode:characters_to_list(Why),
            logger:warning("vmq_pgevents: vmq-admin set ~ts=~0p: ~ts (the value before stays in use)",
                           [string:join(KeyPath, "."), Value, Text]),
            Text
    end.

hook_keyspec() ->
    {hook, [{typecast, fun(H) when is_list(H) ->
                               Known = vmq_pgevents_config:hook_names(),
                               %% (none known: the plugin is not running, the command says so)
                               case H =:= "all" orelse Known =:= [] orelse
                                   lists:member(H, [atom_to_list(K) || K <- Known]) of
                                   true -> H;
                                   false -> {error, {invalid_value, H}}
                               end;
                          (H) -> {error, {invalid_value, H}}
                       end}]}.

client_keyspecs() ->
    Text = fun(V) when is_list(V) -> V; (V) -> {error, {invalid_value, V}} end,
    [{'client-id', [{typecast, Text}]},
     {mountpoint, [{typecast, Text}]},
     {limit, [{typecast, fun(V) ->
                                 case catch list_to_integer(V) of
                                     N when is_integer(N), N >= 1, N =< 1000 -> N;
                                     _ -> {error, {invalid_value, V}}
                                 end
                         end}]}].

client_output(ClientId, Mountpoint, Limit) ->
    case vmq_pgevents_ask:client(unicode:characters_to_binary(ClientId),
                                 unicode:characters_to_binary(Mountpoint), Limit) of
        {ok, []} -> [clique_status:text("no events of that client")];
        {ok, Rows} -> [clique_status:table(Rows)];
        {error, Why} ->
            [clique_status:alert([clique_status:text(
               "PostgreSQL did not answer: " ++ Why ++
               " (vmq_pgevents.cli_dsn names the connection; see docs/operating.md)")])]
    end.

usage_alert() ->
    [clique_status:alert([clique_status:text(usage())])].

usage() ->
    ["vmq-admin pgevents <sub-command>\n\n",
     "  Record VerneMQ hook events in PostgreSQL.\n\n",
     "  Sub-commands:\n",
     "    show                 hooks: recording, written, dropped, payload mode\n",
     "    status               connection, queue, last error, rows written/s\n",
     "    enable hook=<Hook>   start recording a hook (or hook=all) until restart\n",
     "    disable hook=<Hook>  stop recording a hook (or hook=all) until restart\n",
     "    flush                write what is queued now\n",
     "    client client-id=<C> [mountpoint=<M>] [limit=<N>]\n",
     "                         that client's last N (20) events, from PostgreSQL\n",
     "    check                connection, schema, partitions ahead, the last day's completeness\n\n",
     "  vmq-admin set vmq_pgevents.<key>=<value> changes batch_size, flush_interval_ms,\n",
     "  queue_max_events, queue_max_bytes, payload_max_bytes, payload_json_max_bytes,\n",
     "  payload_mode, payload_modes, payload_topics, peer_addr, topic_include,\n",
     "  topic_exclude, mountpoints, hooks\n",
     "  while running (not persisted).\n"].

%% hook | recording | written | dropped | payload mode (one row per hook)
-spec show_rows(map(), boolean()) -> [[{atom(), term()}]].
show_rows(#{per_hook := Per}, Overridden) ->
    Note = case Overridden of true -> " (run-time)"; false -> "" end,
    [[{hook, atom_to_list(H)},
      {recording, case R of true -> "on" ++ Note; false -> "off" ++ Note end},
      {written, W}, {dropped, D}, {payload_mode, atom_to_list(M)}]
     || {H, #{recording := R, written := W, dropped := D, payload_mode := M}}
            <- lists:sort(maps:to_list(Per))].

%% one row per figure: name | value
-spec status_rows(map(), number()) -> [[{atom(), term()}]].
status_rows(S, PerSecond) ->
    Dsn = case maps:get(dsn_masked, S) of <<>> -> "libpq defaults (PG* environment)"; D -> binary_to_list(D) end,
    Rows = [{"connection", atom_to_list(maps:get(state, S))},
            {"dsn", Dsn},
            {"queued events", maps:get(pending, S)},
            {"queued bytes", maps:get(queued_bytes, S)},
            {"earlier starts' files (bytes)", maps:get(spool_bytes, S)},
            {"left in the journal at stops", maps:get(spooled, S)},
            {"oldest unwritten event", io_lib:format("~.3f s", [maps:get(oldest_age_us, S) / 1.0e6])},
            {"written", maps:get(written, S)},
            {"written per second (last minute)", io_lib:format("~.1f", [float(PerSecond)])},
            {"dropped (no room: journal, disk limit or queue)", maps:get(dropped, S)},
            {"dropped after a stop", maps:get(dropped_after_stop, S, 0)},
            {"dead-lettered", maps:get(dead_lettered, S)},
            {"reconnects", maps:get(reconnects, S)},
            {"last error", case maps:get(last_error, S) of <<>> -> "-"; E -> binary_to_list(E) end},
            {"spool_dir", case maps:get(spool_error, S, <<>>) of
                              <<>> -> "ok";
                              E -> "unusable: " ++ binary_to_list(E)
                          end},
            {"journal", journal_text(S)},
            {"payload_topics", case maps:get(payload_topics, S, <<>>) of
                                   <<>> -> "-";
                                   PT -> binary_to_list(PT)
                               end},
            {"peer_addr", atom_to_list(maps:get(peer_addr, S, full))}]
        ++ [{"warning", binary_to_list(W)} || W <- maps:get(warnings, S, [])],
    [[{name, N}, {value, lists:flatten(io_lib:format("~ts", [to_text(V)]))}] || {N, V} <- Rows].

%% on, with its bytes on disk, in memory and the age of its last sync; or why not
journal_text(#{journal := true, journal_bytes := B, journal_sync_age_us := Age} = S) ->
    io_lib:format("on: ~b bytes on disk, ~b in memory~ts, synced ~.1f s ago~ts",
                  [B, maps:get(journal_memory_bytes, S, 0),
                   case maps:get(journal_memory_error, S, <<>>) of
                       <<>> -> "";
                       M -> " (" ++ binary_to_list(M) ++ ")"
                   end,
                   Age / 1.0e6, case maps:get(journal_error, S, <<>>) of
                                    <<>> -> "";
                                    E -> "; " ++ binary_to_list(E)
                                end]);
journal_text(#{journal_error := E}) when E =/= <<>> -> "off: " ++ binary_to_list(E);
journal_text(_) -> "off".

to_text(V) when is_integer(V) -> integer_to_list(V);
to_text(V) -> V.

-spec switch_text(enable | disable, string(), ok | {error, term()}) -> iolist().
switch_text(Op, H, ok) ->
    io_lib:format("~ts: ~ts. This run-time setting overrides the configured hooks "
                  "until the plugin restarts.",
                  [H, case Op of enable -> "recording"; disable -> "not recording" end]);
switch_text(_, H, {error, Why}) ->
    io_lib:format("~ts: ~ts", [H, Why]).
