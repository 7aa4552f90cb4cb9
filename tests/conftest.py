"""Hypothesis profiles: ``dev`` (random) and ``ci`` (derandomized), as many examples each, so that
``make test`` on a newcomer's machine takes what CI takes (10 minutes on 2 cores is the budget);
``thorough`` is the many-examples run.

CI sets CI=true; choose explicitly with HYPOTHESIS_PROFILE=dev|ci|thorough|mutants.
"""

import os

import pytest
from hypothesis import HealthCheck, Phase, settings

# deadline=None: a first call may compile (Numba) or warm up BLAS/oneDNN.
_common = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("dev", max_examples=20, **_common)
settings.register_profile("ci", max_examples=20, derandomize=True, print_blob=True, **_common)
settings.register_profile("thorough", max_examples=400, **_common)  # a local stress run before a release
# make mutants: ci's examples (or fresh ones: --random), reported at the first failure (no
# shrinking: only "caught" matters)
_mutants = {"max_examples": 20, "phases": [Phase.explicit, Phase.generate], **_common}
settings.register_profile("mutants", derandomize=True, **_mutants)
settings.register_profile("mutants-random", **_mutants)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """The generated corpora go to a folder of the test session, never to the user's cache."""
    os.environ["MOBILENET_CACHE"] = str(tmp_path_factory.mktemp("cache"))
