"""A registry of named things (tasks, kinds, metrics): adding a name twice raises, as peft's
`register_peft_method` does, and an unknown name is refused with the choices listed."""

from __future__ import annotations

from .errors import LlmftError


class Registry(dict):
    """Items by name."""

    def __init__(self, noun: str):
        super().__init__()
        self.noun = noun

    def add(self, name: str, item):
        """Register `item` under `name` and return it; a duplicate name raises ValueError."""
        if name in self:
            raise ValueError(f"{self.noun} {name!r} is already registered")
        self[name] = item
        return item

    def lookup(self, name: str, error: type[Exception] = LlmftError):
        """The item called `name`, or `error` naming the choices."""
        if name not in self:
            raise error(f"unknown {self.noun} {name!r}; choose from {', '.join(sorted(self))}")
        return self[name]
