%% @doc Metrics for VerneMQ (`vmq-admin metrics show', Prometheus): the
%% app env vmq_metrics_mfa points here, and VerneMQ calls metrics/0 when
%% it collects. Each entry is {Type, Labels, UniqueId, Name, Description,
%% Value}, as vmq_metrics:pluggable_metrics/0 takes them.
-module(vmq_pgevents_metrics).

-export([metrics/0, from_status/1]).

metrics() ->
    try from_status((vmq_pgevents_nif:status())#{listener_warnings => listener_warnings()})
    catch _:_ -> []
    end.

listener_warnings() ->
    try length(vmq_pgevents_listeners:warnings())
    catch _:_ -> 0
    end.

-spec from_status(map()) -> [tuple()].
from_status(S = #{per_hook := PerHook}) ->
    Hooks = lists:sort(maps:keys(PerHook)),
    PerHookMetrics =
        [{counter, [{hook, atom_to_list(H)}], id(Name, H), Name, Desc, maps:get(Key, maps:get(H, PerHook))}
         || {Key, Name, Desc} <- [{recorded, pgevents_recorded, <<"Events recorded (queued for writing)">>},
                                  {written, pgevents_written, <<"Events written to PostgreSQL">>},
                                  {dropped, pgevents_dropped, <<"Events dropped: no room in the journal or the queue">>},
                                  {dead_lettered, pgevents_dead_lettered, <<"Rows PostgreSQL refused">>},
                                  {spooled, pgevents_spooled_hook, <<"Events left in the journal at stops, for the next start">>},
                                  {filtered, pgevents_filtered, <<"Events left out by topic or mountpoint filters">>},
                                  {malformed, pgevents_malformed, <<"Events with arguments of an unexpected shape">>}],
            H <- Hooks],
    Connected = case maps:get(state, S) of connected -> 1; _ -> 0 end,
    PerHookMetrics ++
        [{gauge, [], pgevents_connected, pgevents_connected,
          <<"1 when the writer is connected to PostgreSQL">>, Connected},
         {gauge, [], pgevents_queue_events, pgevents_queue_events,
          <<"Events waiting to be written (queued and in the batch being written)">>, maps:get(pending, S)},
         {gauge, [], pgevents_queue_bytes, pgevents_queue_bytes,
          <<"Bytes in the in-memory queue">>, maps:get(queued_bytes, S)},
         {gauge, [], pgevents_oldest_unwritten_age_us, pgevents_oldest_unwritten_age_us,
          <<"Age of the oldest event not yet written, microseconds">>, maps:get(oldest_age_us, S)},
         {gauge, [], pgevents_write_latency_us, pgevents_write_latency_us,
          <<"Duration of the last committed COPY, microseconds">>, maps:get(last_batch_us, S)},
         {gauge, [], pgevents_spool_bytes, pgevents_spool_bytes,
          <<"Bytes of the journal files earlier starts left, not yet all written">>, maps:get(spool_bytes, S)},
         {gauge, [], pgevents_journal_bytes, pgevents_journal_bytes,
          <<"Bytes of the journal's files in spool_dir (in use and made ahead)">>,
          maps:get(journal_bytes, S, 0)},
         {counter, [], pgevents_spooled, pgevents_spooled,
          <<"Events left in the journal at stops, for the next start">>, maps:get(spooled, S)},
         {counter, [], pgevents_spool_corrupt, pgevents_spool_corrupt,
          <<"Damaged records skipped in earlier starts' journal files">>, maps:get(spool_corrupt, S)},
         {counter, [], pgevents_partitions_dropped, pgevents_partitions_dropped,
          <<"Partitions dropped by the retention">>, maps:get(partitions_dropped, S, 0)},
         {counter, [], pgevents_partitions_compressed, pgevents_partitions_compressed,
          <<"Partitions rewritten as columnar storage (compress_after)">>,
          maps:get(partitions_compressed, S, 0)},
         {counter, [], pgevents_reconnects, pgevents_reconnects,
          <<"Connections made to PostgreSQL">>, maps:get(reconnects, S)},
         {counter, [], pgevents_write_errors, pgevents_write_errors,
          <<"Failed connects and writes">>, maps:get(write_errors, S)},
         {counter, [], pgevents_discarded_at_stop, pgevents_discarded_at_stop,
          <<"Events unwritten when the plugin stopped">>, maps:get(discarded_at_stop, S)},
         {counter, [], pgevents_rejected, pgevents_rejected,
          <<"Calls of an unknown hook or arity">>, maps:get(rejected, S)},
         {counter, [], pgevents_dead_letter_lost, pgevents_dead_letter_lost,
          <<"Rows refused by PostgreSQL that the dead-letter table refused too: lost">>,
          maps:get(dead_letter_lost, S, 0)},
         {counter, [], pgevents_dropped_after_stop, pgevents_dropped_after_stop,
          <<"Events of hooks called while the plugin was stopped: not recorded">>,
          maps:get(dropped_after_stop, S, 0)},
         {counter, [], pgevents_journal_no_room, pgevents_journal_no_room,
          <<"Events the journal had no room for (spool_max_bytes, the disk)">>,
          maps:get(journal_no_room, S, 0)},
         {gauge, [], pgevents_journal_disk_segments, pgevents_journal_disk_segments,
          <<"Journal segments made on disk only (the memory files were full or missing)">>,
          maps:get(journal_disk_segments, S, 0)},
         {counter, [], pgevents_partitions_created, pgevents_partitions_created,
          <<"Partitions made ahead of time by the writer">>, maps:get(partitions_created, S, 0)},
         {counter, [], pgevents_compress_failures, pgevents_compress_failures,
          <<"Failed compress_after calls">>, maps:get(compress_failures, S, 0)},
         {gauge, [], pgevents_compress_refused, pgevents_compress_refused,
          <<"1 when the server refuses compress_after (no columnar storage, no privilege)">>,
          case maps:get(compress_refused, S, false) of true -> 1; _ -> 0 end},
         {gauge, [], pgevents_listener_warnings, pgevents_listener_warnings,
          <<"Listeners whose plugin chains leave the plugin out (VerneMQ 2.2)">>,
          maps:get(listener_warnings, S, 0)}].

id(Name, Hook) ->
    list_to_atom(atom_to_list(Name) ++ "_" ++ atom_to_list(Hook)).
