%% @doc Test stand-in for clique_status: the three output elements the
%% plugin's commands return. A table's rows must be proplists with the same
%% keys in the same order, as clique's table renderer needs.
-module(clique_status).

-export([table/1, text/1, alert/1]).

table([First | _] = Rows) ->
    Keys = [K || {K, _} <- First],
    [Keys = [K || {K, _} <- R] || R <- Rows],
    {table, Rows};
table([]) ->
    {table, []}.

text(T) -> {text, lists:flatten(io_lib:format("~ts", [T]))}.

alert(L) when is_list(L) -> {alert, L}.
