"""The LiteLLM test needs LiteLLM's proxy installed: only its nox session has it (see noxfile.py)."""

from __future__ import annotations

import importlib.util

collect_ignore = [] if importlib.util.find_spec("litellm") is not None else ["test_litellm.py"]
