"""Tasks generated locally with computed answers, so accuracy is exact (benchmarks, tests).

``arithmetic(n, digits, seed)``: addition and subtraction word problems of ``digits``-digit
numbers, e.g. "Ana has 47 stamps and gets 38 more. How many stamps does Ana have now?" -> "85".
``worked_rationale`` writes the column-by-column working a careful teacher would, ending in the
``Answer:`` line the ``rationales`` form reads.
"""

from __future__ import annotations

import random

from edgekd.lm.blackbox.records import PromptRecord

_NAMES = ("Ana", "Ben", "Chen", "Dara", "Eli", "Fay", "Gus", "Hana", "Ivo", "Jun")
_THINGS = ("stamps", "apples", "coins", "books", "shells", "cards", "marbles", "seeds")
_ADD = ("{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?",
        "What is {a} plus {b}?")
_SUB = ("{name} has {a} {thing} and gives away {b}. How many {thing} does {name} have left?",
        "What is {a} minus {b}?")


def arithmetic(n: int, digits: int = 2, seed: int = 0, prefix: str = "q") -> list[PromptRecord]:
    rng = random.Random(seed)
    low, high = 10 ** (digits - 1), 10**digits - 1
    out = []
    for index in range(n):
        a, b = rng.randint(low, high), rng.randint(low, high)
        subtract = rng.random() < 0.5
        if subtract and b > a:
            a, b = b, a
        template = rng.choice(_SUB if subtract else _ADD)
        prompt = template.format(name=rng.choice(_NAMES), thing=rng.choice(_THINGS), a=a, b=b)
        answer = a - b if subtract else a + b
        out.append(PromptRecord(f"{prefix}{index}", prompt, str(answer)))
    return out


def operands(prompt: str) -> tuple[int, int, str]:
    """The two numbers and the operation ("+" or "-") of an ``arithmetic`` prompt."""
    numbers = [int(w) for w in prompt.replace("?", " ").replace(".", " ").split() if w.isdigit()]
    op = "-" if ("gives away" in prompt or "minus" in prompt) else "+"
    return numbers[0], numbers[1], op


def worked_rationale(a: int, b: int, op: str) -> str:
    """Column arithmetic from the ones up, carries and borrows said out loud."""
    da, db = str(a)[::-1], str(b)[::-1].ljust(len(str(a)), "0")
    steps, carry, digits = [], 0, []
    for position, (x, y) in enumerate(zip(da, db, strict=False)):
        x, y = int(x), int(y)
        if op == "+":
            total = x + y + carry
            steps.append(
                f"column {position + 1}: {x} + {y} + {carry} = {total}, write {total % 10}"
            )
            digits.append(total % 10)
            carry = total // 10
        else:
            borrow_in = carry
            value = x - y - borrow_in
            carry = 1 if value < 0 else 0
            value += 10 * carry
            steps.append(
                f"column {position + 1}: {x} - {y} - {borrow_in} = {value}, borrow {carry}"
            )
            digits.append(value)
    if op == "+" and carry:
        digits.append(carry)
        steps.append(f"carry {carry} to a new column")
    result = a + b if op == "+" else a - b
    return "\n".join([f"{a} {op} {b}:", *steps, f"Answer: {result}"])
