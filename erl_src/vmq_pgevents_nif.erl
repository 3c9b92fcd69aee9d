%% @doc The NIF's Erlang face: stubs replaced by c_src/nif.c at load.
%% Only vmq_pgevents (hooks) and vmq_pgevents_server call these.
-module(vmq_pgevents_nif).

-export([event/3, wants/2, start/2, configure/1, stop/1, flush/0, status/0, hooks/0, query/3, mask_dsn/1]).
-export([priv_dir/0, load_error/0]).
-on_load(init/0).

-define(LOAD_ERROR, {?MODULE, load_error}).

%% A NIF library that cannot be loaded (a library it needs is missing, a
%% build for another Erlang/OTP, ...) leaves this module loaded with its
%% stubs, so that the plugin can say why it does not record (load_error/0,
%% vmq_pgevents_server) instead of being undefined, which would fail the
%% plugin's start and take VerneMQ down with it.
init() ->
    case erlang:load_nif(filename:join(priv_dir(), "vmq_pgevents_nif"), 0) of
        ok ->
            persistent_term:erase(?LOAD_ERROR),
            ok;
        {error, {upgrade, _}} = Error ->
            %% another build while one runs (its upgrade refused): the
            %% load fails and the running code stays
            Error;
        {error, {Reason, Text}} ->
            %% load_failed: dlopen's words; bad_lib: not this module's
            %% library or another NIF version; load: its load() failed
            persistent_term:put(?LOAD_ERROR, unicode:characters_to_binary(
                                                io_lib:format("~0p: ~ts", [Reason, Text]))),
            ok;
        Error ->
            Error
    end.

%% why the NIF library did not load (the dynamic loader's words), or
%% undefined when it is loaded
-spec load_error() -> binary() | undefined.
load_error() ->
    persistent_term:get(?LOAD_ERROR, undefined).

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

-spec event(atom(), [term()], integer() | undefined) -> ok | disabled | filtered | {error, atom()}.
event(_Hook, _Args, _ConnId) -> erlang:nif_error(not_loaded).

%% whether event/3 would record a call of Hook/Arity now (enabled, and
%% the plugin recording)
-spec wants(atom(), non_neg_integer()) -> boolean().
wants(_Hook, _Arity) -> false.

-spec start(map(), pid()) -> ok | {error, binary() | atom()}.
start(_Config, _Owner) -> erlang:nif_error(not_loaded).

-spec configure(map()) -> ok | {error, binary()}.
configure(_Config) -> erlang:nif_error(not_loaded).

-spec stop(non_neg_integer()) -> ok.
stop(_TimeoutMs) -> erlang:nif_error(not_loaded).

-spec flush() -> ok.
flush() -> ok.    %% without the NIF: nothing to write

%% without the NIF: nothing recorded, nothing written, and why
-spec status() -> map().
status() ->
    Zero = [incarnation, queued, queued_bytes, queue_peak, queue_peak_bytes, inflight, pending,
            last_seq, dropped, dropped_after_stop, spooled, spool_bytes, spooled_at_stop,
            spool_corrupt, written,
            batches, prefetched, dead_lettered, dead_letter_lost, discarded_at_stop,
            write_errors, reconnects, last_write_us, last_batch_us, journal_bytes,
            journal_segments, journal_no_room, journal_sync_age_us, journal_memory_bytes,
            journal_disk_segments,
            partitions_created,
            partitions_dropped, partitions_checked_us, partitions_compressed,
            compress_failures, malformed, rejected, oldest_age_us],
    maps:merge(maps:from_list([{K, 0} || K <- Zero]),
               #{state => stopped, dsn_masked => <<>>, journal => false, journal_error => <<>>,
                 journal_memory_error => <<>>,
                 spool_error => <<>>, per_hook => #{}, compress_refused => false,
                 compress_error => <<>>,
                 last_error => case load_error() of undefined -> <<>>; E -> E end}).

%% a connection string with every value libpq marks secret as ****;
%% <<>> when it cannot be read (or without the NIF)
-spec mask_dsn(iodata()) -> binary().
mask_dsn(_Dsn) -> <<>>.

-spec hooks() -> [{atom(), non_neg_integer()}].
hooks() -> erlang:nif_error(not_loaded).

%% query(Conninfo, [{Sql, Params}], TimeoutMs) -> {ok, [Rows]} | {error, Message}:
%% on a connection of its own, all within TimeoutMs (the CLI's questions)
-spec query(binary(), [{binary(), [binary() | null]}], pos_integer()) ->
          {ok, [[[binary() | null]]]} | {error, binary()}.
query(_Conninfo, _Queries, _TimeoutMs) -> {error, <<"the NIF library is not loaded">>}.
