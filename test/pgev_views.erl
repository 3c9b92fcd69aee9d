%% @doc Test helper: checks the views and functions priv/schema.sql makes
%% for a table (<t>_connections, _failed_logins, _timeline, _connection,
%% _journey) against what a recorded trace's steps say happened
%% (test/traces/scenario_*.steps.txt). Called by the trace tests after the
%% rows themselves were checked.
-module(pgev_views).
-include_lib("eunit/include/eunit.hrl").

-export([check/2]).

-define(C, <<"1528366636">>).
-define(PUB, <<"1528366636-pub">>).

check(S, T) ->
    %% (a Citus distributed table has '' where no client id was known)
    Conns = [case C of #{<<"client_id">> := <<>>} -> C#{<<"client_id">> => null}; _ -> C end
             || C <- pgev_pg:rows("SELECT node, incarnation, conn_id, client_id, login, ended_how, mqtt_version, "
                                  "publishes, deliveries, subscribes, username, host(peer_addr) AS peer, peer_port "
                                  "FROM " ++ T ++ "_connections ORDER BY connected_at, conn_id")],
    ?assertEqual({S, connections(S)},
                 {S, [{maps:get(<<"client_id">>, C), maps:get(<<"login">>, C), maps:get(<<"ended_how">>, C),
                       maps:get(<<"mqtt_version">>, C), maps:get(<<"publishes">>, C),
                       maps:get(<<"deliveries">>, C), maps:get(<<"subscribes">>, C)} || C <- Conns]}),
    [check_connection(T, C) || C <- Conns],
    [check_timeline(T, Client) || Client <- lists:usort([maps:get(<<"client_id">>, C) || C <- Conns]),
                                  Client =/= null],
    ?assertEqual({S, failed_logins(S)},
                 {S, [binary_to_list(L) || L <- lines(pgev_pg:sql(
                         "SELECT client_id FROM " ++ T ++ "_failed_logins('-infinity')"))]}),
    Ordinal = maps:from_list(lists:zip([maps:get(<<"conn_id">>, C) || C <- Conns],
                                       lists:seq(1, length(Conns)))),
    %% each publishing client's journeys, called with it as a constant (on
    %% a Citus cluster, a function called per row of a query over the
    %% table would run on the shards, where it cannot query the table)
    Publishers = lines(pgev_pg:sql("SELECT DISTINCT client_id FROM " ++ T ++ " WHERE hook LIKE 'on_publish%'")),
    Journeys = lists:sort(
                 fun(A, B) -> journey_key(A) =< journey_key(B) end,
                 lists:append([pgev_pg:rows("SELECT j.payload_size, j.to_client_id, j.to_conn_id, j.candidates, "
                                            "j.latency_ms >= 0 AS forward, j.published_at, j.delivered_at FROM " ++
                                            T ++ "_journey('" ++ binary_to_list(P) ++ "', '-infinity') j")
                               || P <- Publishers])),
    ?assertEqual({S, journeys(S)},
                 {S, [{maps:get(<<"payload_size">>, J), maps:get(<<"to_client_id">>, J),
                       maps:get(maps:get(<<"to_conn_id">>, J), Ordinal, null),
                       maps:get(<<"candidates">>, J), maps:get(<<"forward">>, J)} || J <- Journeys]}).

%% the order of the query this replaced: ORDER BY published_at,
%% delivered_at (the text of both sorts as the timestamps do; NULL last)
journey_key(J) ->
    {maps:get(<<"published_at">>, J), case maps:get(<<"delivered_at">>, J) of null -> {1, <<>>}; D -> {0, D} end}.

%% the connection's own rows, and its login's username and peer
check_connection(T, C) ->
    #{<<"node">> := N, <<"incarnation">> := I, <<"conn_id">> := Id} = C,
    Where = " WHERE node = '" ++ binary_to_list(N) ++ "' AND incarnation = " ++ integer_to_list(I) ++
        " AND conn_id = " ++ integer_to_list(Id),
    Want = lines(pgev_pg:sql("SELECT seq FROM " ++ T ++ Where ++ " ORDER BY seq")),
    ?assertNotEqual([], Want),
    ?assertEqual({Id, Want}, {Id, lines(pgev_pg:sql(
        "SELECT seq FROM " ++ T ++ "_connection('" ++ binary_to_list(N) ++ "', " ++ integer_to_list(I) ++
        ", " ++ integer_to_list(Id) ++ ")"))}),
    case maps:get(<<"login">>, C) of
        null -> ok;
        _ ->
            [Login] = pgev_pg:rows("SELECT username, host(peer_addr) AS peer, peer_port FROM " ++ T ++ Where ++
                                   " AND hook LIKE 'auth_on_register%'"),
            ?assertEqual(Login, maps:with([<<"username">>, <<"peer">>, <<"peer_port">>], C))
    end.

%% all of a client's rows in order; since the time of its third row, the
%% rows from there on
check_timeline(T, Client) ->
    Q = binary_to_list(Client),
    All = lines(pgev_pg:sql("SELECT seq FROM " ++ T ++ " WHERE client_id = '" ++ Q ++ "' ORDER BY seq")),
    ?assertEqual({Client, All}, {Client, lines(pgev_pg:sql("SELECT seq FROM " ++ T ++ "_timeline('" ++ Q ++ "')"))}),
    case All of
        [_, _, Third | _] ->
            Since = string:trim(pgev_pg:sql("SELECT ts FROM " ++ T ++ " WHERE seq = " ++ binary_to_list(Third))),
            ?assertEqual(lists:nthtail(2, All),
                         lines(pgev_pg:sql("SELECT seq FROM " ++ T ++ "_timeline('" ++ Q ++ "', '" ++ Since ++ "')")));
        _ -> ok
    end.

lines(Out) ->
    binary:split(iolist_to_binary(Out), <<"\n">>, [global, trim_all]).

%% {client_id, login, ended_how, mqtt_version, publishes, deliveries,
%% subscribes} per connection, in the order they began (steps.txt)
connections("a") ->
    [{?C, <<"registered">>, <<"gone">>, 3, 0, 2, 1},    % a1: gets hello and {"a":1}
     {?PUB, <<"registered">>, <<"gone">>, 3, 1, 0, 0},  % a2
     {?PUB, <<"registered">>, <<"gone">>, 3, 1, 0, 0},  % a3
     {?C, <<"registered">>, <<"gone">>, 3, 0, 1, 1},    % a4: the retained message
     {?C, <<"registered">>, <<"gone">>, 3, 0, 1, 1}];   % a5: the same, then unsubscribes
connections("b") ->
    [{?C, <<"registered">>, <<"offline">>, 3, 0, 0, 1}, % b1: persistent session, leaves
     {?PUB, <<"registered">>, <<"gone">>, 3, 1, 0, 0},  % b2
     {?C, <<"registered">>, <<"offline">>, 3, 0, 1, 1}, % b3: gets the offline message
     {?C, <<"registered">>, <<"gone">>, 3, 0, 0, 1}];   % b4: clean session
connections("c") ->
    [{?C, <<"registered">>, <<"offline">>, 5, 0, 2, 1}, % c1
     {?PUB, <<"registered">>, <<"gone">>, 5, 1, 0, 0},  % c2
     {?PUB, <<"registered">>, <<"gone">>, 5, 1, 0, 0},  % c3
     {?PUB, <<"registered">>, <<"gone">>, 5, 1, 0, 0},  % c4 short-lived
     {?PUB, <<"registered">>, <<"gone">>, 5, 1, 0, 0},  % c4 long-lived
     {?C, <<"registered">>, <<"session expired">>, 5, 0, 1, 1}, % c5, c6
     {null, null, <<"open">>, null, 0, 0, 0}];       % c7: enhanced auth, no client id
connections("d") ->
    [{<<"1528366636-watch">>, <<"registered">>, <<"gone">>, 3, 0, 2, 1}, % d0: both wills
     {?C, <<"registered">>, <<"gone">>, 3, 1, 0, 1},    % d1, d2: killed, its will published
     {<<"1528366636-v5">>, <<"registered">>, <<"offline">>, 5, 0, 0, 1}, % d3, d4: session kept
     {<<"1528366636-v5">>, <<"registered">>, <<"gone">>, 5, 0, 0, 1}];   % d5
connections("e") ->
    [{<<"1528366636-tls">>, <<"refused">>, <<"refused">>, 3, 0, 0, 0},
     {<<"1528366636-tls5">>, <<"refused">>, <<"refused">>, 5, 0, 0, 0}].

failed_logins("e") -> ["1528366636-tls", "1528366636-tls5"];
failed_logins(_) -> [].

%% {payload_size, to_client_id, the receiving connection (its place in
%% connections/1), candidates, latency >= 0} per publish and delivery
journeys("a") ->
    [{5, ?C, 1, 1, true},                               % hello
     {7, ?C, 1, 1, true}, {7, ?C, 4, 1, true}, {7, ?C, 5, 1, true}];  % {"a":1}, retained
journeys("b") ->
    [{11, ?C, 3, 1, true}];                             % offline-msg, at b3
journeys("c") ->
    [{7, ?C, 1, 1, true}, {5, ?C, 1, 1, true},
     {11, null, null, null, null},                      % short-lived: expired, never delivered
     {10, ?C, 6, 1, true}];                             % long-lived, at c5
journeys("d") ->
    [{4, <<"1528366636-watch">>, 1, 1, true}];          % the will 'gone'
journeys("e") -> [].
