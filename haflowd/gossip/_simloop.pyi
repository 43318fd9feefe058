from collections.abc import Callable
from typing import Any

class Queue:
    def push(self, when: float, kind: int, node: int, msg: Any, /) -> None: ...
    def run(
        self, sim: Any, end: float, predicate: Callable[[], bool] | None, check_every: float, /
    ) -> float | None: ...
