-- Rows of the re-fetched days whose event is no longer collected (disabled in the events
-- configuration): a partition holds exactly the collected events of its day.
DELETE FROM `{dataset}.{table}`
WHERE event_date BETWEEN @from_date AND @to_date
  AND event_name NOT IN UNNEST(@events)
