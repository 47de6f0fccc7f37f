"""One prompt at a time on a console.

Shows "k of n", the round and the judge's guess, then reads one answer: ``1``..``n``
picks a choice, ``u`` undoes the previous label (the item is asked again), ``q``
quits (labels given so far are kept; end of input counts as ``q``). Each label is
written to the store as it is given. Input comes from an injectable function or
text stream, so a script can drive it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from rich.console import Console
from rich.text import Text

from failforge.labelling.base import LabelItem, Labeller, give_label
from failforge.run.store import RunStore


def _from_stream(stream: TextIO, console: Console) -> Callable[[str], str]:
    def read(prompt: str) -> str:
        console.print(prompt, end="", markup=False, highlight=False)
        line = stream.readline()
        if line == "":
            raise EOFError
        return line

    return read


class TerminalLabeller(Labeller):
    name = "terminal"

    def __init__(
        self,
        console: Console | None = None,
        input: Callable[[str], str] | TextIO | None = None,  # noqa: A002 - the input source, like builtins.input
        name: str = "terminal",
    ):
        self.console = console or Console(highlight=False)
        if input is None:
            self._read: Callable[[str], str] = lambda prompt: self.console.input(prompt, markup=False)
        elif hasattr(input, "readline"):
            self._read = _from_stream(input, self.console)  # type: ignore[arg-type]
        else:
            self._read = input  # type: ignore[assignment]
        self.name = name

    def _show(self, item: LabelItem, position: int, total: int, labelled: int) -> None:
        c = self.console
        head = f"{position} of {total}  ({labelled} labelled)"
        if item.round is not None:
            head += f"  round {item.round}"
        c.rule(head)
        c.print(Text(item.text))
        if item.guess:
            c.print(Text.assemble(("judge's guess: ", "dim"), (item.guess, "bold")))

    def _label(self, store: RunStore, items: list[LabelItem], choices: list[str], already: int) -> None:
        keys = "  ".join(f"[{k}] {c}" for k, c in enumerate(choices, start=1)) + "  [u] undo  [q] quit > "
        total = already + len(items)
        history: list[int] = []  # positions labelled in this session, in order
        pos = 0
        while pos < len(items):
            item = items[pos]
            self._show(item, already + pos + 1, total, already + len(history))
            try:
                answer = self._read(keys).strip().lower()
            except EOFError:
                answer = "q"
            if answer == "q":
                self.console.print(f"stopped: {already + len(history)} of {total} labelled, kept in the run store", markup=False)
                return
            if answer == "u":
                if not history:
                    self.console.print("nothing to undo", markup=False)
                    continue
                pos = history.pop()
                give_label(store, items[pos], None, self.name)
                self.console.print(f"undone: {items[pos].id}", markup=False)
                continue
            if answer.isdigit() and 1 <= int(answer) <= len(choices):
                choice = choices[int(answer) - 1]
                give_label(store, item, choice, self.name)
                history.append(pos)
                pos += 1
                continue
            self.console.print(f"press 1-{len(choices)} to label, u to undo, q to quit", markup=False)
        self.console.print(f"done: {total} of {total} labelled", markup=False)
