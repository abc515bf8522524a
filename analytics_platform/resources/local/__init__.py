"""Local stand-ins of the external services (chosen by ``build_resources`` when a service
is not configured on ``ANALYTICS_ENV=local``), and the demo/test-only writers of their files:

* ``mixpanel_files.LocalMixpanel``: export from ``$ANALYTICS_DATA_DIR/mixpanel_export/``,
  /engage to ``$ANALYTICS_DATA_DIR/outbox/mixpanel_engage.jsonl``;
* ``slack_outbox.LocalSlack``: alerts logged and appended to the Slack outbox (JSON lines);
* ``firestore_export.LocalFirestore``: event documents from a local JSON-lines export
  (``write_local_export`` writes one).

Each implements the same interface as the real client (``MixpanelService``,
``SlackService``, ``FirestoreService``).
"""
