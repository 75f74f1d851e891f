from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Retries:
    """Modal's retry policy: delay before retry n is initial_delay * backoff_coefficient**(n-1)."""

    max_retries: int
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0

    def __post_init__(self) -> None:
        from apothic.exception import InvalidError

        if not isinstance(self.max_retries, int) or not 0 <= self.max_retries <= 10:
            raise InvalidError("max_retries must be an integer from 0 to 10")
        if not 1.0 <= self.backoff_coefficient <= 10.0:
            raise InvalidError("backoff_coefficient must be between 1.0 and 10.0")
        if not 0.0 <= self.initial_delay <= 60.0:
            raise InvalidError("initial_delay must be between 0 and 60 seconds")
        if not 1.0 <= self.max_delay <= 60.0:
            raise InvalidError("max_delay must be between 1 and 60 seconds")

    def wire(self) -> dict[str, float]:
        return {"max_retries": self.max_retries, "backoff_coefficient": self.backoff_coefficient,
                "initial_delay": self.initial_delay, "max_delay": self.max_delay}
