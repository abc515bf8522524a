-- posthog_aggregated.sessions for the UTC days [@first_day, @last_day], rebuilt as ONE
-- atomic MERGE: every existing row of those days is deleted and the new rows are inserted
-- in the same statement, so a re-run replaces each day as a unit.
--
-- One row per session TABLE-WIDE: each new row also comes as a "replaces" marker
-- (replaces_session_id = its session_id) that matches - and deletes - any existing row of
-- the same session_id on ANY day (a late event that moved the session's first event to
-- an earlier day leaves no second copy under the later day). New rows carry
-- replaces_session_id = NULL, never match, and are inserted. The join is one equality, so
-- DuckDB plans a hash join (BigQuery: one source row per target row at most, as required).
--
-- Events: PostHog's batch export appends, so an event (uuid) can be there twice; each
-- uuid counts once, the copy with the latest bq_ingested_timestamp (events without a uuid
-- are each kept). `properties` is read through the properties_json fragment (a JSON column
-- as is, a STRING parsed with SAFE.PARSE_JSON: malformed text gives NULL, so that event has
-- no $session_id and is kept out of the sessions; sessions_event_stats.sql counts it).
--
-- Session fields computed from the events (PostHog's sessions v2 rules, docs/posthog.md):
-- entry/exit URL = first/last non-empty $current_url (else $screen_name) by time; entry
-- UTM, referring domain, click ids, device type, OS and app version = those of the
-- session's first event; is_bounce and channel_type from those. Columns of PostHog's sessions export win
-- when present (carry_select).
--
-- Identifiers: {posthog_dataset}, {firebase_dataset}, {out_dataset} (validated).
-- Fragments (render_sql fragments, filled by analytics_platform.posthog.store.
-- build_sessions_merge_sql): properties_json = properties_from_json.sql or
-- properties_from_string.sql; export_cte = sessions_export_cte.sql, or select_no_export.sql
-- when the export is absent or carries nothing; carry_select / carry_insert / carry_values =
-- the carried columns' select, insert and values lists, built from validated column names
-- only (never from values).
-- Parameters (all bound):
--   @first_day, @last_day        DATE       the partitions written (inclusive)
--   @range_start, @range_end     TIMESTAMP  [first_day 00:00, last_day + 1 day 00:00)
--   @read_start, @read_end       TIMESTAMP  range widened by max_session_days (run config) on both sides
--   @fb_start_us, @fb_end_us     INT64      Firebase event_timestamp bounds (microseconds)
--   @fb_first_date, @fb_last_date STRING    Firebase event_date bounds (YYYYMMDD, +-1 day margin)
--   @event_created_event, @quiz_started_event, @quiz_completed_event, @scroll_event  STRING
--   @loaded_at                   TIMESTAMP
MERGE `{out_dataset}.sessions` T
USING (
  WITH raw_events AS (
    SELECT
      uuid,
      distinct_id,
      COALESCE(event, '') AS event,
      `timestamp` AS ts,
      {properties_json} AS props,
      ROW_NUMBER() OVER (PARTITION BY uuid ORDER BY bq_ingested_timestamp DESC) AS copy_rank
    FROM `{posthog_dataset}.events`
    WHERE `timestamp` >= @read_start
      AND `timestamp` < @read_end
  ),

  window_events AS (
    SELECT
      JSON_VALUE(props, '$."$session_id"') AS session_id,
      distinct_id,
      event,
      ts,
      -- scroll depth of one event: touch_y / screen_height clamped to [0, 1]; NULL when the
      -- event is not a scroll event or has no usable coordinates (see docs/posthog.md).
      CASE
        WHEN event = @scroll_event THEN
          SAFE_CAST(JSON_VALUE(props, '$.touch_y') AS FLOAT64)
      END AS touch_y,
      CASE
        WHEN event = @scroll_event THEN
          SAFE_CAST(JSON_VALUE(props, '$.screen_height') AS FLOAT64)
      END AS screen_height,
      COALESCE(
        NULLIF(JSON_VALUE(props, '$."$current_url"'), ''),
        NULLIF(JSON_VALUE(props, '$."$screen_name"'), '')
      ) AS url,
      props
    FROM raw_events
    WHERE (uuid IS NULL OR copy_rank = 1)
  ),

  session_events AS (
    SELECT *
    FROM window_events
    WHERE session_id IS NOT NULL AND session_id != ''
  ),

  -- one pass over the events: a session belongs to the UTC day of its first event (HAVING);
  -- the read window reaches max_session_days past the run's days, so a session that runs
  -- past midnight is complete, and one that started before the run's first day is seen
  -- starting there (and left out) instead of being mistaken for a session of that day.
  -- ANY_VALUE(x HAVING MIN/MAX "ts when x is set") = the first / last non-empty x by time.
  agg AS (
    SELECT
      session_id,
      -- distinct_id of the session's latest event (ties: the greatest id), deterministic
      SUBSTR(
        MAX(CONCAT(LPAD(CAST(UNIX_MICROS(ts) AS STRING), 20, '0'), distinct_id)),
        21
      ) AS distinct_id,
      MIN(ts) AS session_start,
      MAX(ts) AS session_end,
      COUNT(*) AS event_count,
      COUNTIF(event = '$pageview') AS pageview_count,
      COUNTIF(event = '$screen') AS screen_count,
      COUNTIF(event = '$autocapture') AS autocapture_count,
      COUNTIF(event = @event_created_event) AS events_created_count,
      COUNTIF(event = @quiz_started_event) AS quiz_started_count,
      COUNTIF(event = @quiz_completed_event) AS quiz_completed_count,
      COUNTIF(event = @scroll_event) AS scroll_event_count,
      MAX(
        CASE
          WHEN touch_y IS NOT NULL
           AND screen_height IS NOT NULL
           AND NOT IS_NAN(touch_y) AND NOT IS_INF(touch_y)
           AND NOT IS_NAN(screen_height) AND NOT IS_INF(screen_height)
           AND screen_height > 0
          THEN LEAST(GREATEST(touch_y / screen_height, 0.0), 1.0)
        END
      ) AS max_scroll_depth,
      ANY_VALUE(url HAVING MIN CASE WHEN url IS NOT NULL THEN ts END) AS ev_entry_url,
      ANY_VALUE(url HAVING MAX CASE WHEN url IS NOT NULL THEN ts END) AS ev_exit_url,
      -- the properties of the session's first event: the entry UTM / referrer / click ids
      -- and device fields are read from this one document per session, not from every event
      ANY_VALUE(props HAVING MIN ts) AS first_props,
      -- PostHog's bounce events: $pageview, $screen and $autocapture (each uuid once)
      COUNTIF(event IN ('$pageview', '$screen', '$autocapture')) AS ev_bounce_events
    FROM session_events
    GROUP BY session_id
    HAVING MIN(ts) >= @range_start AND MIN(ts) < @range_end
  ),

  -- per session: the entry values (UTM, referrer, click ids) and device fields of the
  -- session's first event; empty strings are no value
  entry AS (
    SELECT
      session_id,
      NULLIF(JSON_VALUE(first_props, '$.utm_source'), '') AS ev_utm_source,
      NULLIF(JSON_VALUE(first_props, '$.utm_medium'), '') AS ev_utm_medium,
      NULLIF(JSON_VALUE(first_props, '$.utm_campaign'), '') AS ev_utm_campaign,
      NULLIF(JSON_VALUE(first_props, '$."$referring_domain"'), '') AS ev_referring_domain,
      NULLIF(JSON_VALUE(first_props, '$.gad_source'), '') AS ev_gad_source,
      COALESCE(JSON_VALUE(first_props, '$.gclid'), '') != '' AS ev_has_gclid,
      COALESCE(JSON_VALUE(first_props, '$.fbclid'), '') != '' AS ev_has_fbclid,
      NULLIF(JSON_VALUE(first_props, '$."$device_type"'), '') AS device_type,
      NULLIF(JSON_VALUE(first_props, '$."$os"'), '') AS os,
      NULLIF(JSON_VALUE(first_props, '$."$app_version"'), '') AS app_version
    FROM agg
  ),

  -- the channel inputs, lower-cased, with the type (Search / Social / Video / Shopping) of
  -- the UTM source and of the referring domain: the reduced lookup lists of docs/posthog.md
  -- (a domain label match, so `www.google.co.uk` and `google` are both Search)
  channel_inputs AS (
    SELECT
      *,
      CASE
          WHEN REGEXP_CONTAINS(source, r'(^|\.)(google|bing|yahoo|baidu|duckduckgo|yandex|ecosia|naver|ask|aol)(\.|$)') THEN 'Search'
          WHEN REGEXP_CONTAINS(source, r'(^|\.)(facebook|fb|instagram|ig|linkedin|twitter|x|t|reddit|pinterest|tiktok|snapchat|threads|quora)(\.|$)') THEN 'Social'
          WHEN REGEXP_CONTAINS(source, r'(^|\.)(youtube|vimeo|twitch|dailymotion)(\.|$)') THEN 'Video'
          WHEN REGEXP_CONTAINS(source, r'(^|\.)(amazon|ebay|etsy|shopify|walmart|aliexpress)(\.|$)') THEN 'Shopping'
        END AS source_type,
      CASE
          WHEN REGEXP_CONTAINS(ref, r'(^|\.)(google|bing|yahoo|baidu|duckduckgo|yandex|ecosia|naver|ask|aol)(\.|$)') THEN 'Search'
          WHEN REGEXP_CONTAINS(ref, r'(^|\.)(facebook|fb|instagram|ig|linkedin|twitter|x|t|reddit|pinterest|tiktok|snapchat|threads|quora)(\.|$)') THEN 'Social'
          WHEN REGEXP_CONTAINS(ref, r'(^|\.)(youtube|vimeo|twitch|dailymotion)(\.|$)') THEN 'Video'
          WHEN REGEXP_CONTAINS(ref, r'(^|\.)(amazon|ebay|etsy|shopify|walmart|aliexpress)(\.|$)') THEN 'Shopping'
        END AS ref_type
    FROM (
      SELECT
        a.session_id,
        a.session_start,
        a.session_end,
        a.ev_bounce_events,
        e.ev_has_gclid,
        e.ev_has_fbclid,
        e.ev_gad_source,
        LOWER(e.ev_utm_source) AS source,
        LOWER(e.ev_utm_medium) AS medium,
        LOWER(e.ev_utm_campaign) AS campaign,
        e.ev_referring_domain AS ref
      FROM agg a
      JOIN entry e ON e.session_id = a.session_id
    )
  ),

  -- PostHog's bounce rule and channel type (posthog/hogql/database/schema/sessions_v2.py,
  -- channel_type.py: the default rules, in their order)
  derived AS (
    SELECT
      session_id,
      CASE
        WHEN ev_bounce_events = 0 THEN NULL
        ELSE NOT (
          ev_bounce_events > 1
          OR TIMESTAMP_DIFF(session_end, session_start, MICROSECOND) >= 10000000  -- >= 10 s
        )
      END AS ev_is_bounce,
      CASE
        WHEN REGEXP_CONTAINS(campaign, r'cross-network') THEN 'Cross Network'
        WHEN medium IN ('cpc', 'cpm', 'cpv', 'cpa', 'ppc', 'retargeting')
          OR STARTS_WITH(COALESCE(medium, ''), 'paid')
          OR ev_has_gclid
          OR ev_gad_source IS NOT NULL
        THEN
          CASE
            WHEN source_type IS NOT NULL THEN CONCAT('Paid ', source_type)
            WHEN REGEXP_CONTAINS(campaign, r'^(.*(([^a-df-z]|^)shop|shopping).*)$') THEN 'Paid Shopping'
            WHEN medium IN ('display', 'banner', 'expandable', 'interstitial', 'cpm') THEN 'Display'
            WHEN ref_type IS NOT NULL THEN CONCAT('Paid ', ref_type)
            WHEN ev_gad_source = '1' THEN 'Paid Search'
            WHEN REGEXP_CONTAINS(campaign, r'^(.*video.*)$') THEN 'Paid Video'
            WHEN ev_has_fbclid THEN 'Paid Social'
            ELSE 'Paid Unknown'
          END
        WHEN ref = '$direct'
          AND medium IS NULL
          AND (source IS NULL OR source IN ('(direct)', 'direct', '$direct'))
          AND NOT ev_has_fbclid
        THEN 'Direct'
        WHEN source_type IS NOT NULL THEN CONCAT('Organic ', source_type)
        WHEN REGEXP_CONTAINS(campaign, r'^(.*(([^a-df-z]|^)shop|shopping).*)$') THEN 'Organic Shopping'
        WHEN medium = 'organic' THEN 'Organic Search'
        WHEN medium IN ('social', 'social-network', 'social-media', 'sm', 'social network', 'social media') THEN 'Organic Social'
        WHEN medium = 'video' THEN 'Organic Video'
        WHEN medium IN ('display', 'banner', 'expandable', 'interstitial', 'cpm') THEN 'Display'
        WHEN medium IN ('email', 'e-mail', 'e_mail', 'e mail', 'newsletter') THEN 'Email'
        WHEN medium = 'affiliate' THEN 'Affiliate'
        WHEN medium IN ('referral', 'app', 'link') THEN 'Referral'
        WHEN medium = 'audio' THEN 'Audio'
        WHEN medium = 'sms' THEN 'SMS'
        WHEN ref_type IS NOT NULL THEN CONCAT('Organic ', ref_type)
        WHEN REGEXP_CONTAINS(campaign, r'^(.*video.*)$') THEN 'Organic Video'
        WHEN REGEXP_CONTAINS(medium, r'push$') THEN 'Push'
        WHEN ev_has_fbclid THEN 'Organic Social'
        WHEN ref = '$direct' THEN 'Direct'
        WHEN ref IS NOT NULL THEN 'Referral'
        ELSE 'Unknown'
      END AS ev_channel_type
    FROM channel_inputs
  ),

  fb_users AS (
    SELECT user_id, created_at, country
    FROM (
      SELECT
        user_id,
        created_at,
        country,
        ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY created_at, country) AS rn
      FROM `{firebase_dataset}.users`
      WHERE user_id IN (SELECT distinct_id FROM agg)
    )
    WHERE rn = 1
  ),

  -- the user's Firebase events in [session_start, session_end], whether or not the user
  -- has a Firebase users row
  fb_counts AS (
    SELECT a.session_id, COUNT(*) AS firebase_event_count
    FROM agg a
    JOIN `{firebase_dataset}.events` fe
      ON fe.user_id = a.distinct_id
     AND fe.event_timestamp >= UNIX_MICROS(a.session_start)
     AND fe.event_timestamp <= UNIX_MICROS(a.session_end)
    WHERE fe.event_timestamp >= @fb_start_us
      AND fe.event_timestamp <= @fb_end_us
      AND fe.event_date >= @fb_first_date
      AND fe.event_date <= @fb_last_date
    GROUP BY a.session_id
  ),

  export AS (
{export_cte}
  ),

  new_rows AS (
    SELECT
      a.session_id,
      a.distinct_id,
      u.user_id AS firebase_user_id,
      DATE(a.session_start) AS session_date,
      a.session_start,
      a.session_end,
      TIMESTAMP_DIFF(a.session_end, a.session_start, MICROSECOND) / 1000000.0 AS duration_seconds,
      a.event_count,
      a.pageview_count,
      a.screen_count,
      a.autocapture_count,
      a.events_created_count,
      a.quiz_started_count,
      a.quiz_completed_count,
      a.scroll_event_count,
      a.max_scroll_depth,
      COALESCE(c.firebase_event_count, 0) AS firebase_event_count,
      u.created_at AS user_created_at,
      u.country,
      @loaded_at AS _loaded_at,
      e.device_type,
      e.os,
      e.app_version
      {carry_select}
    FROM agg a
    JOIN entry e ON e.session_id = a.session_id
    JOIN derived d ON d.session_id = a.session_id
    LEFT JOIN fb_users u ON u.user_id = a.distinct_id
    LEFT JOIN fb_counts c ON c.session_id = a.session_id
    LEFT JOIN export x ON x.session_id = a.session_id
  )

  -- each new row twice: to insert (replaces_session_id NULL) and as the marker that
  -- deletes the existing rows of its session_id, whatever their day
  SELECT n.*, IF(is_marker, n.session_id, CAST(NULL AS STRING)) AS replaces_session_id
  FROM new_rows n
  CROSS JOIN UNNEST([FALSE, TRUE]) AS is_marker
) S
ON T.session_id = S.replaces_session_id
WHEN MATCHED THEN
  DELETE
WHEN NOT MATCHED BY SOURCE AND T.session_date >= @first_day AND T.session_date <= @last_day THEN
  DELETE
WHEN NOT MATCHED BY TARGET AND S.replaces_session_id IS NULL THEN
  INSERT (
    session_id, distinct_id, firebase_user_id, session_date, session_start, session_end,
    duration_seconds, event_count, pageview_count, screen_count, autocapture_count,
    events_created_count, quiz_started_count, quiz_completed_count, scroll_event_count,
    max_scroll_depth, firebase_event_count, user_created_at, country, _loaded_at,
    device_type, os, app_version
    {carry_insert}
  )
  VALUES (
    S.session_id, S.distinct_id, S.firebase_user_id, S.session_date, S.session_start,
    S.session_end, S.duration_seconds, S.event_count, S.pageview_count, S.screen_count,
    S.autocapture_count, S.events_created_count, S.quiz_started_count,
    S.quiz_completed_count, S.scroll_event_count, S.max_scroll_depth,
    S.firebase_event_count, S.user_created_at, S.country, S._loaded_at,
    S.device_type, S.os, S.app_version
    {carry_values}
  )
