%% @doc Top supervisor: one server that owns the writer thread.
-module(vmq_pgevents_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

init([]) ->
    StopTimeout = case application:get_env(vmq_pgevents, stop_timeout_ms) of
                      {ok, N} when is_integer(N), N >= 0, N =< 3600000 -> N;
                      _ -> 5000    %% a bad value is reported by the server
                  end,
    Server = #{id => vmq_pgevents_server,
               start => {vmq_pgevents_server, start_link, []},
               restart => permanent,
               %% terminate/2 flushes for up to stop_timeout_ms
               shutdown => StopTimeout + 5000,
               type => worker},
    {ok, {#{strategy => one_for_one, intensity => 5, period => 60}, [Server]}}.
