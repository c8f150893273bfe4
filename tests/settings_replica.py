"""The test settings for the `backfill run` processes of tests/test_replica_lag.py: health asked
every half second (every half second while throttled too), throttled above 1 s of replica lag;
the test adds the rest (REPLICA_DATABASES, CRITICAL_REPLICA_LAG) as JSON in
BACKFILLS_TEST_REPLICA_SETTINGS."""

from __future__ import annotations

import json
import os

from tests.settings import *  # noqa: F403
from tests.settings import BACKFILLS as _BACKFILLS

BACKFILLS = {
    **_BACKFILLS,
    "HEALTH_CHECK_SECONDS": 0.5,
    "THROTTLE_MAX_WAIT": 0.5,
    "MAX_REPLICA_LAG": 1.0,
    **json.loads(os.environ.get("BACKFILLS_TEST_REPLICA_SETTINGS", "{}")),
}
