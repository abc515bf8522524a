"""Protocol-faithful HTTP stub servers for the third-party SaaS APIs (Mixpanel, Slack).

Pytest fixtures ``mixpanel_stub`` and ``slack_stub`` live in
``analytics_platform_tests.stubs.fixtures`` (registered through ``pytest_plugins``).
"""
