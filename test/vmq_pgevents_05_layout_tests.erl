%% @doc c_src/'s includes go one way: no two modules include each other,
%% directly or through others. A module is a .c file with its header; a
%% module's private header (x_int.h, x_priv.h) belongs to module x.
-module(vmq_pgevents_05_layout_tests).
-include_lib("eunit/include/eunit.hrl").

no_include_circle_test() ->
    Files = filelib:wildcard("c_src/*.[ch]"),
    ?assert(length(Files) > 20),
    Edges = [{module(F), module(H)} || F <- Files, H <- includes(F)],
    ?assertEqual([], circles(Edges)).

%% the check finds a circle when there is one: a -> b -> c -> a (through
%% a private header), and none in a chain
circles_found_test() ->
    ?assertEqual([["a", "b", "c"]],
                 circles([{module("c_src/a.c"), module("b.h")}, {module("c_src/b.c"), module("c_int.h")},
                          {module("c_src/c.c"), module("a.h")}])),
    ?assertEqual([], circles([{"a", "b"}, {"b", "c"}, {"a", "c"}])).

includes(File) ->
    {ok, Bin} = file:read_file(File),
    case re:run(Bin, "^\\s*#\\s*include\\s+\"([^\"]+)\"", [multiline, global, {capture, all_but_first, list}]) of
        {match, Ms} -> [H || [H] <- Ms];
        nomatch -> []
    end.

module(Path) ->
    Base = filename:rootname(filename:basename(Path)),
    re:replace(Base, "_(int|priv)$", "", [{return, list}]).

circles(Edges) ->
    G = digraph:new(),
    [begin digraph:add_vertex(G, A), digraph:add_vertex(G, B), digraph:add_edge(G, A, B) end
     || {A, B} <- Edges, A =/= B],
    Cs = [lists:sort(C) || C <- digraph_utils:cyclic_strong_components(G), length(C) > 1],
    digraph:delete(G),
    lists:sort(Cs).
