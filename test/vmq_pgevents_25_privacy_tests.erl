%% @doc payload_topics and peer_addr through the real NIF into real rows:
%% none / hash / truncated / full topics field by field, the stricter of
%% the topic's and the hook's payload mode, peer addresses cut to their
%% network or left out (IPv4, IPv6, IPv4-mapped), both changed at run
%% time through the configuration path (vmq-admin set), and the payload
%% bytes of none and hash topics absent from the journal's files (in
%% spool_dir and in /dev/shm) while a full topic's are there.
-module(vmq_pgevents_25_privacy_tests).
-include_lib("eunit/include/eunit.hrl").

-define(S, {"", <<"cid">>}).

with_plugin(Table, Env, Fun) ->
    clique:reset(),
    pgev_app:with_plugin(Table, Env, Fun).

rows(T) ->
    pgev_app:flush(),
    pgev_app:rows(T).

hex(B) -> iolist_to_binary(["\\x" | [io_lib:format("~2.16.0b", [X]) || <<X>> <= B]]).

sha(B) -> crypto:hash(sha256, B).

%% a marker no other test writes, so that finding it means this run wrote it
marker(What) ->
    iolist_to_binary([What, "-", integer_to_list(erlang:unique_integer([positive])), "-",
                      integer_to_list(os:system_time(microsecond))]).

row_fields(R) ->
    maps:with([<<"hook">>, <<"topic">>, <<"payload">>, <<"payload_size">>, <<"payload_truncated">>,
               <<"payload_json">>, <<"extra">>], R).

payload_topics_test_() ->
    {timeout, 120, fun() ->
        T = "privacy_topics",
        Env = [{payload_mode, "full"}, {payload_max_bytes, 8}, {payload_modes, "on_deliver:none"},
               {payload_topics, " +/credentials/#:none, health/#:hash,big/#:full , #:truncated"},
               {spool_max_bytes, 16777216}, {journal_sync_ms, 20}],
        with_plugin(T, Env, fun() ->
            Cred = marker(<<"CRED-SECRET">>),
            HealthM = marker(<<"HEALTH-SECRET">>),
            Health = iolist_to_binary(["{\"hb\":\"", HealthM, "\"}"]),
            Drop = marker(<<"DROP-SECRET">>),
            Auth = marker(<<"AUTH-SECRET">>),
            Full = marker(<<"FULL-MARKER">>),
            Trunc = marker(<<"TRUNC-MARKER">>),
            Dollar = marker(<<"DOLLAR-MARKER">>),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"dev">>, <<"credentials">>, <<"x">>], Cred, false),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"health">>, <<"x">>], Health, false),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"health">>], <<>>, false),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"big">>, <<"x">>], Full, false),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"other">>, <<"x">>], Trunc, false),
            %% no wildcard in the first level matches a $ topic: the hook's mode (full)
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"$app">>, <<"credentials">>], Dollar, false),
            %% the hook's none wins over the topic's full
            next = vmq_pgevents:on_deliver(<<"u">>, ?S, 1, [<<"big">>, <<"x">>], Full, false, #{}),
            %% the other hooks that carry a payload
            ok = vmq_pgevents:on_offline_message(?S, 1, [<<"a">>, <<"credentials">>], Cred, false),
            next = vmq_pgevents:auth_on_publish_m5(<<"u">>, ?S, 1, [<<"health">>, <<"y">>], Auth, false, #{}),
            ok = vmq_pgevents:on_message_drop(?S, fun() -> {[<<"b">>, <<"credentials">>], 1, Drop, #{}} end,
                                              queue_full),
            %% a topic as one binary; a topic that cannot be read: the
            %% strictest mode of any rule
            ok = vmq_pgevents_nif:event(on_publish, [<<"u">>, ?S, 0, <<"c/credentials">>, Cred, false], 1),
            ok = vmq_pgevents_nif:event(on_publish, [<<"u">>, ?S, 0, not_a_topic, Cred, false], 1),
            Rows = [row_fields(R) || R <- rows(T)],
            Want = [#{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"dev/credentials/x">>,
                      <<"payload">> => <<"\\x">>, <<"payload_size">> => byte_size(Cred),
                      <<"payload_truncated">> => true, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"health/x">>,
                      <<"payload">> => hex(sha(Health)), <<"payload_size">> => byte_size(Health),
                      <<"payload_truncated">> => true, <<"payload_json">> => null,
                      <<"extra">> => #{<<"payload">> => <<"sha256">>}},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"health">>,
                      <<"payload">> => hex(sha(<<>>)), <<"payload_size">> => 0,
                      <<"payload_truncated">> => true, <<"payload_json">> => null,
                      <<"extra">> => #{<<"payload">> => <<"sha256">>}},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"big/x">>,
                      <<"payload">> => hex(Full), <<"payload_size">> => byte_size(Full),
                      <<"payload_truncated">> => false, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"other/x">>,
                      <<"payload">> => hex(binary:part(Trunc, 0, 8)), <<"payload_size">> => byte_size(Trunc),
                      <<"payload_truncated">> => true, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"$app/credentials">>,
                      <<"payload">> => hex(Dollar), <<"payload_size">> => byte_size(Dollar),
                      <<"payload_truncated">> => false, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_deliver">>, <<"topic">> => <<"big/x">>,
                      <<"payload">> => <<"\\x">>, <<"payload_size">> => byte_size(Full),
                      <<"payload_truncated">> => true, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_offline_message">>, <<"topic">> => <<"a/credentials">>,
                      <<"payload">> => <<"\\x">>, <<"payload_size">> => byte_size(Cred),
                      <<"payload_truncated">> => true, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"auth_on_publish_m5">>, <<"topic">> => <<"health/y">>,
                      <<"payload">> => hex(sha(Auth)), <<"payload_size">> => byte_size(Auth),
                      <<"payload_truncated">> => true, <<"payload_json">> => null,
                      <<"extra">> => #{<<"payload">> => <<"sha256">>}},
                    #{<<"hook">> => <<"on_message_drop">>, <<"topic">> => <<"b/credentials">>,
                      <<"payload">> => <<"\\x">>, <<"payload_size">> => byte_size(Drop),
                      <<"payload_truncated">> => true, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"c/credentials">>,
                      <<"payload">> => <<"\\x">>, <<"payload_size">> => byte_size(Cred),
                      <<"payload_truncated">> => true, <<"payload_json">> => null, <<"extra">> => null},
                    #{<<"hook">> => <<"on_publish">>, <<"topic">> => null,
                      <<"payload">> => <<"\\x">>, <<"payload_size">> => byte_size(Cred),
                      <<"payload_truncated">> => true, <<"payload_json">> => null,
                      <<"extra">> => #{<<"malformed">> => [<<"topic">>]}}],
            ?assertEqual(length(Want), length(Rows)),
            [?assertEqual(W, R) || {W, R} <- lists:zip(Want, Rows)],
            %% a hashed payload is matched to its deliveries as any other
            ?assertEqual("1", string:trim(pgev_pg:sql(
                "SELECT count(*) FROM " ++ T ++ " WHERE topic = 'health/x' AND payload_hash IS NOT NULL"))),
            %% the journal's files: the full topic's bytes are there (so the
            %% search finds what is written), none of the none / hash ones
            Files = journal_files(T),
            pgev_app:wait_for(full_marker_in_the_files_on_disk,
                              fun() -> found(Full, [F || {disk, F} <- journal_files(T)]) end, 10000),
            ?assert(found(Full, [F || {ram, F} <- Files])),
            ?assert(found(Trunc, [F || {_, F} <- Files]) =:= false),   %% only its first 8 bytes
            ?assert(found(binary:part(Trunc, 0, 8), [F || {_, F} <- Files])),
            [?assertEqual({M, false}, {M, found(M, [F || {_, F} <- journal_files(T)])})
             || M <- [Cred, HealthM, Drop, Auth]],
            %% status and vmq-admin pgevents status show the settings
            #{payload_topics := PT, peer_addr := full} = S = vmq_pgevents:status(),
            ?assertEqual(<<" +/credentials/#:none, health/#:hash,big/#:full , #:truncated">>, PT),
            Status = vmq_pgevents_cli:status_rows(S, 0),
            ?assertEqual([" +/credentials/#:none, health/#:hash,big/#:full , #:truncated"],
                         [V || [{name, "payload_topics"}, {value, V}] <- Status]),
            ?assertEqual(["full"], [V || [{name, "peer_addr"}, {value, V}] <- Status])
        end)
    end}.

%% payload_topics at run time (vmq-admin set): a new rule applies to the
%% next call; a bad value is refused naming the item, the rules stay
%% the time the dirty CPU schedulers have been busy so far (any unit):
%% grows when a NIF call is made again on one of them
dirty_cpu_busy() ->
    N = erlang:system_info(schedulers),
    D = erlang:system_info(dirty_cpu_schedulers),
    lists:sum([A || {I, A, _} <- erlang:statistics(scheduler_wall_time_all), I > N, I =< N + D]).

%% a payload larger than 64 KiB is hashed on a dirty scheduler (the call
%% made again there): the same row as a small one's
large_hash_test_() ->
    {timeout, 60, fun() ->
        T = "privacy_large_hash",
        with_plugin(T, [{payload_topics, "#:hash"}, {payload_mode, "full"}], fun() ->
            Big = binary:copy(marker(<<"BIG">>), 100000),
            erlang:system_flag(scheduler_wall_time, true),
            Busy = dirty_cpu_busy(),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"a">>], Big, false),
            ?assert(dirty_cpu_busy() > Busy),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"a">>], <<"small">>, false),
            ?assertEqual([#{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"a">>,
                            <<"payload">> => hex(sha(Big)), <<"payload_size">> => byte_size(Big),
                            <<"payload_truncated">> => true, <<"payload_json">> => null,
                            <<"extra">> => #{<<"payload">> => <<"sha256">>}},
                          #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"a">>,
                            <<"payload">> => hex(sha(<<"small">>)), <<"payload_size">> => 5,
                            <<"payload_truncated">> => true, <<"payload_json">> => null,
                            <<"extra">> => #{<<"payload">> => <<"sha256">>}}],
                         [row_fields(R) || R <- rows(T)])
        end)
    end}.

%% a payload of more than 1 MiB kept whole is copied into the journal on
%% a dirty scheduler (the call made again there): the row holds it all
large_full_test_() ->
    {timeout, 60, fun() ->
        T = "privacy_large_full",
        with_plugin(T, [{payload_mode, "full"}], fun() ->
            Big = binary:copy(marker(<<"BIG">>), 150000),
            ?assert(byte_size(Big) > 2 * 1024 * 1024),
            erlang:system_flag(scheduler_wall_time, true),
            Busy = dirty_cpu_busy(),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"a">>], Big, false),
            ?assert(dirty_cpu_busy() > Busy),
            ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"a">>], <<"small">>, false),
            ?assertEqual([#{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"a">>,
                            <<"payload">> => hex(Big), <<"payload_size">> => byte_size(Big),
                            <<"payload_truncated">> => false, <<"payload_json">> => null,
                            <<"extra">> => null},
                          #{<<"hook">> => <<"on_publish">>, <<"topic">> => <<"a">>,
                            <<"payload">> => hex(<<"small">>), <<"payload_size">> => 5,
                            <<"payload_truncated">> => false, <<"payload_json">> => null,
                            <<"extra">> => null}],
                         [row_fields(R) || R <- rows(T)])
        end)
    end}.

payload_topics_runtime_test_() ->
    {timeout, 60, fun() ->
        T = "privacy_topics_rt",
        with_plugin(T, [], fun() ->
            Pub = fun(P) -> ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"s">>, <<"x">>], P, false) end,
            Pub(<<"one">>),
            "" = clique:set("vmq_pgevents.payload_topics=s/#:hash"),
            Pub(<<"two">>),
            application:set_env(vmq_pgevents, payload_topics, "s/#:hash, s/+/#"),
            ?assertEqual({error, <<"payload_topics: 's/+/#' is not FILTER:MODE">>}, vmq_pgevents:reconfigure()),
            application:set_env(vmq_pgevents, payload_topics, "s/#:hash, t/#:secret"),
            ?assertEqual({error, <<"payload_topics: unknown mode 'secret' in 't/#:secret' "
                                   "(none, hash, truncated or full)">>}, vmq_pgevents:reconfigure()),
            ?assertEqual("not applied: payload_topics: 's/#/x' is not a valid MQTT topic filter (in 's/#/x:none')",
                         clique:set("vmq_pgevents.payload_topics=s/#/x:none")),
            Pub(<<"three">>),
            "" = clique:set("vmq_pgevents.payload_topics=s/x:none"),
            Pub(<<"four">>),
            "" = clique:set("vmq_pgevents.payload_topics="),
            Pub(<<"five">>),
            ?assertMatch(#{payload_topics := <<>>}, vmq_pgevents:status()),
            ?assertEqual([{hex(<<"one">>), null}, {hex(sha(<<"two">>)), <<"sha256">>},
                          {hex(sha(<<"three">>)), <<"sha256">>}, {<<"\\x">>, null},
                          {hex(<<"five">>), null}],
                         [{maps:get(<<"payload">>, R),
                           case maps:get(<<"extra">>, R) of null -> null; E -> maps:get(<<"payload">>, E) end}
                          || R <- rows(T)])
        end)
    end}.

%% a bad value in the configuration the plugin starts with: refused,
%% naming the item (the broker runs on, recording nothing)
payload_topics_bad_at_start_test() ->
    ?assertEqual({error, <<"payload_topics: 'a/#' is not FILTER:MODE">>},
                 vmq_pgevents_nif:start(#{dsn => <<>>, table => <<"t">>, node => <<"n">>,
                                          payload_topics => <<"a/b:none, a/#">>}, self())),
    ?assertEqual({error, <<"peer_addr must be full, network or none">>},
                 vmq_pgevents_nif:start(#{dsn => <<>>, table => <<"t">>, node => <<"n">>,
                                          peer_addr => partial}, self())),
    _ = application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, peer_addr, "partial"),
    try
        ?assertMatch({error, <<"peer_addr: expected full, network or none", _/binary>>},
                     vmq_pgevents_config:read())
    after
        application:unload(vmq_pgevents)
    end.

peer_addr_test_() ->
    {timeout, 60, fun() ->
        T = "privacy_peer",
        with_plugin(T, [{peer_addr, "network"}], fun() ->
            Login = fun(Peer, Cid) ->
                            S = {"", Cid},
                            next = vmq_pgevents:auth_on_register(Peer, S, <<"u">>, <<"pw">>, true),
                            ok = vmq_pgevents:on_register(Peer, S, <<"u">>)
                    end,
            Login({{10, 1, 2, 3}, 51000}, <<"v4">>),
            Login({{16#2001, 16#db8, 16#1234, 16#5678, 16#9abc, 16#def0, 16#1122, 16#3344}, 51001}, <<"v6">>),
            Login({{0, 0, 0, 0, 0, 16#ffff, 16#c0a8, 16#0709}, 51002}, <<"mapped">>),
            next = vmq_pgevents:auth_on_register_m5({{10, 9, 8, 7}, 1}, {"", <<"m5">>}, <<"u">>, <<"pw">>,
                                                    true, #{}),
            #{peer_addr := network} = vmq_pgevents:status(),
            %% at run time: none
            "" = clique:set("vmq_pgevents.peer_addr=none"),
            #{peer_addr := none} = vmq_pgevents:status(),
            Login({{10, 1, 2, 3}, 51000}, <<"v4-none">>),
            Login({{16#2001, 16#db8, 0, 0, 0, 0, 0, 1}, 51001}, <<"v6-none">>),
            %% and back to full
            "" = clique:set("vmq_pgevents.peer_addr=full"),
            Login({{10, 1, 2, 3}, 51000}, <<"v4-full">>),
            ?assertEqual([{<<"auth_on_register">>, <<"v4">>, <<"10.1.2.0">>, null},
                          {<<"on_register">>, <<"v4">>, <<"10.1.2.0">>, null},
                          {<<"auth_on_register">>, <<"v6">>, <<"2001:db8:1234::">>, null},
                          {<<"on_register">>, <<"v6">>, <<"2001:db8:1234::">>, null},
                          {<<"auth_on_register">>, <<"mapped">>, <<"::ffff:192.168.7.0">>, null},
                          {<<"on_register">>, <<"mapped">>, <<"::ffff:192.168.7.0">>, null},
                          {<<"auth_on_register_m5">>, <<"m5">>, <<"10.9.8.0">>, null},
                          {<<"auth_on_register">>, <<"v4-none">>, null, null},
                          {<<"on_register">>, <<"v4-none">>, null, null},
                          {<<"auth_on_register">>, <<"v6-none">>, null, null},
                          {<<"on_register">>, <<"v6-none">>, null, null},
                          {<<"auth_on_register">>, <<"v4-full">>, <<"10.1.2.3">>, 51000},
                          {<<"on_register">>, <<"v4-full">>, <<"10.1.2.3">>, 51000}],
                         [{maps:get(<<"hook">>, R), maps:get(<<"client_id">>, R), maps:get(<<"peer_addr">>, R),
                           maps:get(<<"peer_port">>, R)} || R <- rows(T)]),
            %% nothing of the masked rows marked malformed or extra
            ?assertEqual("0", string:trim(pgev_pg:sql("SELECT count(*) FROM " ++ T ++ " WHERE extra IS NOT NULL "
                                                                 "AND hook NOT LIKE 'pgevents\\_%'")))
        end)
    end}.

%% ---- the journal's files ------------------------------------------------

%% {disk, Path} for the files in spool_dir, {ram, Path} for the memory
%% files in /dev/shm of that spool_dir's journal (named as journal_ram.c
%% names its directory: FNV-1a 64 of the real path)
journal_files(T) ->
    Spool = pgev_app:spool_dir(T),
    Real = string:trim(os:cmd("realpath '" ++ Spool ++ "'")),
    H = lists:foldl(fun(B, Acc) -> ((Acc bxor B) * 1099511628211) band 16#FFFFFFFFFFFFFFFF end,
                    1469598103934665603, binary_to_list(unicode:characters_to_binary(Real))),
    Ram = lists:flatten(io_lib:format("/dev/shm/vmq_pgevents-~16.16.0b", [H])),
    Disk = filelib:wildcard(filename:join(Spool, "journal-*")),
    Mem = filelib:wildcard(filename:join(Ram, "journal-*")),
    ?assertNotEqual([], Disk),
    ?assertNotEqual([], Mem),
    [{disk, F} || F <- Disk] ++ [{ram, F} || F <- Mem].

found(Marker, Files) ->
    lists:any(fun(F) ->
                      case file:read_file(F) of
                          {ok, B} -> binary:match(B, Marker) =/= nomatch;
                          {error, _} -> false
                      end
              end, Files).
