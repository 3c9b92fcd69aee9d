%% @doc Test helper: a stand-in for a PostgreSQL server on 127.0.0.1 that
%% speaks just enough of the frontend/backend protocol (version 3) to let
%% libpq connect without authentication, and answers every statement with
%% what the test asks for - in particular results of a shape no real
%% PostgreSQL sends (a row of no columns), as a proxy, a "compatible"
%% server or a man in the middle could. Each statement answered is sent
%% to the owner as {standin, Sql}.
%%
%% Answer: fun(N, Sql) -> {rows, Columns, Rows} | error | {error, Message},
%% N counting the statements from 1; Columns a list of names, Rows lists
%% of binaries; Message the error's primary text (binary).
-module(pgev_standin).

-export([start/1, start/2, stop/1, dsn/1]).

start(Answer) ->
    start(Answer, #{}).

%% Opts: #{startup_error => fun(Port) -> Message end}: every connection
%% refused at its startup with a FATAL error of that primary text.
start(Answer, Opts) ->
    Owner = self(),
    {ok, L} = gen_tcp:listen(0, [binary, {ip, {127, 0, 0, 1}}, {active, false},
                                 {packet, raw}, {reuseaddr, true}]),
    {ok, Port} = inet:port(L),
    Opts1 = case Opts of
                #{startup_error := F} -> Opts#{startup_error := F(Port)};
                _ -> Opts
            end,
    Pid = spawn(fun() -> accept(L, Owner, Answer, 1, Opts1) end),
    ok = gen_tcp:controlling_process(L, Pid),
    {Pid, Port}.

stop({Pid, _Port}) ->
    exit(Pid, kill),
    ok.

dsn({_Pid, Port}) ->
    "host=127.0.0.1 port=" ++ integer_to_list(Port) ++
        " user=standin dbname=standin sslmode=disable gssencmode=disable".

accept(L, Owner, Answer, N0, Opts) ->
    {ok, S} = gen_tcp:accept(L),
    N = try startup(S, Opts), serve(S, Owner, Answer, N0, [])
        catch _:_ -> N0
        end,
    catch gen_tcp:close(S),
    accept(L, Owner, Answer, N, Opts).

recv(S, Len) ->
    {ok, B} = gen_tcp:recv(S, Len, 60000),
    B.

startup(S, #{startup_error := M}) ->
    <<Len:32>> = recv(S, 4),
    _ = recv(S, Len - 4),
    ok = gen_tcp:send(S, msg($E, <<"SFATAL", 0, "C28000", 0, "M", M/binary, 0, 0>>)),
    error(refused);
startup(S, _) ->
    <<Len:32>> = recv(S, 4),
    <<_Version:32, _/binary>> = recv(S, Len - 4),
    ok = gen_tcp:send(S, [msg($R, <<0:32>>),
                          msg($S, <<"client_encoding", 0, "UTF8", 0>>),
                          msg($S, <<"server_version", 0, "15.0", 0>>),
                          msg($S, <<"standard_conforming_strings", 0, "on", 0>>),
                          msg($K, <<1:32, 2:32>>),
                          ready()]).

%% Simple query: Q. Extended: Parse, Bind, Describe, Execute, then Sync.
serve(S, Owner, Answer, N, Pending) ->
    <<Type, Len:32>> = recv(S, 5),
    Body = case Len - 4 of 0 -> <<>>; K -> recv(S, K) end,
    case Type of
        $Q ->
            Sql = hd(binary:split(Body, <<0>>)),
            ok = gen_tcp:send(S, [answer(Owner, Answer, N, Sql), ready()]),
            serve(S, Owner, Answer, N + 1, []);
        $P ->
            [_Name, Rest] = binary:split(Body, <<0>>),
            Sql = hd(binary:split(Rest, <<0>>)),
            serve(S, Owner, Answer, N, [Sql | Pending]);
        $S ->
            Out = case Pending of
                      [] -> [];
                      [Sql | _] -> [msg($1, <<>>), msg($2, <<>>), answer(Owner, Answer, N, Sql)]
                  end,
            ok = gen_tcp:send(S, [Out, ready()]),
            serve(S, Owner, Answer, N + length(Pending), []);
        $X ->
            N;
        _ ->   % Bind, Describe, Execute, Close, Flush: answered at Sync
            serve(S, Owner, Answer, N, Pending)
    end.

answer(Owner, Answer, N, Sql) ->
    Owner ! {standin, Sql},
    case Answer(N, Sql) of
        {rows, Cols, Rows} ->
            [row_description(Cols),
             [msg($D, [<<(length(R)):16>>, [[<<(byte_size(V)):32>>, V] || V <- R]]) || R <- Rows],
             msg($C, <<"SELECT ", (integer_to_binary(length(Rows)))/binary, 0>>)];
        error ->
            msg($E, <<"SERROR", 0, "C42000", 0, "Mstand-in refuses", 0, 0>>);
        {error, M} ->
            msg($E, <<"SERROR", 0, "C42000", 0, "M", M/binary, 0, 0>>)
    end.

row_description(Cols) ->
    msg($T, [<<(length(Cols)):16>>,
             [[C, 0, <<0:32, 0:16, 25:32, (-1):16/signed, (-1):32/signed, 0:16>>] || C <- Cols]]).

ready() -> msg($Z, <<"I">>).

msg(Type, Body) ->
    B = iolist_to_binary(Body),
    [Type, <<(byte_size(B) + 4):32>>, B].
