"""Online learners, champion/challenger evaluation and the model registry."""

from __future__ import annotations

__all__: list[str] = []
