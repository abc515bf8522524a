    -- fragment of inactive_users.sql, used only when public.session exists
    UNION ALL
    SELECT user_id, max(ended_at)
    FROM session
    WHERE user_id IS NOT NULL
      AND ended_at < :as_of
    GROUP BY user_id
