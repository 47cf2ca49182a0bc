"""Configuration of the core tests."""

from __future__ import annotations

import contextlib
import warnings

# When a property fails, Hypothesis imports libcst to suggest a patch, and libcst
# raises a DeprecationWarning (via mypy_extensions) at import time, which the
# project's ``error::DeprecationWarning`` filter turns into an INTERNALERROR that
# hides the real failure. Import it once here, with that warning silenced.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401
