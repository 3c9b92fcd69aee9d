%% @doc Hostile input: random and extreme arguments for every hook and
%% arity, seeded and reproducible (VMQ_PGEVENTS_SEED=N to replay, the seed
%% is printed; VMQ_PGEVENTS_HOSTILE_CALLS=N for more or fewer calls).
%% Checks: every call returns next/ok, the VM lives, the counters add up
%% (recorded = rows written, nothing dead-lettered: PostgreSQL accepted
%% every row built from garbage), and the queue's memory is returned.
%% Also: a 256 MiB payload, 64 KiB client ids, deep and huge maps,
%% passwords and a dsn password that never appear anywhere.
-module(vmq_pgevents_50_hostile_tests).
-include_lib("eunit/include/eunit.hrl").

-define(DEFAULT_CALLS, 1000000).

random_calls_test_() ->
    {timeout, 1200, fun random_calls/0}.

random_calls() ->
    Seed = case os:getenv("VMQ_PGEVENTS_SEED") of
               false -> erlang:phash2(erlang:monotonic_time());
               S -> list_to_integer(S)
           end,
    Calls = case os:getenv("VMQ_PGEVENTS_HOSTILE_CALLS") of
                false -> ?DEFAULT_CALLS;
                C -> list_to_integer(C)
            end,
    io:format(user, "~n   hostile input: ~b calls, seed ~b (replay: VMQ_PGEVENTS_SEED=~b)~n",
              [Calls, Seed, Seed]),
    T = "hostile",
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
    pgev_app:start(T, [{queue_max_events, 10000000}, {queue_max_bytes, 8000000000},
                       {batch_size, 10000}, {payload_max_bytes, 4096}]),
    try
        {ok, _} = vmq_pgevents:flush(60000),   %% the start's rows: written before Before
        Before = vmq_pgevents:status(),
        {ok, Hooks} = application:get_env(vmq_pgevents, vmq_plugin_hooks),
        HookArr = list_to_tuple([{F, A} || {_, F, A, _} <- Hooks]),
        Procs = 4,
        Self = self(),
        Pids = [spawn_link(fun() ->
                                   rand:seed(exsss, {Seed, I, 17}),
                                   Expected = run_calls(HookArr, Calls div Procs, Seed, {0, false}),
                                   Self ! {done, self(), Expected}
                           end) || I <- lists:seq(1, Procs)],
        Expected = lists:sum([receive {done, P, E} -> E after 1100000 -> error({stuck, Seed}) end
                              || P <- Pids]),
        {ok, _} = vmq_pgevents:flush(600000),
        After = vmq_pgevents:status(),
        D = fun(K) -> maps:get(K, After) - maps:get(K, Before) end,
        Recorded = lists:sum([R || #{recorded := R} <- maps:values(maps:get(per_hook, After))])
            - lists:sum([R || #{recorded := R} <- maps:values(maps:get(per_hook, Before))]),
        ?assertEqual({seed, Seed, dead_lettered, 0}, {seed, Seed, dead_lettered, D(dead_lettered)}),
        ?assertEqual({seed, Seed, dropped, 0}, {seed, Seed, dropped, D(dropped)}),
        ?assertEqual({seed, Seed, Expected}, {seed, Seed, Recorded}),
        %% (written: the plugin's own rows too, e.g. the drops of an
        %% earlier test told at this start)
        ?assertEqual({seed, Seed, D(written)}, {seed, Seed, pgev_pg:scalar("SELECT count(*) FROM " ++ T ++
                                                                           " WHERE seq > " ++
                                                                           integer_to_list(maps:get(last_seq, Before)))}),
        ?assertEqual(integer_to_list(Recorded), string:trim(pgev_pg:sql("SELECT count(*) FROM " ++ T ++
                                                                        " WHERE hook NOT LIKE 'pgevents\\_%'"))),
        #{queued := 0, queued_bytes := 0} = After
    after
        pgev_app:stop()
    end.

%% Returns how many rows the calls must produce: one per call, except
%% on_deliver_m5/5, which is kept until /7 (recorded there instead) or the
%% next /5 (then recorded), and wrong arities, which are rejected.
run_calls(_, 0, _, {Expected, _Stashed}) -> Expected;
run_calls(Hooks, N, Seed, {Expected, Stashed}) ->
    {F, A} = element(rand:uniform(tuple_size(Hooks)), Hooks),
    Args = [arg() || _ <- lists:seq(1, A)],
    %% sometimes a wrong arity straight into the NIF (VerneMQ never does that)
    {R, Acc} = case rand:uniform(50) of
                   1 -> vmq_pgevents_nif:event(F, Args ++ [x], undefined),
                        %% A + 1 is a real arity of some hooks (auth_on_register/6)
                        Known = lists:member({F, A + 1}, tuple_to_list(Hooks)),
                        {next, {Expected + case Known of true -> 1; false -> 0 end, Stashed}};
                   _ -> {try apply(vmq_pgevents, F, Args)
                         catch C:E:St -> {raised, C, E, St}
                         end,
                         expect(F, A, Expected, Stashed)}
               end,
    case R =:= next orelse R =:= ok of
        true -> ok;
        false -> error({hook_answer, F, A, R, {seed, Seed}})
    end,
    run_calls(Hooks, N - 1, Seed, Acc).

expect(on_deliver_m5, 5, E, true) -> {E + 1, true};
expect(on_deliver_m5, 5, E, false) -> {E, true};
expect(on_deliver_m5, 7, E, _) -> {E + 1, false};
expect(_, _, E, Stashed) -> {E + 1, Stashed}.

%% half the time a value of a shape VerneMQ really passes, filled with
%% hostile content; otherwise any term at all
arg() ->
    case rand:uniform(2) of
        1 -> plausible();
        2 -> term(3)
    end.

plausible() ->
    case rand:uniform(12) of
        1 -> {{rand:uniform(256) - 1, 0, 0, 1}, rand:uniform(65536) - 1};
        2 -> {list_to_tuple([rand:uniform(65536) - 1 || _ <- lists:seq(1, 8)]), 1883};
        3 -> {mountpoint(), text()};
        4 -> [text() || _ <- lists:seq(1, rand:uniform(4))];
        5 -> [{[text()], rand:uniform(3) - 1} || _ <- lists:seq(1, rand:uniform(3))];
        6 -> [{[text()], {1, #{no_local => false, rap => true, retain_handling => send_retain}}}];
        7 -> props();
        8 -> bytes(rand:uniform(200));
        9 -> element(rand:uniform(6), {true, false, 0, 1, empty, undefined});
        10 -> fun() -> {[text()], 1, bytes(10), props()} end;
        11 -> element(rand:uniform(4), {expired, queue_full, max_packet_size_exceeded, all_topics});
        12 -> {encrypted, bytes(20)}
    end.

mountpoint() ->
    case rand:uniform(3) of
        1 -> "";
        2 -> [rand:uniform(16#10FFFF) || _ <- lists:seq(1, rand:uniform(5))];  %% may hold surrogates
        3 -> bytes(rand:uniform(8))
    end.

text() ->
    case rand:uniform(6) of
        1 -> <<>>;
        2 -> <<"a/b", 0, "c">>;
        3 -> <<255, 254, "x">>;
        4 -> unicode:characters_to_binary([16#1F600, 16#4E2D]);
        5 -> bytes(rand:uniform(30));
        6 -> <<"say_name">>
    end.

props() ->
    maps:from_list([{element(rand:uniform(6), {p_user_property, p_correlation_data,
                                               p_content_type, p_authentication_data,
                                               p_response_topic, p_subscription_id}),
                     case rand:uniform(4) of
                         1 -> [{text(), text()}];
                         2 -> text();
                         3 -> [rand:uniform(100)];
                         4 -> term(2)
                     end} || _ <- lists:seq(1, rand:uniform(4))]).

bytes(N) -> rand:bytes(N).

term(0) -> leaf();
term(D) ->
    case rand:uniform(8) of
        1 -> [term(D - 1) || _ <- lists:seq(1, rand:uniform(4))];
        2 -> list_to_tuple([term(D - 1) || _ <- lists:seq(1, rand:uniform(4) - 1)]);
        3 -> maps:from_list([{term(D - 1), term(D - 1)} || _ <- lists:seq(1, rand:uniform(3))]);
        4 -> [term(D - 1) | term(D - 1)];            %% improper
        _ -> leaf()
    end.

leaf() ->
    case rand:uniform(12) of
        1 -> rand:uniform(1 bsl 70) - (1 bsl 69);    %% bignums
        2 -> rand:uniform(1000) - 500;
        3 -> rand:uniform() * 1.0e300;
        4 -> bytes(rand:uniform(64));
        5 -> element(rand:uniform(7), {true, false, undefined, empty, all_topics, error, 'ünï'});
        6 -> self();
        7 -> make_ref();
        8 -> fun() -> error(boom) end;
        9 -> [];
        10 -> #{};
        11 -> <<>>;
        12 -> text()
    end.

%% ---- extremes ---------------------------------------------------------------

extremes_test_() ->
    {timeout, 300, fun extremes/0}.

extremes() ->
    T = "hostile_extremes",
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
    pgev_app:start(T, [{payload_max_bytes, 1024}]),
    try
        Huge = binary:copy(<<"p">>, 256 * 1024 * 1024),
        ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"huge">>}, 1, [<<"t">>], Huge, false),
        LongId = binary:copy(<<"c">>, 65535),
        ok = vmq_pgevents:on_client_wakeup({"", LongId}),
        TooLong = binary:copy(<<"c">>, 65536),
        ok = vmq_pgevents:on_client_gone({"", TooLong}),
        Deep = lists:foldl(fun(_, Acc) -> #{k => Acc} end, #{}, lists:seq(1, 10000)),
        ok = vmq_pgevents:on_publish_m5(<<"u">>, {"", <<"deep">>}, 0, [<<"t">>], <<>>, false, Deep),
        Wide = maps:from_list([{integer_to_binary(I), binary:copy(<<"v">>, 100)} || I <- lists:seq(1, 100000)]),
        ok = vmq_pgevents:on_publish_m5(<<"u">>, {"", <<"wide">>}, 0, [<<"t">>], <<>>, false, Wide),
        Words = [<<>> || _ <- lists:seq(1, 100000)],
        ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"words">>}, 0, Words, <<>>, false),
        %% 500,000 empty user properties (5 bytes each in a packet): the
        %% JSON stops at its limit (256 KiB) instead of growing to ~28 MB
        Props = #{p_user_property => [{<<>>, <<>>} || _ <- lists:seq(1, 500000)]},
        ok = vmq_pgevents:on_publish_m5(<<"u">>, {"", <<"props">>}, 0, [<<"t">>], <<>>, false, Props),
        pgev_app:flush(),
        Rows = pgev_app:rows(T),
        [R1, R2, R3, R4, R5, R6, R7] = Rows,
        ?assertMatch(#{<<"payload_size">> := 268435456, <<"payload_truncated">> := true}, R1),
        ?assertEqual(2 + 2 * 1024, byte_size(maps:get(<<"payload">>, R1))),
        ?assertEqual(LongId, maps:get(<<"client_id">>, R2)),
        ?assertMatch(#{<<"client_id">> := null, <<"extra">> := #{<<"malformed">> := [<<"subscriber_id">>]}}, R3),
        ?assertMatch(#{<<"client_id">> := <<"deep">>}, R4),
        ?assertMatch(#{<<"properties">> := #{<<"$too_large">> := true}}, R5),
        ?assertMatch(#{<<"topic">> := null, <<"extra">> := #{<<"malformed">> := [<<"topic">>]}}, R6),
        #{<<"properties">> := #{<<"$too_large">> := true, <<"bytes">> := Bytes}} = R7,
        ?assert(Bytes > 256 * 1024 andalso Bytes < 256 * 1024 + 64)
    after
        pgev_app:stop()
    end.

%% ---- secrets -------------------------------------------------------------------

secrets_test_() ->
    {timeout, 120, fun secrets/0}.

secrets() ->
    T = "hostile_secrets",
    Pw = <<"Sup3r-Secret-MQTT-pw">>,
    DsnPw = "Dsn-Secret-pw-4711",
    %% the client key's passphrase: libpq marks it secret like the password
    KeyPw = "Key-Passphrase-0815",
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
    %% a dsn with a password the server does not check (trust auth): the
    %% password travels through the plugin and must never come out
    Dsn = pgev_pg:dsn() ++ " password=" ++ DsnPw ++ " sslpassword=" ++ KeyPw,
    pgev_app:capture_logs(),
    pgev_app:start(T, [{dsn, Dsn}]),
    try
        next = vmq_pgevents:auth_on_register({{127, 0, 0, 1}, 1}, {"", <<"c">>}, <<"u">>, Pw, true),
        next = vmq_pgevents:auth_on_register({{127, 0, 0, 1}, 1}, {"", <<"c">>}, <<"u">>,
                                             {encrypted, Pw}, true),
        next = vmq_pgevents:auth_on_register_m5({{127, 0, 0, 1}, 1}, {"", <<"c">>}, <<"u">>,
                                                {plaintext, Pw}, true, #{p_authentication_data => Pw}),
        next = vmq_pgevents:on_auth_m5(<<"u">>, {"", <<"c">>}, #{p_authentication_data => Pw}),
        pgev_app:flush(),
        %% PostgreSQL down for a moment: errors and log lines are produced
        pgev_pg:stop(),
        ok = vmq_pgevents:on_client_gone({"", <<"c">>}),
        pgev_app:wait_for(error_in_status_and_log, fun() ->
            maps:get(last_error, vmq_pgevents:status()) =/= <<>> andalso
                pgev_app:log_seen(<<"postgresql unavailable">>)
        end),
        Status = vmq_pgevents:status(),
        pgev_pg:start(),
        pgev_app:flush(),
        Logs = pgev_app:captured_logs(),
        StatusText = iolist_to_binary(io_lib:format("~p", [Status])),
        Table = iolist_to_binary(pgev_pg:sql("SELECT t::text FROM " ++ T ++ " t")),
        %% (the 5 and the start's pgevents_start row, whose settings hold no secret either)
        ?assertEqual(6, length(binary:split(string:trim(Table), <<"\n">>, [global]))),
        [?assertEqual({Where, nomatch}, {Where, binary:match(Text, Secret)}) ||
            {Where, Text} <- [{status, StatusText}, {table, Table}, {logs, iolist_to_binary(Logs)}],
            Secret <- [Pw, list_to_binary(DsnPw), list_to_binary(KeyPw)]],
        ?assertMatch({match, _}, re:run(maps:get(dsn_masked, Status), <<"(^| )password=\\*{4}( |$)">>)),
        ?assertNotEqual(nomatch, binary:match(maps:get(dsn_masked, Status), <<"sslpassword=****">>)),
        ?assertNotEqual(<<>>, maps:get(last_error, Status))
    after
        _ = pgev_app:captured_logs(),
        pgev_pg:start(),
        pgev_app:stop()
    end.

%% ---- a server that answers with a shape no PostgreSQL sends ------------------------

%% A stand-in server (pgev_standin) answers the writer's questions with a
%% row of no columns: the writer must say so in its status and ask again,
%% never read a value that is not there (that was a NULL dereference: the
%% whole broker gone). Each of the three questions the writer reads a
%% value from: is Citus there, is the table distributed, the resume point.
malformed_answer_test_() ->
    {timeout, 120, fun() ->
        Zero = {rows, [], [[]]},
        One = fun(V) -> {rows, [<<"v">>], [[V]]} end,
        %% Citus there?
        malformed(fun(_, _) -> Zero end, <<"SELECT to_regclass">>),
        %% the table distributed? (asked with parameters: the extended protocol)
        malformed(fun(_, <<"SELECT to_regclass", _/binary>>) -> One(<<"t">>);
                     (_, _) -> Zero
                  end, <<"SELECT EXISTS">>),
        %% whether the role may call the writer's functions (vmq_pgevents_grant)
        malformed(fun(_, <<"SELECT to_regclass", _/binary>>) -> One(<<"f">>);
                     (_, _) -> Zero
                  end, <<"SELECT coalesce(has_function_privilege">>),
        %% the resume point, asked before an event's first write
        malformed(fun(_, <<"SELECT to_regclass", _/binary>>) -> One(<<"f">>);
                     (_, <<"SELECT coalesce(has_function_privilege", _/binary>>) -> One(<<"f">>);
                     (_, _) -> Zero
                  end, <<"SELECT coalesce(max(seq)">>)
    end}.

malformed(Answer, Question) ->
    SI = pgev_standin:start(Answer),
    pgev_app:start("hostile_standin", [{dsn, pgev_standin:dsn(SI)}, {auto_create, false}]),
    try
        ok = vmq_pgevents:on_client_gone({"", <<"c">>}),
        %% asked, and after the backoff asked again: the VM and the writer live on
        asked(Question, 2),
        #{last_error := Err} = vmq_pgevents:status(),
        ?assertMatch({_, _}, binary:match(Err, <<"an answer of an unexpected shape (1 rows of 0 columns)">>))
    after
        pgev_app:stop(),
        pgev_standin:stop(SI),
        flush_standin()
    end.

asked(_Question, 0) -> ok;
asked(Question, N) ->
    receive
        {standin, Sql} ->
            case binary:longest_common_prefix([Sql, Question]) =:= byte_size(Question) of
                true -> asked(Question, N - 1);
                false -> asked(Question, N)
            end
    after 30000 -> error({not_asked, Question, N})
    end.

flush_standin() ->
    receive {standin, _} -> flush_standin() after 0 -> ok end.

%% A server that quotes the dsn's password in its error messages, long
%% enough that the password lies across the place where the message is
%% cut for the log and status (255 bytes): it is masked whole before the
%% cut, so not even its first characters come out. Three errors kept in
%% different ways: a refused login (libpq's connection message), is Citus
%% there (libpq's message of a result), may the role call the writer's
%% functions (pgio's). The password is quoted six times from about byte
%% 240 of libpq's message, so one copy lies across the cut even if libpq's
%% words before it are some 60 bytes shorter or 10 longer than counted.
secret_across_the_cut_test_() ->
    {timeout, 180, fun() ->
        Pw = <<"Kq7Vbn3Tz9Wd5Rx1Hy">>,
        Quote = fun(Before) -> <<(binary:copy(<<"p">>, 240 - Before))/binary,
                                 (binary:copy(Pw, 6))/binary, " and more">> end,
        One = fun(V) -> {rows, [<<"v">>], [[V]]} end,
        %% "connection to server at "127.0.0.1", port N failed: FATAL:  "
        Login = fun(Port) -> 59 + length(integer_to_list(Port)) end,
        secret_across_the_cut(Pw, #{startup_error => fun(Port) -> Quote(Login(Port)) end},
                              fun(_, _) -> error end, connect),
        %% "ERROR:  "
        secret_across_the_cut(Pw, #{}, fun(_, _) -> {error, Quote(8)} end,
                              <<"SELECT to_regclass">>),
        secret_across_the_cut(Pw, #{},
                              fun(_, <<"SELECT to_regclass", _/binary>>) -> One(<<"f">>);
                                 (_, _) -> {error, Quote(8)}
                              end, <<"SELECT coalesce(has_function_privilege">>)
    end}.

secret_across_the_cut(Pw, Opts, Answer, Question) ->
    SI = pgev_standin:start(Answer, Opts),
    pgev_app:capture_logs(),
    pgev_app:start("hostile_standin", [{dsn, pgev_standin:dsn(SI) ++ " password=" ++ binary_to_list(Pw)},
                                       {auto_create, false}]),
    try
        ok = vmq_pgevents:on_client_gone({"", <<"c">>}),
        case Question of
            connect ->
                pgev_app:wait_for(refused, fun() ->
                    binary:match(maps:get(last_error, vmq_pgevents:status()), <<"FATAL">>) =/= nomatch
                end);
            _ ->
                asked(Question, 2)
        end,
        #{last_error := Err} = vmq_pgevents:status(),
        Logs = pgev_app:captured_logs(),
        [Line | _] = [X || X <- Logs, binary:match(X, <<"pppp">>) =/= nomatch],
        %% the message was cut inside a copy of the password, masked before
        ?assertMatch({match, _}, re:run(Err, <<"p\\*+$">>)),
        ?assertMatch({match, _}, re:run(Line, <<"p\\*+\\); events stay queued">>)),
        Prefix = binary:part(Pw, 0, 3),
        ?assertEqual([], [X || X <- [Err | Logs], binary:match(X, Prefix) =/= nomatch])
    after
        _ = pgev_app:captured_logs(),
        pgev_app:stop(),
        pgev_standin:stop(SI),
        flush_standin()
    end.

%% ---- a hostile table name ----------------------------------------------------------

table_name_test_() ->
    {timeout, 60, fun() ->
        Hostile = "events; DROP TABLE victim",
        pgev_pg:sql("CREATE TABLE IF NOT EXISTS victim (x int)"),
        pgev_pg:sql("DROP TABLE IF EXISTS \"" ++ Hostile ++ "\" CASCADE"),
        pgev_app:start(Hostile),
        try
            ok = vmq_pgevents:on_client_gone({"", <<"c">>}),
            pgev_app:flush(),
            %% the name is a quoted identifier: its table exists, victim too
            ?assertEqual("1", string:trim(pgev_pg:sql("SELECT count(*) FROM \"" ++ Hostile ++ "\" "
                                                      "WHERE hook = 'on_client_gone'"))),
            ?assertEqual("t", string:trim(pgev_pg:sql("SELECT to_regclass('victim') IS NOT NULL")))
        after
            pgev_app:stop()
        end
    end}.

%% Regression (found by random_calls, seed 110659743): a map key that is an
%% atom with a Latin-1 name that is not UTF-8 was written as the
%% {"$base64": ..} object, which is not a valid JSON key; PostgreSQL refused
%% the row. Keys are now always strings ("$base64:...").
latin1_atom_key_test_() ->
    {timeout, 60, fun() ->
        T = "hostile_atom_key",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T),
        try
            #{dead_lettered := D0} = vmq_pgevents:status(),
            Key = list_to_atom([$k, 16#FC]),
            ok = vmq_pgevents:on_publish_m5(<<"u">>, {"", <<"c">>}, 0, [<<"t">>], <<>>, false,
                                            #{Key => 1, <<255>> => 2}),
            pgev_app:flush(),
            [Row] = pgev_app:rows(T),
            ?assertEqual(#{<<"$base64:a/w=">> => 1, <<"$base64:/w==">> => 2},
                         maps:get(<<"properties">>, Row)),
            #{dead_lettered := D1} = vmq_pgevents:status(),
            ?assertEqual(0, D1 - D0)
        after
            pgev_app:stop()
        end
    end}.
