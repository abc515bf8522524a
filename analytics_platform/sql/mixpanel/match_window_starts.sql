-- Fragment: the extra match condition of an event_anomalies load (merge / insert_missing,
-- target alias T): only rows of the batch's window starts can match, so BigQuery prunes
-- the target scan to their days.
T.window_start BETWEEN @match_from AND @match_to
