    -- fragment of inactive_users.sql, used only when the session table exists
    UNION ALL
    SELECT user_id, ended_at, NULL, NULL
    FROM session
    WHERE user_id IS NOT NULL
      AND ended_at < :as_of
      AND ended_at >= :lookback_start
