%% @doc Test helper: a Citus cluster of three real PostgreSQL servers on
%% loopback (a coordinator and two workers, each made by test/pg.sh with
%% Citus preloaded, TCP on 127.0.0.1 trusted), started for a test and
%% stopped after it. The plugin is pointed at the coordinator.
-module(pgev_citus).

-export([start/0, stop/1, dir/2, sql/3, port/2, workers/1]).

%% the cluster, as a map: #{coordinator => Dir, workers => [Dir1, Dir2]}
start() ->
    Base = pgev_pg:dir() ++ "_citus",
    C = Base ++ "_c",
    Ws = [Base ++ "_w1", Base ++ "_w2"],
    [begin
         os:cmd("rm -rf '" ++ D ++ "'"),
         pgev_pg:pg("init", [D, "fast", "citus"]),
         pgev_pg:pg("start", [D]),
         pgev_pg:sql(D, "CREATE EXTENSION citus")
     end || D <- [C | Ws]],
    pgev_pg:sql(C, "SELECT citus_set_coordinator_host('127.0.0.1', " ++ read_port(C) ++ ")"),
    [pgev_pg:sql(C, "SELECT citus_add_node('127.0.0.1', " ++ read_port(W) ++ ")") || W <- Ws],
    #{coordinator => C, workers => Ws}.

stop(#{coordinator := C, workers := Ws}) ->
    [begin
         catch pgev_pg:pg("thaw", [D]),
         catch pgev_pg:pg("stop", [D]),
         os:cmd("rm -rf '" ++ D ++ "' '" ++ D ++ "_spool'")
     end || D <- [C | Ws]],
    ok.

%% the directory of a node: coordinator, w1 or w2
dir(#{coordinator := C}, coordinator) -> C;
dir(#{workers := [W, _]}, w1) -> W;
dir(#{workers := [_, W]}, w2) -> W.

sql(Cluster, Node, Sql) -> pgev_pg:sql(dir(Cluster, Node), Sql).

%% a node's TCP port, as Citus knows it
port(Cluster, Node) -> list_to_integer(read_port(dir(Cluster, Node))).

workers(#{workers := Ws}) -> length(Ws).

read_port(Dir) ->
    {ok, B} = file:read_file(filename:join(Dir, "port")),
    string:trim(binary_to_list(B)).
