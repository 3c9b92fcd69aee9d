%% @doc The NIF's Erlang face: stubs replaced by c_src/nif.c at load.
%% Only vmq_pgevents (hooks) and vmq_pgevents_server call these.
-module(vmq_pgevents_nif).

-export([event/3, start/2, configure/1, stop/1, flush/0, status/0, hooks/0]).
-export([priv_dir/0]).
-on_load(init/0).

init() ->
    erlang:load_nif(filename:join(priv_dir(), "vmq_pgevents_nif"), 0).

%% The plugin directory may be named anything (VerneMQ loads it by path),
%% so find priv/ next to this module's ebin/ rather than by app name: the
%% ebin/ on the code path that holds this module, which is where
%% code:load_file/1 loads it from (during on_load, code:which/1 still
%% names the file of the code being replaced).
priv_dir() ->
    Beam = case code:where_is_file(atom_to_list(?MODULE) ++ ".beam") of
               non_existing -> code:which(?MODULE);
               Path -> Path
           end,
    filename:join(filename:dirname(filename:dirname(Beam)), "priv").

-spec event(atom(), [term()], integer() | undefined) -> ok | disabled | {error, atom()}.
event(_Hook, _Args, _ConnId) -> erlang:nif_error(not_loaded).

-spec start(map(), pid()) -> ok | {error, binary() | atom()}.
start(_Config, _Owner) -> erlang:nif_error(not_loaded).

-spec configure(map()) -> ok | {error, binary()}.
configure(_Config) -> erlang:nif_error(not_loaded).

-spec stop(non_neg_integer()) -> ok.
stop(_TimeoutMs) -> erlang:nif_error(not_loaded).

-spec flush() -> ok.
flush() -> erlang:nif_error(not_loaded).

-spec status() -> map().
status() -> erlang:nif_error(not_loaded).

-spec hooks() -> [{atom(), non_neg_integer()}].
hooks() -> erlang:nif_error(not_loaded).
