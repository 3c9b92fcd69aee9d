%% @doc Test helper: the private PostgreSQL server that test/run_tests.sh
%% starts (its directory is in VMQ_PGEVENTS_TEST_PG), driven through
%% test/pg.sh and psql. Rows come back as maps decoded from row_to_json.
-module(pgev_pg).

-export([dir/0, dsn/0, start/0, stop/0, kill/0, freeze/0, thaw/0, sql/1, rows/1, json_decode/1]).
-export([pg/2, sql/2]).
-export([scalar/1, count/2, exactly_once/2, in_order/1, schema_sql/0]).

%% priv/schema.sql's text, to send as one statement string as the plugin does
schema_sql() ->
    {ok, B} = file:read_file("priv/schema.sql"),
    binary_to_list(B).

%% one number from a query
scalar(Sql) ->
    list_to_integer(string:trim(sql(Sql))).

count(Table, What) ->
    scalar("SELECT " ++ What ++ " FROM " ++ Table).

%% every one of N hooks' events once in Table; per incarnation, seq
%% without gaps (the plugin's own rows included: they take numbers too)
exactly_once(Table, N) ->
    Hooks = "(SELECT * FROM " ++ Table ++ " WHERE hook NOT LIKE 'pgevents\\_%') h",
    Got = {count(Hooks, "count(*)"), count(Hooks, "count(DISTINCT (incarnation, seq))"),
           scalar("SELECT count(*) FROM (SELECT incarnation FROM " ++ Table ++
                  " GROUP BY incarnation HAVING max(seq) - min(seq) + 1 <> count(*)) g")},
    case Got of
        {N, N, 0} -> ok;
        _ -> error({not_exactly_once, Table, #{expected => N, {rows, distinct, incarnations_with_gaps} => Got}})
    end.

%% each client's events in the order of its calls: ordered by (incarnation,
%% seq), a client's payloads are 1, 2, 3, ... (the K-th call's payload is K)
in_order(Table) ->
    case scalar("SELECT count(*) FROM (SELECT convert_from(payload, 'UTF8')::bigint - "
                "coalesce(lag(convert_from(payload, 'UTF8')::bigint) OVER "
                "(PARTITION BY client_id ORDER BY incarnation, seq), 0) AS step FROM " ++ Table ++
                ") s WHERE step <> 1") of
        0 -> ok;
        Bad -> error({not_in_order, Table, #{events_out_of_place => Bad}})
    end.

dir() ->
    case os:getenv("VMQ_PGEVENTS_TEST_PG") of
        false -> error(no_test_postgresql_dir);
        D -> D
    end.

dsn() -> string:trim(run("test/pg.sh", ["dsn", dir()])).
start() -> run("test/pg.sh", ["start", dir()]), ok.
stop() -> run("test/pg.sh", ["stop", dir()]), ok.
kill() -> run("test/pg.sh", ["kill", dir()]), ok.
%% SIGSTOP / SIGCONT the server and its backends: a server that hangs
freeze() -> run("test/pg.sh", ["freeze", dir()]), ok.
thaw() -> run("test/pg.sh", ["thaw", dir()]), ok.

%% psql -At: raw output
sql(Sql) -> sql(dir(), Sql).
sql(Dir, Sql) ->
    run("test/pg.sh", ["psql", Dir, "-At", "-c", Sql]).

%% test/pg.sh Cmd Dir Args... for a server of the test's own
pg(Cmd, [Dir | Args]) ->
    run("test/pg.sh", [Cmd, Dir | Args]).

%% one map per row, in the query's order (the query's result kept whole
%% first: on a Citus cluster, a subquery's order and its columns' names
%% do not survive row_to_json over it)
rows(Sql) ->
    Out = sql("WITH q AS MATERIALIZED (" ++ Sql ++ ") SELECT row_to_json(q) FROM q"),
    [json_decode(L) || L <- binary:split(iolist_to_binary(Out), <<"\n">>, [global, trim_all])].

run(Cmd, Args) ->
    Port = open_port({spawn_executable, os:find_executable("bash")},
                     [{args, [Cmd | Args]}, exit_status, binary, stderr_to_stdout,
                      %% SANITIZE=1 preloads ASan into the VM only, not its tools
                      {env, [{"LD_PRELOAD", false}]}]),
    collect(Port, []).

collect(Port, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, [D | Acc]);
        {Port, {exit_status, 0}} -> binary_to_list(iolist_to_binary(lists:reverse(Acc)));
        {Port, {exit_status, N}} ->
            error({command_failed, N, iolist_to_binary(lists:reverse(Acc))})
    after 120000 -> error(timeout)
    end.

%% ---- a small strict JSON decoder (OTP 25 has none) -------------------
%% objects -> maps with binary keys, arrays -> lists, strings -> binaries,
%% true/false/null -> atoms. Raises on anything that is not JSON.
json_decode(Bin) ->
    {V, Rest} = value(ws(Bin)),
    <<>> = ws(Rest),
    V.

ws(<<C, R/binary>>) when C =:= $\s; C =:= $\t; C =:= $\n; C =:= $\r -> ws(R);
ws(B) -> B.

value(<<"{", R/binary>>) -> object(ws(R), #{});
value(<<"[", R/binary>>) -> array(ws(R), []);
value(<<"\"", R/binary>>) -> string(R, <<>>);
value(<<"true", R/binary>>) -> {true, R};
value(<<"false", R/binary>>) -> {false, R};
value(<<"null", R/binary>>) -> {null, R};
value(B) -> number(B).

object(<<"}", R/binary>>, M) when map_size(M) =:= 0 -> {M, R};
object(<<"\"", R/binary>>, M) ->
    {K, R1} = string(R, <<>>),
    <<":", R2/binary>> = ws(R1),
    {V, R3} = value(ws(R2)),
    case ws(R3) of
        <<",", R4/binary>> -> object(ws(R4), M#{K => V});
        <<"}", R4/binary>> -> {M#{K => V}, R4}
    end.

array(<<"]", R/binary>>, []) -> {[], R};
array(B, Acc) ->
    {V, R} = value(B),
    case ws(R) of
        <<",", R1/binary>> -> array(ws(R1), [V | Acc]);
        <<"]", R1/binary>> -> {lists:reverse([V | Acc]), R1}
    end.

string(<<"\"", R/binary>>, Acc) -> {Acc, R};
string(<<"\\", E, R/binary>>, Acc) ->
    case E of
        $" -> string(R, <<Acc/binary, $">>);
        $\\ -> string(R, <<Acc/binary, $\\>>);
        $/ -> string(R, <<Acc/binary, $/>>);
        $b -> string(R, <<Acc/binary, $\b>>);
        $f -> string(R, <<Acc/binary, $\f>>);
        $n -> string(R, <<Acc/binary, $\n>>);
        $r -> string(R, <<Acc/binary, $\r>>);
        $t -> string(R, <<Acc/binary, $\t>>);
        $u ->
            <<H:4/binary, R1/binary>> = R,
            C = binary_to_integer(H, 16),
            if C >= 16#D800, C =< 16#DBFF ->
                    <<"\\u", L:4/binary, R2/binary>> = R1,
                    Lo = binary_to_integer(L, 16),
                    true = Lo >= 16#DC00 andalso Lo =< 16#DFFF,
                    Cp = 16#10000 + ((C - 16#D800) bsl 10) + (Lo - 16#DC00),
                    string(R2, <<Acc/binary, Cp/utf8>>);
               C >= 16#DC00, C =< 16#DFFF -> error(lone_surrogate);
               true -> string(R1, <<Acc/binary, C/utf8>>)
            end
    end;
string(<<C, _/binary>>, _) when C < 16#20 -> error(control_character);
string(<<C/utf8, R/binary>>, Acc) -> string(R, <<Acc/binary, C/utf8>>).

number(B) ->
    {Tok, R} = num_token(B, <<>>),
    case re:run(Tok, "^-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?$", [{capture, none}]) of
        match -> ok;
        nomatch -> error({bad_number, Tok})
    end,
    V = try binary_to_integer(Tok)
        catch error:badarg ->
                Norm = case binary:match(Tok, <<".">>) of
                           nomatch -> binary:replace(Tok, [<<"e">>, <<"E">>], <<".0e">>);
                           _ -> Tok
                       end,
                binary_to_float(Norm)
        end,
    {V, R}.

num_token(<<C, R/binary>>, Acc) when (C >= $0 andalso C =< $9); C =:= $-; C =:= $+;
                                      C =:= $.; C =:= $e; C =:= $E ->
    num_token(R, <<Acc/binary, C>>);
num_token(R, Acc) when Acc =/= <<>> -> {Acc, R}.
