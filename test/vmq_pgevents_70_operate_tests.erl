%% @doc Operating it like a VerneMQ plugin: the vmq-admin commands (through
%% the clique stand-in in test/clique.erl), vmq-admin set for run-time keys,
%% metrics after a known sequence of events, and the filters: topic
%% include/exclude ($SYS/# excluded by default), mountpoints, payload modes.
-module(vmq_pgevents_70_operate_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, {"", <<"op">>}).

with_plugin(Table, Env, Fun) ->
    clique:reset(),
    pgev_app:with_plugin(Table, Env, Fun).

hooks_of(Table) ->
    pgev_app:flush(),
    [maps:get(<<"hook">>, R) || R <- pgev_app:rows(Table)].

registration_test_() ->
    {timeout, 60, fun() ->
        with_plugin("op_registration", [], fun() ->
            R = clique:registered(),
            Cmds = lists:sort([lists:last(C) || {command, C, _, _, _} <- R]),
            ?assertEqual(["check", "client", "disable", "enable", "flush", "show", "status"], Cmds),
            ?assertEqual([["vmq-admin", "pgevents"]], [C || {usage, C, _} <- R]),
            [{whitelist, White}] = [W || {whitelist, _} = W <- R],
            %% the keys the README says `vmq-admin set` takes while running
            ?assertEqual(lists:sort(["vmq_pgevents." ++ K
                                     || K <- ["hooks", "batch_size", "flush_interval_ms",
                                              "queue_max_events", "queue_max_bytes",
                                              "payload_max_bytes", "payload_json_max_bytes",
                                              "payload_mode", "payload_modes", "topic_include",
                                              "topic_exclude", "mountpoints", "payload_topics",
                                              "peer_addr"]]),
                         lists:sort(White)),
            %% every whitelisted key has its callback; dsn and table do not change at run time
            ?assertEqual(lists:sort(White), lists:sort([string:join(K, ".") || {config, K, _} <- R])),
            ?assertNot(lists:member("vmq_pgevents.dsn", White))
        end)
    end}.

%% `vmq-admin show vmq_pgevents.dsn' (or cli_dsn): clique prints any key
%% of the schema from the app env, whitelisted or not; the plugin's
%% formatter shows it with its secrets masked
show_dsn_test_() ->
    {timeout, 60, fun() ->
        with_plugin("op_show_dsn", [], fun() ->
            Dsn = "host=db.example user=vmq password='dsn pw1' sslpassword=key-pw2 dbname=mqtt",
            application:set_env(vmq_pgevents, cli_dsn, Dsn),
            Shown = clique:show("vmq_pgevents.cli_dsn"),
            ?assertEqual(["dbname='mqtt'", "host='db.example'", "password=****",
                          "sslpassword=****", "user='vmq'"],
                         lists:sort(string:split(Shown, " ", all))),
            application:set_env(vmq_pgevents, cli_dsn, "postgresql://vmq:uri-pw3@db.example/mqtt"),
            ?assertEqual(nomatch, string:find(clique:show("vmq_pgevents.cli_dsn"), "uri-pw3")),
            ?assertNotEqual(nomatch, string:find(clique:show("vmq_pgevents.cli_dsn"), "password=****")),
            application:set_env(vmq_pgevents, cli_dsn, "host=x password=pw4 'unclosed"),
            ?assertEqual("(hidden: libpq cannot read it)", clique:show("vmq_pgevents.cli_dsn")),
            application:set_env(vmq_pgevents, cli_dsn, ""),
            ?assertEqual("", clique:show("vmq_pgevents.cli_dsn")),
            %% the running dsn (the test's, no secret in it) as status shows it
            ?assertEqual(binary_to_list(maps:get(dsn_masked, vmq_pgevents:status())),
                         clique:show("vmq_pgevents.dsn"))
        end)
    end}.

%% After `vmq-admin plugin disable' the plugin's commands stay registered
%% (clique cannot take them back): each says the plugin is not running.
%% They crashed (noproc, or a badmatch on the unloaded hook list).
stopped_commands_test_() ->
    {timeout, 60, fun() ->
        with_plugin("op_stopped", [], fun() -> ok end),
        NotRunning = [{alert, [{text, "vmq_pgevents is not running (vmq-admin plugin show)"}]}],
        [?assertEqual({C, NotRunning}, {C, clique:run(["vmq-admin", "pgevents" | C])})
         || C <- [["show"], ["status"], ["enable", "hook=on_publish"], ["disable", "hook=on_publish"],
                  ["flush"], ["check"], ["client", "client-id=x"]]]
    end}.

commands_test_() ->
    {timeout, 60, fun() ->
        T = "op_commands",
        with_plugin(T, [], fun() ->
            ShowRow = fun(H) ->
                              [{table, Sh}] = clique:run(["vmq-admin", "pgevents", "show"]),
                              hd([maps:from_list(Rw) || Rw <- Sh, proplists:get_value(hook, Rw) =:= H])
                      end,
            #{written := Deliv0, recording := "on"} = ShowRow("on_deliver"),
            #{written := Pub0} = ShowRow("on_publish"),
            [{text, Off}] = clique:run(["vmq-admin", "pgevents", "disable", "hook=on_deliver"]),
            ?assertNotEqual(nomatch, string:find(Off, "overrides the configured hooks until the plugin restarts")),
            ?assertThrow({error, {invalid_value, "on_nothing"}},
                         clique:run(["vmq-admin", "pgevents", "enable", "hook=on_nothing"])),
            Calls = pgev_broker:replay("test/traces/scenario_a.trace"),
            Deliveries = length([x || {on_deliver, _, _, _} <- Calls]),
            ?assertEqual(4, Deliveries),
            Hooks = hooks_of(T),
            ?assertEqual(length(Calls) - Deliveries, length(Hooks)),
            ?assertNot(lists:member(<<"on_deliver">>, Hooks)),
            ?assertMatch(#{recording := "off (run-time)", written := Deliv0, payload_mode := "truncated"},
                         ShowRow("on_deliver")),
            #{recording := "on (run-time)", written := Pub1} = ShowRow("on_publish"),
            ?assertEqual(2, Pub1 - Pub0),
            [{text, _}] = clique:run(["vmq-admin", "pgevents", "enable", "hook=all"]),
            next = vmq_pgevents:on_deliver(<<"u">>, ?S, 0, [<<"t">>], <<"x">>, false, #{}),
            [{text, Flushed}] = clique:run(["vmq-admin", "pgevents", "flush"]),
            ?assertEqual("wrote 1 rows", Flushed),
            [{table, Status}] = clique:run(["vmq-admin", "pgevents", "status"]),
            St = maps:from_list([{N, V} || [{name, N}, {value, V}] <- Status]),
            ?assertMatch(#{"connection" := "connected", "queued events" := "0",
                           "last error" := "-"}, St),
            ?assertNotEqual(nomatch, string:find(maps:get("dsn", St), "dbname='postgres'"))
        end)
    end}.

%% metric values after a known sequence: trace a, once, into a fresh table
metrics_test_() ->
    {timeout, 60, fun() ->
        T = "op_metrics",
        with_plugin(T, [], fun() ->
            {ok, {vmq_pgevents_metrics, metrics, []}} = application:get_env(vmq_pgevents, vmq_metrics_mfa),
            Before = vmq_pgevents_metrics:metrics(),
            pgev_broker:replay("test/traces/scenario_a.trace"),
            pgev_app:flush(),
            After = vmq_pgevents_metrics:metrics(),
            Delta = fun(Id) ->
                            {_, _, Id, _, _, A} = lists:keyfind(Id, 3, After),
                            {_, _, Id, _, _, B} = lists:keyfind(Id, 3, Before),
                            A - B
                    end,
            ?assertEqual(2, Delta(pgevents_written_on_publish)),
            ?assertEqual(4, Delta(pgevents_written_on_deliver)),
            ?assertEqual(5, Delta(pgevents_recorded_auth_on_register)),
            ?assertEqual(0, Delta(pgevents_dropped_on_publish)),
            {gauge, [], pgevents_connected, pgevents_connected, _, 1} =
                lists:keyfind(pgevents_connected, 3, After),
            {gauge, [], _, _, _, 0} = lists:keyfind(pgevents_queue_events, 3, After),
            %% what status alone showed before: there, from status, nothing amiss
            [?assertEqual({Id, 0}, {Id, Delta(Id)})
             || Id <- [pgevents_dead_letter_lost, pgevents_dropped_after_stop, pgevents_journal_no_room,
                       pgevents_compress_failures]],
            [?assertMatch({Id, {gauge, [], Id, Id, _, 0}}, {Id, lists:keyfind(Id, 3, After)})
             || Id <- [pgevents_journal_disk_segments, pgevents_compress_refused,
                       pgevents_listener_warnings]],
            {counter, [], _, _, _, Created} = lists:keyfind(pgevents_partitions_created, 3, After),
            ?assertEqual(maps:get(partitions_created, vmq_pgevents:status()), Created),
            %% the shape vmq_metrics takes: unique ids, labels as {atom, string}
            Ids = [Id || {_, _, Id, _, _, _} <- After],
            ?assertEqual(length(Ids), length(lists:usort(Ids))),
            [true = (Type =:= counter orelse Type =:= gauge) andalso is_atom(Name) andalso
                 is_binary(Desc) andalso is_integer(V) andalso
                 lists:all(fun({K, L}) -> is_atom(K) andalso is_list(L) end, Labels)
             || {Type, Labels, _, Name, Desc, V} <- After],
            {counter, [{hook, "on_publish"}], _, pgevents_written, _, _} =
                lists:keyfind(pgevents_written_on_publish, 3, After)
        end)
    end}.

filters_test_() ->
    {timeout, 60, fun() ->
        T = "op_filters",
        with_plugin(T, [{payload_modes, "on_deliver:none, on_publish:full"},
                        {payload_max_bytes, 4}], fun() ->
            Pub = fun(Topic, P) -> vmq_pgevents:on_publish(<<"u">>, ?S, 0, Topic, P, false) end,
            %% the NIF's count, so far (it lives as long as the VM)
            #{per_hook := #{on_publish := #{filtered := F0}}} = vmq_pgevents:status(),
            ok = Pub([<<"$SYS">>, <<"broker">>, <<"uptime">>], <<"1">>),   %% excluded by default
            ok = Pub([<<"a">>, <<"b">>], <<"full payload">>),
            next = vmq_pgevents:on_deliver(<<"u">>, ?S, 0, [<<"a">>], <<"secret">>, false, #{}),
            ok = vmq_pgevents:on_offline_message(?S, 0, [<<"a">>], <<"12345678">>, false),
            %% a dropped message is filtered by its topic too; one whose
            %% message VerneMQ could not read (no topic, no payload) is not
            #{per_hook := #{on_message_drop := #{filtered := D0}}} = vmq_pgevents:status(),
            ok = vmq_pgevents:on_message_drop(?S, fun() -> {[<<"$SYS">>, <<"x">>], 0, <<"p">>, #{}} end, expired),
            ok = vmq_pgevents:on_message_drop(?S, fun() -> error end, queue_full),
            %% a topic of more than 64 levels is matched as any other (the
            %% filters have at most 64)
            Deep = [<<"w">> || _ <- lists:seq(1, 65)],
            ok = Pub([<<"$SYS">> | Deep], <<"deep $SYS">>),
            ok = Pub(Deep, <<"deep">>),
            #{per_hook := #{on_publish := #{filtered := F1}, on_message_drop := #{filtered := D1}}} =
                vmq_pgevents:status(),
            ?assertEqual({2, 1}, {F1 - F0, D1 - D0}),     %% the $SYS and deep $SYS publish; the $SYS drop
            Rows = (fun() -> pgev_app:flush(), pgev_app:rows(T) end)(),
            ?assertEqual([{<<"on_publish">>, <<"a/b">>, <<"\\x66756c6c207061796c6f6164">>, false},
                          {<<"on_deliver">>, <<"a">>, <<"\\x">>, true},
                          {<<"on_offline_message">>, <<"a">>, <<"\\x31323334">>, true},
                          {<<"on_message_drop">>, null, null, null},
                          {<<"on_publish">>, iolist_to_binary(lists:join(<<"/">>, Deep)), <<"\\x64656570">>, false}],
                         [{maps:get(<<"hook">>, R), maps:get(<<"topic">>, R), maps:get(<<"payload">>, R),
                           maps:get(<<"payload_truncated">>, R)} || R <- Rows]),
            %% vmq-admin set: an include list and a mountpoint list, at run time
            "" = clique:set("vmq_pgevents.topic_include=sensors/+/temp"),
            ok = Pub([<<"sensors">>, <<"k1">>, <<"temp">>], <<"21">>),
            ok = Pub([<<"sensors">>, <<"k1">>, <<"hum">>], <<"40">>),
            "" = clique:set("vmq_pgevents.mountpoints=tenant1"),
            ok = vmq_pgevents:on_client_gone({"tenant1", <<"t1">>}),
            ok = vmq_pgevents:on_client_gone({"", <<"other">>}),
            ok = Pub([<<"sensors">>, <<"k2">>, <<"temp">>], <<"22">>),    %% default mountpoint: out
            pgev_app:flush(),
            New = lists:nthtail(5, pgev_app:rows(T)),
            ?assertEqual([{<<"on_publish">>, <<"sensors/k1/temp">>, <<>>},
                          {<<"on_client_gone">>, null, <<"tenant1">>}],
                         [{maps:get(<<"hook">>, R), maps:get(<<"topic">>, R), maps:get(<<"mountpoint">>, R)}
                          || R <- New]),
            %% a bad filter is refused with a clear message, the old ones stay
            application:set_env(vmq_pgevents, topic_include, "a/#/b"),
            ?assertEqual({error, <<"not a valid MQTT topic filter: a/#/b">>}, vmq_pgevents:reconfigure()),
            application:set_env(vmq_pgevents, topic_include, lists:join("/", Deep)),
            ?assertMatch({error, <<"a topic filter of more than 64 levels: w/w/", _/binary>>},
                         vmq_pgevents:reconfigure()),
            %% and through vmq-admin set, which says so
            ?assertEqual("not applied: not a valid MQTT topic filter: a/#/b",
                         clique:set("vmq_pgevents.topic_include=a/#/b")),
            %% ... and puts back the value in use: shown, and no later set of
            %% another key fails for it (they all did, with its message)
            ?assertEqual("sensors/+/temp", clique:show("vmq_pgevents.topic_include")),
            ?assertEqual("", clique:set("vmq_pgevents.batch_size=100")),
            ?assertEqual("100", clique:show("vmq_pgevents.batch_size"))
        end)
    end}.

%% VerneMQ 2.2's per-listener chains (vmq_server's listeners env, as a
%% boot config and `vmq-admin listener start' leave it): a chain without
%% vmq_pgevents is named, one with it or none at all is not.
listener_chain_warnings_test() ->
    Listeners =
        [{mqtt, [{{{127, 0, 0, 1}, 1883}, [{mountpoint, ""}]},
                 {{"127.0.0.1", 1884}, [{auth_plugins, [vmq_passwd]}, {authz_plugins, [vmq_acl]}]},
                 {{"127.0.0.1", 1885}, [{auth_plugins, [vmq_pgevents, vmq_passwd]},
                                        {authz_plugins, [vmq_pgevents, vmq_acl]}]},
                 {{{127, 0, 0, 1}, 1886}, [{auth_plugins, undefined}, {authz_plugins, [vmq_acl]}]}]},
         {mqttws, [{{{0, 0, 0, 0}, 8080}, [{auth_plugins, [vmq_passwd]}]}]},
         {vmq, [{{{127, 0, 0, 1}, 44053}, [{auth_plugins, [x]}]}]},   %% not MQTT
         {http, [{{{127, 0, 0, 1}, 8888}, []}]}],
    ?assertEqual([<<"logins on 0.0.0.0:8080 are not recorded: vmq_pgevents is not in its auth_plugins">>,
                  <<"logins on 127.0.0.1:1884 are not recorded: vmq_pgevents is not in its auth_plugins">>,
                  <<"publish and subscribe authorizations on 127.0.0.1:1884 are not recorded: "
                    "vmq_pgevents is not in its authz_plugins">>,
                  <<"publish and subscribe authorizations on 127.0.0.1:1886 are not recorded: "
                    "vmq_pgevents is not in its authz_plugins">>],
                 vmq_pgevents_listeners:warnings(Listeners)),
    ?assertEqual([], vmq_pgevents_listeners:warnings(undefined)),
    %% outside VerneMQ (no vmq_config): none
    ?assertEqual([], vmq_pgevents_listeners:warnings()),
    %% and status shows them, one row each
    Rows = vmq_pgevents_cli:status_rows((vmq_pgevents_nif:status())#{warnings => [<<"w1">>, <<"w2">>]}, 0),
    ?assertEqual(["w1", "w2"], [V || [{name, "warning"}, {value, V}] <- Rows]).
