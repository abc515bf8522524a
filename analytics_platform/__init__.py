"""analytics_platform: one Dagster code location (see analytics_platform/definitions.py).

Dagster marks some parameters this project relies on on purpose (``backfill_policy`` of
``@asset``: one run per partition range) as beta; the warning says nothing an operator can
act on, so it is silenced here, for this package's definitions only.
"""

import warnings

from dagster import BetaWarning, PreviewWarning

warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
