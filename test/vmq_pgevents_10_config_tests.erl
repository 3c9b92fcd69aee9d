%% @doc priv/vmq_pgevents.schema (cuttlefish) against the application:
%% every configuration key is declared once, maps to the same app env key,
%% and its default, converted as cuttlefish converts it, is the app's
%% default; values as they come from vernemq.conf are accepted by
%% vmq_pgevents_config. Cuttlefish itself is not available here, so its
%% datatype conversion is stood in for by to_app/2.
-module(vmq_pgevents_10_config_tests).
-include_lib("eunit/include/eunit.hrl").

mappings() ->
    [{Conf, App, Opts} || {mapping, Conf, App, Opts} <- schema_terms()].

%% The schema's terms. Its validators and translations hold funs, which
%% file:consult/1 does not read: each form is parsed and evaluated
%% instead (evaluating a fun only makes it).
schema_terms() ->
    {ok, Bin} = file:read_file("priv/vmq_pgevents.schema"),
    {ok, Tokens, _} = erl_scan:string(binary_to_list(Bin)),
    [begin
         {ok, Exprs} = erl_parse:parse_exprs(Form),
         {value, V, _} = erl_eval:exprs(Exprs, erl_eval:new_bindings()),
         V
     end || Form <- forms(Tokens, [])].

forms([], []) -> [];
forms([{dot, _} = D | Rest], Acc) -> [lists:reverse([D | Acc]) | forms(Rest, [])];
forms([T | Rest], Acc) -> forms(Rest, [T | Acc]).

app_defaults() ->
    {ok, [{application, vmq_pgevents, P}]} = file:consult("erl_src/vmq_pgevents.app.src"),
    %% everything but what VerneMQ itself reads
    [KV || {K, _} = KV <- proplists:get_value(env, P),
           K =/= vmq_plugin_hooks, K =/= vmq_metrics_mfa].

%% what cuttlefish hands to the application for a datatype
to_app(string, V) -> V;
to_app(integer, V) when is_integer(V) -> V;
to_app(integer, V) -> list_to_integer(V);
to_app(flag, on) -> true;
to_app(flag, off) -> false;
to_app(flag, "on") -> true;
to_app(flag, "off") -> false;
to_app({enum, Allowed}, V) when is_atom(V) -> true = lists:member(V, Allowed), V;
to_app({enum, Allowed}, V) -> to_app({enum, Allowed}, list_to_atom(V)).

every_key_mapped_test() ->
    M = mappings(),
    Keys = [K || {K, _} <- app_defaults()],
    ?assertEqual(lists:sort(["vmq_pgevents." ++ atom_to_list(K) || K <- Keys]),
                 lists:sort([C || {C, _, _} <- M])),
    [?assertEqual(C, A) || {C, A, _} <- M].

defaults_match_test() ->
    Defaults = app_defaults(),
    lists:foreach(
      fun({"vmq_pgevents." ++ Key, _, Opts}) ->
              Type = proplists:get_value(datatype, Opts),
              Default = proplists:get_value(default, Opts),
              App = proplists:get_value(list_to_atom(Key), Defaults),
              Want = case App of all -> "all"; _ -> App end,
              ?assertEqual({Key, Want}, {Key, to_app(Type, Default)})
      end, mappings()).

%% vernemq.conf lines -> app env -> the configuration the NIF gets
-define(CFG_SPOOL, "/tmp/vmq_pgevents_config_test_spool").

conf_values_test() ->
    Conf = [{"vmq_pgevents.dsn", "postgresql://vmq:pw@db.example/mqtt"},
            {"vmq_pgevents.table", "mqtt_events"},
            {"vmq_pgevents.auto_create", "off"},
            {"vmq_pgevents.hooks", "on_publish,on_deliver, on_deliver_m5"},
            {"vmq_pgevents.batch_size", "1000"},
            {"vmq_pgevents.payload_max_bytes", "0"},
            {"vmq_pgevents.payload_mode", "none"},
            {"vmq_pgevents.payload_modes", "on_publish:full, on_deliver:truncated"},
            {"vmq_pgevents.topic_exclude", "$SYS/#,secret/+/x"}],
    M = mappings(),
    _ = application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, spool_dir, ?CFG_SPOOL),
    try
        [begin
             {_, "vmq_pgevents." ++ AppKey, Opts} = lists:keyfind(K, 1, M),
             application:set_env(vmq_pgevents, list_to_atom(AppKey),
                                 to_app(proplists:get_value(datatype, Opts), V))
         end || {K, V} <- Conf],
        {ok, C} = vmq_pgevents_config:read(),
        ?assertMatch(#{dsn := <<"postgresql://vmq:pw@db.example/mqtt">>, table := <<"mqtt_events">>,
                       hooks := [on_deliver, on_deliver_m5, on_publish], batch_size := 1000,
                       payload_max_bytes := 0}, C),
        ?assertNot(maps:is_key(schema_sql, C)),
        #{payload_modes := Modes, topic_exclude := <<"$SYS/#,secret/+/x">>} = C,
        ?assertMatch(#{on_publish := full, on_deliver := truncated, on_register := none}, Modes)
    after
        application:unload(vmq_pgevents)
    end.

defaults_read_test() ->
    _ = application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, spool_dir, ?CFG_SPOOL),
    try
        {ok, C} = vmq_pgevents_config:read(),
        ?assertMatch(#{dsn := <<>>, table := <<"vmq_events">>, hooks := all, batch_size := 5000,
                       flush_interval_ms := 200, queue_max_events := 100000,
                       payload_max_bytes := 65536}, C),
        ?assertMatch(<<"-- vmq_pgevents", _/binary>>, maps:get(schema_sql, C)),
        ?assertEqual(<<?CFG_SPOOL>>, maps:get(spool_dir, C)),
        ?assertEqual(true, maps:get(journal, C)),
        %% overflow = drop (versions before the one log): the journal off
        application:set_env(vmq_pgevents, overflow, "drop"),
        {ok, #{spool_dir := <<?CFG_SPOOL>>, journal := false}} = vmq_pgevents_config:read()
    after
        application:unload(vmq_pgevents)
    end.

bad_values_test() ->
    _ = application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, spool_dir, ?CFG_SPOOL),
    try
        application:set_env(vmq_pgevents, batch_size, 0),
        ?assertMatch({error, <<"batch_size: must be an integer of at least 1", _/binary>>},
                     vmq_pgevents_config:read()),
        application:set_env(vmq_pgevents, batch_size, "12x"),
        ?assertMatch({error, <<"batch_size: not an integer: 12x">>}, vmq_pgevents_config:read()),
        application:set_env(vmq_pgevents, batch_size, 10),
        application:set_env(vmq_pgevents, auto_create, maybe),
        ?assertMatch({error, <<"auto_create: expected on/off", _/binary>>}, vmq_pgevents_config:read())
    after
        application:unload(vmq_pgevents)
    end.

%% the NIF refuses what it cannot use, without echoing the dsn
nif_refuses_bad_dsn_test() ->
    ?assertEqual({error, <<"dsn is not a valid libpq connection string or URI">>},
                 vmq_pgevents_nif:start(#{dsn => <<"host='secretpw">>, table => <<"t">>,
                                          node => <<"n">>}, self())),
    ?assertEqual({error, <<"table must be a name of 1 to 49 bytes (<table>_failed_logins must fit in 63)">>},
                 vmq_pgevents_nif:start(#{dsn => <<>>, table => <<>>, node => <<"n">>}, self())),
    ?assertEqual({error, <<"table must be a name of 1 to 49 bytes (<table>_failed_logins must fit in 63)">>},
                 vmq_pgevents_nif:start(#{dsn => <<>>, table => binary:copy(<<"t">>, 50), node => <<"n">>}, self())),
    [?assertEqual({error, <<"running_row_every_ms must be an integer from 1000 to 3600000">>},
                  vmq_pgevents_nif:start(#{dsn => <<>>, table => <<"t">>, node => <<"n">>,
                                           running_row_every_ms => V}, self())) || V <- [999, 3600001]].

%% docs/configuration.md: the table of its "## Keys" section lists every
%% key of priv/vmq_pgevents.schema once, with the schema's default as
%% written in vernemq.conf, and no key the schema does not have.
doc_keys() ->
    {ok, Doc} = file:read_file("docs/configuration.md"),
    [_, AfterKeys] = binary:split(Doc, <<"\n## Keys\n">>),
    Section = hd(binary:split(AfterKeys, <<"\n## ">>)),
    [{binary_to_list(K), binary_to_list(D)}
     || Line <- binary:split(Section, <<"\n">>, [global]),
        {match, [K, D]} <- [re:run(Line, "^\\| `vmq_pgevents\\.([a-z_0-9]+)` \\| `([^`]*)` \\|",
                                   [{capture, all_but_first, binary}])]].

doc_default(V) when is_integer(V) -> integer_to_list(V);
doc_default(V) when is_atom(V) -> atom_to_list(V);
doc_default("") -> "\"\"";
doc_default(V) when is_list(V) -> V.

configuration_page_lists_every_key_test() ->
    Doc = doc_keys(),
    DocKeys = [K || {K, _} <- Doc],
    ?assertEqual(length(DocKeys), length(lists:usort(DocKeys))),   %% each once
    Schema = [{Key, doc_default(proplists:get_value(default, Opts))}
              || {"vmq_pgevents." ++ Key, _, Opts} <- mappings()],
    ?assertEqual(lists:sort(Schema), lists:sort(Doc)).
