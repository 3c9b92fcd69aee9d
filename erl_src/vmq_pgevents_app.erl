%% @doc Application callback: starts the supervisor.
-module(vmq_pgevents_app).
-behaviour(application).

-export([start/2, stop/1]).

start(_Type, _Args) ->
    case vmq_pgevents_sup:start_link() of
        {ok, _} = Ok ->
            %% vmq-admin commands, where clique is there (inside VerneMQ)
            case code:ensure_loaded(clique) of
                {module, clique} ->
                    %% never fails the start (that would take VerneMQ down)
                    try vmq_pgevents_cli:register_cli()
                    catch Class:Reason ->
                            logger:error("vmq_pgevents: vmq-admin commands not registered: ~0p:~0p",
                                         [Class, Reason])
                    end;
                _ -> ok
            end,
            Ok;
        Error ->
            Error
    end.

stop(_State) ->
    case code:is_loaded(clique) of
        {file, _} -> catch vmq_pgevents_cli:unregister_cli();
        false -> ok
    end,
    ok.
