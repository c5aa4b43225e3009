"""Settings for every test package.

Hypothesis, by default, fails an example that runs longer than 200 ms (``deadline``) and a test whose
data takes long to generate (``HealthCheck.too_slow``): both measure the machine, not the code, and fail
at random on a busy one (CI: two shared cores). Turned off here for every property test, including those
that pass their own ``@settings`` (they inherit what they do not set). Loaded before any test module.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("ikegate", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ikegate")
