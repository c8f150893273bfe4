"""The test settings with a lease short enough that a stopped worker loses it within a test."""

from __future__ import annotations

from tests.settings import *  # noqa: F403
from tests.settings import BACKFILLS as _BACKFILLS

BACKFILLS = {**_BACKFILLS, "LEASE_SECONDS": 1.5}
