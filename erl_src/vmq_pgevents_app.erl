%% @doc Application callback: starts the supervisor.
-module(vmq_pgevents_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    vmq_pgevents_sup:start_link().

stop(_State) ->
    ok.
