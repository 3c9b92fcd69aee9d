%% @doc Replays every recorded trace (test/traces/, real VerneMQ 2.1.2
%% calls) through the hook functions as VerneMQ makes them, and checks the
%% rows field by field against what the trace says. The expected values
%% are computed here from the trace, independently of the C normalizer.
-module(vmq_pgevents_30_trace_tests).
-include_lib("eunit/include/eunit.hrl").

%% one trace, also against a Citus cluster (vmq_pgevents_87_citus_tests)
-export([scenario/2]).

-define(PASSWORD_MARKERS, [<<"xxx">>, <<"encrypted">>, <<"gYw9CqvKM74">>]).

scenario_test_() ->
    [{"trace " ++ S, {timeout, 120, fun() -> scenario(S, local) end}} || S <- ["a", "b", "c", "d", "e"]].

%% one trace: every call answered correctly, one row per recorded event.
%% distributed (a Citus distributed table): an event without a client id
%% (on_auth_m5 before it is known) has client_id '' instead of NULL
scenario(S, Kind) ->
    Table = "trace_" ++ S,
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ Table ++ " CASCADE"),
    pgev_app:start(Table),
    Before = vmq_pgevents:status(),
    try
        Results = pgev_broker:replay("test/traces/scenario_" ++ S ++ ".trace"),
        [check_answer(H, R) || {H, _, R, _} <- Results],
        pgev_app:flush(),
        Rows = pgev_app:rows(Table),
        Expected = [{H, A, case {Kind, E} of
                               {distributed, #{<<"client_id">> := null}} -> E#{<<"client_id">> => <<>>};
                               _ -> E
                           end} || {H, A, E} <- expected_rows(Results)],
        ?assertEqual(length(Expected), length(Rows)),
        lists:foreach(fun({Exp, Row}) -> check_row(Exp, Row) end, lists:zip(Expected, Rows)),
        check_sequence(Rows),
        check_connections(Results, Rows),
        pgev_views:check(S, Table),
        check_no_password(Table),
        After = vmq_pgevents:status(),
        [?assertEqual({K, 0}, {K, maps:get(K, After) - maps:get(K, Before)})
         || K <- [dropped, malformed, rejected, dead_lettered]]
    after
        pgev_app:stop()
    end.

%% all_till_ok hooks end the one-plugin chain (the plugin said next);
%% all hooks answer ok; nothing raised
check_answer(Hook, R) ->
    case lists:member(Hook, pgev_broker:all_till_ok_hooks()) of
        true -> ?assertEqual({Hook, {error, plugin_chain_exhausted}}, {Hook, R});
        false -> ?assertEqual({Hook, ok}, {Hook, R})
    end.

%% on_deliver_m5/5 is followed by /7 for the same delivery: one row
expected_rows(Results) ->
    [{Hook, Args, expected(Hook, Args)} || {Hook, Args, _, _} <- Results,
                                           not (Hook =:= on_deliver_m5 andalso length(Args) =:= 5)].

check_row({Hook, Args, Exp}, Row) ->
    maps:foreach(
      fun(Col, Want) ->
              Got = maps:get(Col, Row),
              case Got =:= Want of
                  true -> ok;
                  false -> ?assertEqual({Hook, Args, Col, Want}, {Hook, Args, Col, Got})
              end
      end, Exp).

%% seq has no gaps (nothing dropped; it continues across application
%% restarts within one NIF incarnation), one node, one incarnation
check_sequence(Rows) ->
    [First | _] = Seqs = [maps:get(<<"seq">>, R) || R <- Rows],
    ?assertEqual(lists:seq(First, First + length(Rows) - 1), Seqs),
    Node = atom_to_binary(node(), utf8),
    ?assertEqual([Node], lists:usort([maps:get(<<"node">>, R) || R <- Rows])),
    ?assertEqual(1, length(lists:usort([maps:get(<<"incarnation">>, R) || R <- Rows]))).

%% conn_id tells one connection from the next: the rows of one connection
%% process share an id, different connections have different ids, and
%% queue-process events carry the client's connection at that moment.
check_connections(Results, Rows) ->
    Want = expected_conns(Results),
    Pairs = lists:zip(Want, [maps:get(<<"conn_id">>, R) || R <- Rows]),
    [?assertEqual(null, Id) || {undefined, Id} <- Pairs],
    Known = [P || {W, _} = P <- Pairs, W =/= undefined],
    ?assertEqual([], [Id || {_, Id} <- Known, not is_integer(Id)]),
    Bijection = lists:usort(Known),
    ?assertEqual(length(lists:usort([W || {W, _} <- Bijection])), length(Bijection)),
    ?assertEqual(length(lists:usort([I || {_, I} <- Bijection])), length(Bijection)).

expected_conns(Results) ->
    {Conns, _} = lists:mapfoldl(fun expected_conn/2, #{}, Results),
    [C || {{H, A, _, _}, C} <- lists:zip(Results, Conns),
          not (H =:= on_deliver_m5 andalso length(A) =:= 5)].

expected_conn({Hook, Args, _, {conn, N}}, M) ->
    S = subid(Hook, Args),
    M1 = case Hook of
             H when H =:= auth_on_register; H =:= auth_on_register_m5; H =:= on_auth_m5 ->
                 M#{{pending, S} => N};
             H when H =:= on_register; H =:= on_register_m5 ->
                 maps:remove({pending, S}, M#{{current, S} => N});
             _ -> M
         end,
    {N, M1};
expected_conn({Hook, [S | _], _, {queue, _}}, M) ->
    C = case Hook of
            on_client_wakeup -> maps:get({pending, S}, M, maps:get({current, S}, M, undefined));
            _ -> maps:get({current, S}, M, undefined)
        end,
    M1 = case Hook of
             H when H =:= on_client_gone; H =:= on_session_expired ->
                 maps:remove({current, S}, maps:remove({pending, S}, M));
             _ -> M
         end,
    {C, M1}.

subid(_, [{{_, _, _, _}, _}, S | _]) -> S;
subid(_, [{{_, _, _, _, _, _, _, _}, _}, S | _]) -> S;
subid(_, [_, S | _]) -> S.

check_no_password(Table) ->
    lists:foreach(
      fun(M) ->
              Sql = "SELECT count(*) FROM " ++ Table ++ " t WHERE t::text LIKE '%"
                  ++ binary_to_list(M) ++ "%'",
              ?assertEqual({M, "0"}, {M, string:trim(pgev_pg:sql(Sql))})
      end, ?PASSWORD_MARKERS).

%% ---- the oracle: what a row must hold, from the hook's arguments -------
%% Roles per vernemq-hooks.md: P peer, S subscriber id, U username,
%% W password, C clean flag, R properties, O options, Q qos, T topic,
%% B payload, N retain, L subscriptions, K topic list / all_topics,
%% D dropped message, E reason.
roles(auth_on_register, 5) -> "PSUWC";
roles(auth_on_register, 6) -> "PSUWCO";
roles(auth_on_register_m5, 6) -> "PSUWCR";
roles(auth_on_register_m5, 7) -> "PSUWCRO";
roles(on_auth_m5, 3) -> "USR";
roles(on_register, 3) -> "PSU";
roles(on_register_m5, 4) -> "PSUR";
roles(H, 6) when H =:= auth_on_publish; H =:= on_publish; H =:= on_deliver -> "USQTBN";
roles(H, 7) when H =:= auth_on_publish_m5; H =:= on_publish_m5; H =:= on_deliver;
                 H =:= on_deliver_m5 -> "USQTBNR";
roles(on_deliver_m5, 5) -> "USTBR";
roles(H, 3) when H =:= auth_on_subscribe; H =:= on_subscribe -> "USL";
roles(H, 4) when H =:= auth_on_subscribe_m5; H =:= on_subscribe_m5 -> "USLR";
roles(on_unsubscribe, 3) -> "USK";
roles(on_unsubscribe_m5, 4) -> "USKR";
roles(on_topic_unsubscribed, 2) -> "SK";
roles(on_offline_message, 5) -> "SQTBN";
roles(on_message_drop, 3) -> "SDE";
roles(_, 1) -> "S".

%% every column a test checks, NULL unless the hook's arguments say otherwise
expected(Hook, Args) ->
    Base = maps:from_list([{C, null} || C <- [<<"mountpoint">>, <<"client_id">>, <<"username">>,
                                               <<"peer_addr">>, <<"peer_port">>, <<"qos">>,
                                               <<"topic">>, <<"topics">>, <<"retain">>,
                                               <<"clean_session">>, <<"payload">>,
                                               <<"payload_size">>, <<"payload_truncated">>,
                                               <<"payload_json">>, <<"properties">>,
                                               <<"reason">>, <<"extra">>]]),
    Roles = roles(Hook, length(Args)),
    M = lists:foldl(fun({R, A}, Acc) -> role(R, A, Acc) end,
                    Base#{<<"hook">> => atom_to_binary(Hook, utf8)},
                    lists:zip(Roles, Args)),
    case maps:get(extra, M, []) of
        [] -> maps:remove(extra, M);
        Extra -> maps:remove(extra, M#{<<"extra">> => maps:from_list(Extra)})
    end.

role($P, {Ip, Port}, M) ->
    M#{<<"peer_addr">> => list_to_binary(inet:ntoa(Ip)), <<"peer_port">> => Port};
role($S, {Mp, Client}, M) ->
    M#{<<"mountpoint">> => unicode:characters_to_binary(Mp), <<"client_id">> => nullable(Client)};
role($U, U, M) -> M#{<<"username">> => nullable(U)};
role($W, _, M) -> M;
role($C, F, M) -> M#{<<"clean_session">> => flag(F)};
role($N, F, M) -> M#{<<"retain">> => flag(F)};
role($Q, Q, M) -> M#{<<"qos">> => Q};
role($T, T, M) -> M#{<<"topic">> => topic(T)};
role($B, P, M) -> payload(P, M);
role($R, Props, M) -> M#{<<"properties">> => props(Props)};
role($O, Opts, M) -> add_extra(<<"opts">>, j(Opts), M);
role($L, Subs, M) -> M#{<<"topics">> => [sub(S) || S <- Subs]};
role($K, all_topics, M) -> M#{<<"reason">> => <<"all_topics">>};
role($K, Topics, M) -> M#{<<"topics">> => [topic(T) || T <- Topics]};
role($D, F, M) when is_function(F, 0) ->
    case F() of
        {T, Q, P, Props} ->
            payload(P, M#{<<"topic">> => topic(T), <<"qos">> => Q, <<"properties">> => props(Props)});
        error -> add_extra(<<"message">>, <<"unavailable">>, M)
    end;
role($E, R, M) -> M#{<<"reason">> => atom_to_binary(R, utf8)}.

add_extra(K, V, M) -> M#{extra => [{K, V} | maps:get(extra, M, [])]}.

nullable(undefined) -> null;
nullable(B) -> B.

flag(true) -> true;
flag(false) -> false;
flag(1) -> true;
flag(0) -> false;
flag(empty) -> null.

topic(Words) -> iolist_to_binary(lists:join(<<"/">>, Words)).

payload(P, M) ->
    Hex = list_to_binary(string:lowercase(binary_to_list(binary:encode_hex(P)))),
    Json = try pgev_pg:json_decode(P) catch _:_ -> null end,
    M#{<<"payload">> => <<"\\x", Hex/binary>>, <<"payload_size">> => byte_size(P),
       <<"payload_truncated">> => false,
       <<"payload_json">> => case P of <<>> -> null; _ -> Json end}.

sub({T, {Q, Opts}}) -> maps:merge(#{<<"topic">> => topic(T), <<"qos">> => Q}, j(Opts));
sub({T, Q}) -> #{<<"topic">> => topic(T), <<"qos">> => Q}.

props(Props) ->
    maps:fold(fun(K, V, Acc) -> Acc#{atom_to_binary(K, utf8) => prop(K, V)} end, #{}, Props).

prop(p_user_property, L) -> [#{<<"key">> => K, <<"val">> => V} || {K, V} <- L];
prop(p_authentication_data, B) -> #{<<"$redacted">> => true, <<"bytes">> => byte_size(B)};
prop(_, V) -> j(V).

j(true) -> true;
j(false) -> false;
j(undefined) -> null;
j(A) when is_atom(A) -> atom_to_binary(A, utf8);
j(N) when is_number(N) -> N;
j(B) when is_binary(B) ->
    case unicode:characters_to_binary(B) of
        B -> case binary:match(B, <<0>>) of nomatch -> B; _ -> #{<<"$base64">> => base64:encode(B)} end;
        _ -> #{<<"$base64">> => base64:encode(B)}
    end;
j(L) when is_list(L) -> [j(X) || X <- L];
j(T) when is_tuple(T) -> [j(X) || X <- tuple_to_list(T)];
j(M) when is_map(M) -> maps:fold(fun(K, V, Acc) -> Acc#{j(K) => j(V)} end, #{}, M).

%% a fresh table holding one replayed trace, for Check(Table)
with_trace(Table, Scenario, Check) ->
    {timeout, 60, fun() ->
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ Table ++ " CASCADE"),
        pgev_app:start(Table),
        try
            pgev_broker:replay("test/traces/scenario_" ++ Scenario ++ ".trace"),
            pgev_app:flush(),
            Check(Table)
        after
            pgev_app:stop()
        end
    end}.

%% The README's "one client's connections" query on scenario a: three
%% connections of client 1528366636, each with its events in order.
scenario_a_timeline_test_() ->
    with_trace("timeline_a", "a", fun(T) ->
            Rows = pgev_pg:rows(
                     "SELECT conn_id, string_agg(hook, ' > ' ORDER BY seq) AS events "
                     "FROM " ++ T ++ " WHERE client_id = '1528366636' "
                     "GROUP BY conn_id ORDER BY min(incarnation), min(seq)"),
            ?assertEqual(
               [<<"auth_on_register > on_client_wakeup > on_register > auth_on_subscribe > "
                  "on_subscribe > on_deliver > on_deliver > on_topic_unsubscribed > on_client_gone">>,
                <<"auth_on_register > on_client_wakeup > on_register > auth_on_subscribe > "
                  "on_subscribe > on_deliver > on_topic_unsubscribed > on_client_gone">>,
                <<"auth_on_register > on_client_wakeup > on_register > auth_on_subscribe > "
                  "on_subscribe > on_deliver > on_unsubscribe > on_topic_unsubscribed > "
                  "on_topic_unsubscribed > on_client_gone">>],
               [maps:get(<<"events">>, R) || R <- Rows]),
            %% failed auth attempts are auth_on_register rows with no on_register
            %% on the same connection: none in this scenario
            ?assertEqual("0", string:trim(pgev_pg:sql(
                "SELECT count(*) FROM " ++ T ++ " a WHERE hook LIKE 'auth_on_register%' "
                "AND NOT EXISTS (SELECT 1 FROM " ++ T ++ " r WHERE r.conn_id = a.conn_id "
                "AND r.node = a.node AND r.hook LIKE 'on_register%')")))
    end).

%% Scenario e: TLS client certificates refused by the password plugin are
%% auth attempts without a registration: the failed-auth query finds both.
scenario_e_failed_auth_test_() ->
    with_trace("failed_auth_e", "e", fun(T) ->
            Rows = pgev_pg:rows(
                "SELECT client_id, hook, host(peer_addr) AS peer, extra ? 'opts' AS has_opts "
                "FROM " ++ T ++ " a WHERE hook LIKE 'auth_on_register%' "
                "AND NOT EXISTS (SELECT 1 FROM " ++ T ++ " r WHERE r.conn_id = a.conn_id "
                "AND r.node = a.node AND r.hook LIKE 'on_register%') ORDER BY seq"),
            ?assertEqual([#{<<"client_id">> => <<"1528366636-tls">>, <<"hook">> => <<"auth_on_register">>,
                            <<"peer">> => <<"127.0.0.1">>, <<"has_opts">> => true},
                          #{<<"client_id">> => <<"1528366636-tls5">>,
                            <<"hook">> => <<"auth_on_register_m5">>,
                            <<"peer">> => <<"127.0.0.1">>, <<"has_opts">> => true}], Rows)
    end).

%% Connection identity in the two cases the README promises, played through
%% the broker stand-in (a new connection process per CONNECT, one queue
%% process per client id):
%% - a client-id takeover: the old connection's on_client_offline arrives
%%   after the new connection's auth_on_register, and belongs to the old one;
%% - a refused login with a taken client id (auth_on_register and nothing
%%   else) does not take over the queue events of the client that holds it.
connection_identity_test_() ->
    {timeout, 60, fun() ->
        T = "conn_identity",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T),
        try
            S = {[], <<"taken">>},
            Auth = fun(Port) -> {auth_on_register, [{{127, 0, 0, 1}, Port}, S, <<"u">>,
                                                    {encrypted, <<"x">>}, false]} end,
            Calls = [Auth(1001),                                     %% A
                     {on_client_wakeup, [S]},
                     {on_register, [{{127, 0, 0, 1}, 1001}, S, <<"u">>]},
                     {on_publish, [<<"u">>, S, 0, [<<"a">>], <<"from A">>, false]},
                     Auth(1002),                                     %% B takes over
                     {on_client_offline, [S]},                       %% A's, late
                     {on_client_wakeup, [S]},                        %% B's
                     {on_register, [{{127, 0, 0, 1}, 1002}, S, <<"u">>]},
                     Auth(6666),                                     %% refused: nothing else
                     {on_offline_message, [S, 1, [<<"a">>], <<"queued for B">>, false]},
                     {on_publish, [<<"u">>, S, 0, [<<"a">>], <<"from B">>, false]}],
            pgev_broker:replay_calls(Calls),
            pgev_app:flush(),
            Rows = [{maps:get(<<"hook">>, R), maps:get(<<"peer_port">>, R), maps:get(<<"conn_id">>, R)}
                    || R <- pgev_app:rows(T)],
            [{_, 1001, A}, {_, _, A}, {_, 1001, A}, {_, _, A},
             {_, 1002, B}, {<<"on_client_offline">>, _, Off}, {<<"on_client_wakeup">>, _, WakeB},
             {_, 1002, B2}, {_, 6666, C}, {<<"on_offline_message">>, _, Queued},
             {<<"on_publish">>, _, PubB}] = Rows,
            ?assert(A =/= B andalso B =/= C andalso A =/= C),
            ?assertEqual(A, Off),        %% the late offline is the old connection's
            ?assertEqual(B, WakeB),      %% the wakeup is the new connection's
            ?assertEqual(B, B2),
            ?assertEqual(B, Queued),     %% the refused login did not steal it
            ?assertEqual(B, PubB)
        after
            pgev_app:stop()
        end
    end}.

%% A CONNECT refused before it registers (auth_on_register and nothing
%% else) leaves an entry in the connection table; the server's sweep, every
%% minute, removes those a minute old, and leaves registered clients and
%% fresh attempts. They stayed: refused logins filled the table up to
%% conn_table_max, and then no new client's queue events had a conn_id.
refused_logins_swept_test_() ->
    {timeout, 60, fun() ->
        pgev_app:with_plugin("conn_swept", [], fun() ->
            Tab = vmq_pgevents_conns,
            Peer = {{127, 0, 0, 1}, 1},
            Sub = fun(I) -> {"", <<"swept-", (integer_to_binary(I))/binary>>} end,
            Auth = fun(I) -> next = vmq_pgevents:auth_on_register(Peer, Sub(I), <<"u">>, <<"pw">>, true) end,
            [Auth(I) || I <- lists:seq(0, 100)],
            ok = vmq_pgevents:on_register(Peer, Sub(0), <<"u">>),
            Size = ets:info(Tab, size),
            Old = erlang:monotonic_time(millisecond) - 61000,
            [true = ets:update_element(Tab, Sub(I), {4, Old}) || I <- lists:seq(1, 100)],
            Auth(101),                                              %% a fresh attempt
            vmq_pgevents_server ! {timeout, make_ref(), sweep_conns},   %% the timer's message
            _ = sys:get_state(vmq_pgevents_server),                     %% handled
            ?assertEqual([], [I || I <- lists:seq(1, 100), ets:member(Tab, Sub(I))]),
            ?assert(ets:member(Tab, Sub(0))),
            ?assert(ets:member(Tab, Sub(101))),
            ?assertEqual(Size - 100 + 1, ets:info(Tab, size)),
            ?assertNotEqual(undefined, vmq_pgevents_conn:current(Sub(0)))
        end)
    end}.
