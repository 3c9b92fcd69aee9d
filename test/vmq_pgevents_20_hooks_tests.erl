%% @doc The hook contract and what single hook calls turn into: declared
%% hooks match the NIF's table and the module's exports, hook filters,
%% payload truncation, odd but legal inputs, malformed inputs, the
%% on_deliver_m5/5 corner, on_message_drop's promise.
-module(vmq_pgevents_20_hooks_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, {"", <<"cid">>}).

contract_test() ->
    _ = application:load(vmq_pgevents),
    {ok, Declared} = application:get_env(vmq_pgevents, vmq_plugin_hooks),
    Pairs = [{F, A} || {vmq_pgevents, F, A, []} <- Declared],
    ?assertEqual(length(Declared), length(Pairs)),
    ?assertEqual(lists:sort(vmq_pgevents_nif:hooks()), lists:sort(Pairs)),
    Exports = vmq_pgevents:module_info(exports),
    [?assert(lists:member(P, Exports)) || P <- Pairs],
    %% every arity the contract lists, including both on_deliver_m5 arities
    [?assert(lists:member(P, Pairs)) ||
        P <- [{auth_on_register, 5}, {auth_on_register, 6}, {auth_on_register_m5, 6},
              {auth_on_register_m5, 7}, {on_deliver, 7}, {on_deliver_m5, 5},
              {on_deliver_m5, 7}, {on_message_drop, 3}, {on_topic_unsubscribed, 2},
              {on_session_expired, 1}, {on_auth_m5, 3}]].

with_plugin(Table, Env, Fun) -> pgev_app:with_plugin(Table, Env, Fun).

rows(Table) ->
    pgev_app:flush(),
    pgev_app:rows(Table).

hooks_filter_test_() ->
    {timeout, 60, fun() ->
        with_plugin("hooks_filter", [{hooks, "on_publish, on_deliver"}], fun() ->
            Results = pgev_broker:replay("test/traces/scenario_a.trace"),
            Recorded = [H || {H, _, _, _} <- Results, H =:= on_publish orelse H =:= on_deliver],
            Rows = rows("hooks_filter"),
            ?assertEqual([atom_to_binary(H) || H <- Recorded],
                         [maps:get(<<"hook">>, R) || R <- Rows]),
            %% switched on at run time: the next call is recorded
            ok = vmq_pgevents:set_hooks(all),
            ok = vmq_pgevents:on_client_gone(?S),
            ?assertEqual(<<"on_client_gone">>, maps:get(<<"hook">>, lists:last(rows("hooks_filter")))),
            ?assertMatch({error, _}, vmq_pgevents:set_hooks([no_such_hook]))
        end)
    end}.

bad_hook_config_test() ->
    _ = application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, hooks, "on_publish,on_nothing"),
    try
        ?assertMatch({error, <<"hooks: unknown hook on_nothing", _/binary>>}, vmq_pgevents_config:read())
    after
        application:unload(vmq_pgevents)
    end.

%% VerneMQ names a client by (mountpoint, client_id): two tenants' dev-1
%% are two clients. The timeline and the journey take the mountpoint by
%% name (default: VerneMQ's default mountpoint '', never all of them).
tenants_test_() ->
    {timeout, 60, fun() ->
        T = "hooks_tenants",
        with_plugin(T, [], fun() ->
            Session = fun(Mp, Payload) ->
                              S = {Mp, <<"dev-1">>},
                              next = vmq_pgevents:auth_on_register({{127, 0, 0, 1}, 1}, S, <<"u">>, <<"pw">>, true),
                              ok = vmq_pgevents:on_register({{127, 0, 0, 1}, 1}, S, <<"u">>),
                              ok = vmq_pgevents:on_publish(<<"u">>, S, 0, [<<"t">>], Payload, false),
                              ok = vmq_pgevents:on_client_gone(S)
                      end,
            Session("tenant-a", <<"a1">>),
            Session("tenant-b", <<"b1">>),
            Session("", <<"d1">>),
            Session("tenant-a", <<"a2">>),
            pgev_app:flush(),
            Q = fun(Sql) -> string:trim(pgev_pg:sql(Sql)) end,
            Pub = fun(Call) -> Q("SELECT string_agg(convert_from(payload, 'UTF8'), ' ' ORDER BY ts, seq) FROM "
                                 ++ Call ++ " WHERE hook = 'on_publish'") end,
            ?assertEqual("a1 a2", Pub(T ++ "_timeline('dev-1', mountpoint => 'tenant-a')")),
            ?assertEqual("b1", Pub(T ++ "_timeline('dev-1', mountpoint => 'tenant-b')")),
            ?assertEqual("d1", Pub(T ++ "_timeline('dev-1')")),                 %% the default mountpoint
            ?assertEqual("d1", Pub(T ++ "_timeline('dev-1', '-infinity')")),    %% the old signature
            ?assertEqual("8", Q("SELECT count(*) FROM " ++ T ++ "_timeline('dev-1', mountpoint => 'tenant-a')")),
            ?assertEqual("2|0", Q("SELECT count(*) || '|' || count(to_client_id) FROM " ++ T ++
                                  "_journey('dev-1', '-infinity', mountpoint => 'tenant-a')")),
            ?assertEqual("1", Q("SELECT count(*) FROM " ++ T ++ "_journey('dev-1', '-infinity')")),
            %% the connections view keeps them apart too (one row each: these
            %% calls come from one process, so one connection id)
            ?assertEqual("|1 tenant-a|1 tenant-b|1",
                         Q("SELECT string_agg(mountpoint || '|' || n, ' ' ORDER BY mountpoint) FROM "
                           "(SELECT mountpoint, count(*) n FROM " ++ T ++ "_connections WHERE client_id = 'dev-1' "
                           "GROUP BY 1) c"))
        end)
    end}.

truncation_and_odd_inputs_test_() ->
    {timeout, 60, fun() ->
        with_plugin("odd_inputs", [{payload_max_bytes, 10}], fun() ->
            Big = binary:copy(<<"x">>, 100),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"a">>, <<>>, <<"b">>], Big, true),
            %% IPv6 peer, a mountpoint with non-ASCII code points
            next = vmq_pgevents:auth_on_register({{0, 0, 0, 0, 0, 0, 0, 1}, 1883},
                                                 {[16#4E2D, $x], <<"c6">>}, undefined,
                                                 undefined, empty),
            %% client id that is not UTF-8, topic with emoji
            ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"bad", 255, 0>>}, 0,
                                         [<<"t", 240, 159, 152, 128>>], <<>>, 0),
            [R1, R2, R3] = rows("odd_inputs"),
            ?assertMatch(#{<<"payload">> := <<"\\x78787878787878787878">>,
                           <<"payload_size">> := 100, <<"payload_truncated">> := true,
                           <<"payload_json">> := null, <<"topic">> := <<"a//b">>,
                           <<"retain">> := true}, R1),
            ?assertMatch(#{<<"peer_addr">> := <<"::1">>, <<"peer_port">> := 1883,
                           <<"mountpoint">> := <<16#4E2D/utf8, "x">>, <<"username">> := null,
                           <<"clean_session">> := null}, R2),
            ?assertMatch(#{<<"client_id">> := <<"bad\\xff\\x00">>,
                           <<"extra">> := #{<<"escaped">> := [<<"client_id">>]},
                           <<"topic">> := <<"t", 240, 159, 152, 128>>,
                           <<"payload">> := <<"\\x">>, <<"retain">> := false}, R3)
        end)
    end}.

malformed_test_() ->
    {timeout, 60, fun() ->
        with_plugin("malformed", [], fun() ->
            #{malformed := M0, rejected := Rej0,
              per_hook := #{on_publish := #{malformed := PM0, recorded := PR0}}} = vmq_pgevents:status(),
            %% wrong types in every position: the hook still answers, the row
            %% says which arguments it could not read
            ?assertEqual(ok, vmq_pgevents:on_publish(self(), {1, 2, 3}, <<"q">>, 42, [a], #{})),
            ?assertEqual(next, vmq_pgevents:auth_on_subscribe(<<"u">>, ?S, [{[<<"a">>], 1} | bad])),
            [R1, R2] = rows("malformed"),
            ?assertEqual([<<"username">>, <<"subscriber_id">>, <<"qos">>, <<"topic">>,
                          <<"payload">>, <<"retain">>],
                         maps:get(<<"malformed">>, maps:get(<<"extra">>, R1))),
            ?assertEqual([<<"topics">>], maps:get(<<"malformed">>, maps:get(<<"extra">>, R2))),
            ?assertMatch(#{<<"client_id">> := <<"cid">>, <<"topics">> := null}, R2),
            #{malformed := M1, per_hook := #{on_publish := #{malformed := PM1, recorded := PR1}}} =
                vmq_pgevents:status(),
            ?assertEqual({2, 1, 1}, {M1 - M0, PM1 - PM0, PR1 - PR0}),
            %% a hook name or arity the NIF does not know: rejected, counted
            ?assertEqual({error, unknown_hook}, vmq_pgevents_nif:event(on_nothing, [], undefined)),
            ?assertEqual({error, unknown_hook}, vmq_pgevents_nif:event(on_publish, [a], undefined)),
            ?assertEqual({error, unknown_hook}, vmq_pgevents_nif:event(on_publish, not_a_list, undefined)),
            #{rejected := Rej1} = vmq_pgevents:status(),
            ?assertEqual(3, Rej1 - Rej0)
        end)
    end}.

deliver_m5_test_() ->
    {timeout, 60, fun() ->
        with_plugin("deliver_m5", [], fun() ->
            T = [<<"t">>],
            %% /5 then /7 (no other plugin answered /5): one row, from /7
            next = vmq_pgevents:on_deliver_m5(<<"u">>, ?S, T, <<"one">>, #{}),
            next = vmq_pgevents:on_deliver_m5(<<"u">>, ?S, 1, T, <<"one">>, false, #{}),
            %% /5 answered by another plugin: /7 never comes; the delivery is
            %% recorded at the next /5 (without QoS and retain)
            next = vmq_pgevents:on_deliver_m5(<<"u">>, ?S, T, <<"two">>, #{}),
            next = vmq_pgevents:on_deliver_m5(<<"u">>, ?S, T, <<"three">>, #{}),
            next = vmq_pgevents:on_deliver_m5(<<"u">>, ?S, 0, T, <<"three">>, false, #{}),
            Rows = rows("deliver_m5"),
            ?assertEqual([{<<"\\x6f6e65">>, 1}, {<<"\\x74776f">>, null}, {<<"\\x7468726565">>, 0}],
                         [{maps:get(<<"payload">>, R), maps:get(<<"qos">>, R)} || R <- Rows])
        end)
    end}.

message_drop_test_() ->
    {timeout, 60, fun() ->
        with_plugin("message_drop", [], fun() ->
            ok = vmq_pgevents:on_message_drop(?S, fun() -> error(boom) end, queue_full),
            ok = vmq_pgevents:on_message_drop(?S, fun() -> {[<<"a">>], 2, <<"p">>, #{}} end,
                                              max_packet_size_exceeded),
            ok = vmq_pgevents:on_message_drop(?S, not_a_fun, expired),
            [R1, R2, R3] = rows("message_drop"),
            ?assertMatch(#{<<"reason">> := <<"queue_full">>,
                           <<"extra">> := #{<<"message">> := <<"unavailable">>}}, R1),
            ?assertMatch(#{<<"reason">> := <<"max_packet_size_exceeded">>, <<"topic">> := <<"a">>,
                           <<"qos">> := 2, <<"payload">> := <<"\\x70">>, <<"properties">> := #{}}, R2),
            ?assertMatch(#{<<"reason">> := <<"expired">>}, R3)
        end)
    end}.

%% on_message_drop's promise may read the message store (a stored offline
%% message): it is called only when the drop is recorded, not when the
%% hook is disabled or the plugin stopped (it was, for every drop)
message_drop_promise_test_() ->
    {timeout, 60, fun() ->
        Self = self(),
        Promise = fun() -> Self ! promised, {[<<"a">>], 1, <<"p">>, #{}} end,
        Promised = fun() -> receive promised -> true after 0 -> false end end,
        with_plugin("message_drop_promise", [], fun() ->
            ok = vmq_pgevents:on_message_drop(?S, Promise, queue_full),
            ?assert(Promised()),
            ?assertEqual(ok, vmq_pgevents:disable("on_message_drop")),
            ?assertEqual(false, vmq_pgevents_nif:wants(on_message_drop, 3)),
            ok = vmq_pgevents:on_message_drop(?S, Promise, queue_full),
            ?assertNot(Promised()),
            vmq_pgevents:enable("on_message_drop"),
            ok = vmq_pgevents:on_message_drop(?S, Promise, expired),
            ?assert(Promised()),
            ?assertEqual([{<<"queue_full">>, <<"a">>}, {<<"expired">>, <<"a">>}],
                         [{maps:get(<<"reason">>, R), maps:get(<<"topic">>, R)} || R <- rows("message_drop_promise")])
        end),
        %% stopped: VerneMQ may still call the hook
        ok = vmq_pgevents:on_message_drop(?S, Promise, queue_full),
        ?assertNot(Promised())
    end}.

%% A database in another encoding than UTF-8 (LATIN1 here) gets the rows
%% converted by the server: the plugin's connection says it sends UTF-8,
%% whatever the DSN or PGCLIENTENCODING say. Read back as UTF-8 bytes.
latin1_database_test_() ->
    {timeout, 60, fun() ->
        Db = "pgev_latin1",
        pgev_pg:sql("DROP DATABASE IF EXISTS " ++ Db),
        pgev_pg:sql("CREATE DATABASE " ++ Db ++ " ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' "
                    "TEMPLATE template0"),
        Dsn = string:replace(pgev_pg:dsn(), "dbname=postgres", "dbname=" ++ Db ++
                                 " options='-c client_encoding=LATIN1'"),
        Q = fun(Sql) ->
                    string:trim(pgev_pg:pg("psql", [pgev_pg:dir(), "-d", Db, "-At", "-c", Sql]))
            end,
        pgev_app:start("latin1", [{dsn, lists:flatten(Dsn)}]),
        try
            ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"café"/utf8>>}, 0, [<<"t">>, <<"é"/utf8>>],
                                         <<"p">>, false),
            pgev_app:flush(),
            ?assertEqual("636166c3a9 742fc3a9",
                         Q("SELECT encode(convert_to(client_id, 'UTF8'), 'hex') || ' ' || "
                           "encode(convert_to(topic, 'UTF8'), 'hex') FROM latin1 "
                           "WHERE hook = 'on_publish'"))
        after
            pgev_app:stop(),
            pgev_pg:sql("DROP DATABASE IF EXISTS " ++ Db ++ " WITH (FORCE)")
        end
    end}.
