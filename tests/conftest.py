"""Hypothesis profiles and the `fuzz` marker for the whole test suite.

HYPOTHESIS_PROFILE=default (the default) keeps `make test` fast: few examples per property.
Under CI (CI set) the default is `ci`: the same examples, derandomized, so a verdict is repeatable.
HYPOTHESIS_PROFILE=fuzz (`make fuzz`) runs 2,000 examples per property. Fuzz properties carry
``@pytest.mark.fuzz`` (`-m fuzz` selects them) and leave ``max_examples`` to the profile: a test's
own ``@settings(max_examples=...)`` would override it.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# No deadline and no too-slow check: a loaded 2-core machine must not fail a correct property.
SLOW_OK = [HealthCheck.too_slow]
settings.register_profile("default", max_examples=60, deadline=None, suppress_health_check=SLOW_OK)
settings.register_profile(
    "ci",  # the same examples on every run: a CI verdict does not depend on the draw
    parent=settings.get_profile("default"),
    derandomize=True,
    database=None,
    print_blob=True,
)
settings.register_profile(
    "fuzz",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "default")
)


def pytest_configure(config: pytest.Config) -> None:
    """Register the `fuzz` marker (select with `-m fuzz`)."""
    config.addinivalue_line("markers", "fuzz: property tests on untrusted input (make fuzz)")
