"""Hypothesis profiles and the `fuzz` marker for the whole test suite.

HYPOTHESIS_PROFILE=default (the default) keeps `make test` fast: few examples per property.
HYPOTHESIS_PROFILE=fuzz (`make fuzz`) runs 2,000 examples per property. Fuzz properties carry
``@pytest.mark.fuzz`` (`-m fuzz` selects them) and leave ``max_examples`` to the profile: a test's
own ``@settings(max_examples=...)`` would override it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("default", max_examples=60, deadline=None)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_configure(config: pytest.Config) -> None:
    """Register the `fuzz` marker (select with `-m fuzz`)."""
    config.addinivalue_line("markers", "fuzz: property tests on untrusted input (make fuzz)")
