%% @doc The questions `vmq-admin pgevents client' and `check' ask
%% PostgreSQL, each as rows for a CLI table. They go on a connection of
%% their own (vmq_pgevents.cli_dsn, else vmq_pgevents.dsn), never the
%% writer's, and give up after ?TIMEOUT_MS whatever the server does: the
%% CLI never hangs and the hooks never wait. The SQL is fixed text with
%% the table's name quoted; what the operator typed goes as parameters.
-module(vmq_pgevents_ask).

-export([client/3, check/0, quote_ident/1]).

-define(TIMEOUT_MS, 3000).

%% the client's last Limit events, oldest first
-spec client(binary(), binary(), pos_integer()) -> {ok, [[{atom(), string()}]]} | {error, string()}.
client(ClientId, Mountpoint, Limit) ->
    T = quote_ident(table()),
    Sql = ["SELECT to_char(ts AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US'), hook, topic, qos::text, "
           "payload_size::text, node || ' ' || incarnation || ' ' || conn_id "
           "FROM (SELECT * FROM ", T, " WHERE client_id = $1 AND mountpoint = $2 "
           "ORDER BY ts DESC, seq DESC LIMIT $3) e ORDER BY ts, node, incarnation, seq"],
    case ask([{Sql, [ClientId, Mountpoint, integer_to_binary(Limit)]}]) of
        {ok, [Rows]} ->
            {ok, [lists:zip([time, hook, topic, qos, payload_size, connection], [text(V) || V <- R])
                  || R <- Rows]};
        {error, _} = E -> E
    end.

%% what an operator checks first: name | value rows
-spec check() -> [[{atom(), string()}]].
check() ->
    S = vmq_pgevents:status(),
    Plugin = [{"plugin", atom_to_list(maps:get(state, S))},
              {"last error", case maps:get(last_error, S, <<>>) of <<>> -> "-"; E -> E end}],
    Table = table(),
    Qs = [{<<"SELECT coalesce(obj_description(to_regclass(quote_ident($1 || '_connections')), 'pg_class'), "
             "'no views: the schema is not applied')">>, [Table]},
          %% partitions whose period starts after now (0 for partition = none)
          {<<"SELECT count(*)::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
             "WHERE i.inhparent = to_regclass(quote_ident($1)) "
             "AND substring(pg_get_expr(c.relpartbound, c.oid) from 'FROM \\(''([^'']*)''\\)')::timestamptz > now()">>,
           [Table]}],
    %% asked apart: a reader of some mountpoints only may not ask it
    Complete = [{["SELECT node, incarnation::text, ended, rows_written::text, rows_dead::text, "
                  "missing::text, missing_ranges::text FROM ", quote_ident(Table ++ "_completeness"),
                  "()"], []}],
    Db = case ask(Qs) of
             {ok, [[[Version]], [[Ahead]]]} ->
                 [{"database", "answers"}, {"schema", Version}, {"partitions made ahead", Ahead}]
                 ++ case ask(Complete) of
                        {ok, [Incs]} ->
                            [{lists:flatten(io_lib:format("last day, ~ts ~ts", [N, I])),
                              io_lib:format("~ts; ~ts rows, ~ts dead-lettered, ~ts missing~ts",
                                            [End, W, D, M, case M of <<"0">> -> ""; _ -> [" ", R] end])}
                             || [N, I, End, W, D, M, R] <- Incs]
                            ++ [{"last day", "no rows"} || Incs =:= []];
                        {error, Why} ->
                            [{"last day", "not answered: " ++ Why}]
                    end;
             {error, Why} ->
                 [{"database", "no answer: " ++ Why}]
         end,
    [[{name, K}, {value, lists:flatten(io_lib:format("~ts", [text(V)]))}] || {K, V} <- Plugin ++ Db].

ask(Queries) ->
    Dsn = case application:get_env(vmq_pgevents, cli_dsn, "") of
              "" -> application:get_env(vmq_pgevents, dsn, "");
              <<>> -> application:get_env(vmq_pgevents, dsn, "");
              D -> D
          end,
    try vmq_pgevents_nif:query(unicode:characters_to_binary(Dsn),
                               [{utf8(Sql), [utf8(P) || P <- Ps]} || {Sql, Ps} <- Queries],
                               ?TIMEOUT_MS) of
        {ok, _} = Ok -> Ok;
        {error, Why} -> {error, unicode:characters_to_list(Why)}
    catch
        _:Reason -> {error, lists:flatten(io_lib:format("~0p", [Reason]))}
    end.

%% text (characters or UTF-8 binaries) as UTF-8
utf8(T) ->
    case unicode:characters_to_binary(T) of
        B when is_binary(B) -> B;
        _ -> throw(not_text)
    end.

table() ->
    unicode:characters_to_list(application:get_env(vmq_pgevents, table, "vmq_events")).

%% a name as one SQL identifier: "...", its quotes doubled
-spec quote_ident(string()) -> string().
quote_ident(Name) ->
    [$" | lists:flatmap(fun($") -> "\"\""; (C) -> [C] end, Name)] ++ [$"].

text(null) -> "";
text(B) when is_binary(B) -> unicode:characters_to_list(B);
text(L) -> L.
