"""Shared pytest configuration: the Kafka broker plugin and hypothesis profiles."""

import os

from hypothesis import HealthCheck, settings

pytest_plugins = ["tests.plugins.kafka"]

settings.register_profile(
    "ci", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("STATESTREAM_HYPOTHESIS_PROFILE", "ci"))
