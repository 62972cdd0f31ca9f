"""Problem records, the exception that reports all of them at once, and message formatting helpers."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence


@dataclass(frozen=True)
class Problem:
    """One defect in the input data: the file, the value found, the value expected and how to fix it."""

    file: str
    found: str
    expected: str
    fix: str

    def __str__(self) -> str:
        text = f"{self.file}: found {self.found}; expected {self.expected}."
        if self.fix:
            text += f" {self.fix}"
        return text


class ValidationError(ValueError):
    """Input data that failed validation. The message lists every problem, one per line."""

    def __init__(self, problems: Sequence[Problem], title: str = "Input validation failed"):
        if not problems:
            raise ValueError("ValidationError needs at least one Problem")
        self.problems: list[Problem] = list(problems)
        self.title = title
        super().__init__(format_problem_list(title, self.problems))

    def __reduce__(self):
        # The default reduction would call ValidationError(message), which does not match __init__,
        # so the error could not cross a multiprocessing boundary.
        return (type(self), (self.problems, self.title))


def format_problem_list(title: str, problems: Sequence[Problem]) -> str:
    """Format a title line followed by one line per problem."""
    count = len(problems)
    noun = "problem" if count == 1 else "problems"
    lines = [f"{title} ({count} {noun}):"]
    lines.extend(f"  - {problem}" for problem in problems)
    return "\n".join(lines)


def raise_if_problems(problems: Sequence[Problem], title: str) -> None:
    """Raise one ValidationError listing all problems, if there are any."""
    if problems:
        raise ValidationError(problems, title)


def display_path(path: str | os.PathLike, root: str | os.PathLike | None = None) -> str:
    """Return the path relative to root when it lies inside root, else the path as given."""
    path = Path(path)
    if root is not None:
        try:
            return path.relative_to(root).as_posix()
        except ValueError:
            pass
    return str(path)


def format_size(size: Sequence[int]) -> str:
    """Format a voxel size as 512x512x20."""
    return "x".join(str(int(n)) for n in size)


def format_vector(values: Sequence[float], unit: str = "") -> str:
    """Format spacing or origin as 0.98x0.98x3 with up to 6 significant digits."""
    text = "x".join(f"{float(v):.6g}" for v in values)
    return f"{text} {unit}".rstrip()


def format_direction(direction: Sequence[float]) -> str:
    """Format a direction matrix (row-major, as SimpleITK returns it) as rows in brackets."""
    dim = int(round(len(direction) ** 0.5))
    rows = []
    for row in range(dim):
        entries = direction[row * dim:(row + 1) * dim]
        rows.append("[" + " ".join(f"{float(v):.4g}" for v in entries) + "]")
    return "[" + " ".join(rows) + "]"


def format_values(values: Iterable, limit: int = 12) -> str:
    """Format a set of values as {0, 2, 5}, cut after `limit` values with the total count."""
    ordered = sorted(values, key=_sort_key)
    shown = ", ".join(_format_value(v) for v in ordered[:limit])
    if len(ordered) > limit:
        return "{" + shown + f", ... ({len(ordered)} values in total)" + "}"
    return "{" + shown + "}"


def format_label_set(values: Iterable[int]) -> str:
    """Format integer label values, writing a consecutive run as 0-4."""
    ordered = sorted(set(int(v) for v in values))
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{{{ordered[0]}-{ordered[-1]}}}"
    return format_values(ordered)


def _format_value(value) -> str:
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return f"{number:.6g}"


def _sort_key(value) -> tuple:
    # NaN does not order against numbers, so it goes last.
    number = float(value)
    return (number != number, 0.0 if number != number else number)
