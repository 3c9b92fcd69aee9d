%% @doc Application callback: starts the supervisor.
-module(vmq_pgevents_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    case vmq_pgevents_sup:start_link() of
        {ok, _} = Ok ->
            %% vmq-admin commands, where clique is there (inside VerneMQ)
            case code:ensure_loaded(clique) of
                {module, clique} -> vmq_pgevents_cli:register_cli();
                _ -> ok
            end,
            Ok;
        Error ->
            Error
    end.

stop(_State) ->
    ok.
