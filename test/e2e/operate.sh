scenario_operate() { :; }
scenario_plugin_reenable() { :; }
scenario_stop_pg_down() { :; }
scenario_whole_run() { :; }
scenario_connection_opts() { :; }
scenario_cluster() { :; }
