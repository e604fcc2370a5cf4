"""ConvAI2 / Persona-Chat in ParlAI's text format: a streaming reader and a writer.

A file is a sequence of episodes (one dialogue each) of numbered lines; the numbering restarts
at 1 with every episode. An episode opens with persona lines (``your persona: ...``, and in the
``both_`` files also ``partner's persona: ...``; none at all in the ``none_`` files), then one
line per turn of the speaker::

    N <partner text>\\t<response>\\t\\t<candidate 1>|...|<candidate m>

The response is one of the candidates (last in the released files; we match it, never rely on
its position). The history of the j-th example is every earlier partner text and response, in
order, then the current partner text.

The offline generator writes this same format, so everything downstream has one reader.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

from metanb.data.tasks import Dialogue, Dialogues, Example, true_index
from metanb.errors import MetanbError
from metanb.io import atomic_write

SELF_PREFIX = "your persona:"
PARTNER_PREFIX = "partner's persona:"
DIALOGUE_LINE = "'<partner text>\\t<response>\\t\\t<cand 1>|...|<cand m>'"


def read_parlai(path: str | os.PathLike[str], skip_bad: bool = False) -> Dialogues:
    """Read every dialogue of a ParlAI ConvAI2 file, streaming it line by line.

    A malformed line raises a :class:`MetanbError` naming ``file:line`` and what was expected.
    With ``skip_bad=True`` the example of such a line is skipped instead (the texts of a
    well-numbered line still extend the history of the next examples); the result, a list of
    :class:`Dialogue`, then carries ``.skipped`` (how many lines were skipped) and
    ``.problems`` (the first messages).
    """
    result = Dialogues()
    result.extend(iter_parlai(path, skip_bad=skip_bad, on_skip=result.note_skipped))
    return result


def iter_parlai(
    path: str | os.PathLike[str],
    skip_bad: bool = False,
    on_skip: Callable[[str], None] | None = None,
) -> Iterator[Dialogue]:
    """Yield the dialogues of a ParlAI file one by one (for files too large to hold at once).

    ``on_skip(message)`` is called for each line skipped when ``skip_bad=True``.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise MetanbError(
            f"no such ParlAI file: {path}; point to ConvAI2's ParlAI text files "
            "(e.g. train_self_original.txt) or write an offline one with "
            "`python -m metanb data generate --out FILE`"
        ) from None
    except OSError as exc:
        raise MetanbError(f"cannot read ParlAI file {path}: {exc.strerror}") from None
    with handle:
        yield from _Parser(str(path), skip_bad, on_skip).parse(handle)


class _Parser:
    """The line-by-line state machine behind :func:`iter_parlai` (one episode open at a time)."""

    def __init__(self, source: str, skip_bad: bool, on_skip: Callable[[str], None] | None) -> None:
        self.source = source
        self.skip_bad = skip_bad
        self.on_skip = on_skip
        self.episode = -1
        self.allowed: tuple[int, ...] = ()  # line numbers that may come next (besides 1)
        self._reset()

    def _reset(self) -> None:
        self.persona: list[str] = []
        self.partner: list[str] = []
        self.history: list[str] = []
        self.examples: list[Example] = []

    def _problem(self, lineno: int, message: str) -> None:
        text = f"{self.source}:{lineno}: {message}"
        if not self.skip_bad:
            raise MetanbError(text + " (pass skip_bad=True / --skip-bad to skip such lines)")
        if self.on_skip is not None:
            self.on_skip(text)

    def _finish(self) -> Dialogue | None:
        """Close the open episode; episodes left with no example are dropped."""
        dialogue = None
        if self.examples:
            dialogue = Dialogue(
                persona=tuple(self.persona),
                examples=self.examples,
                partner_persona=tuple(self.partner),
                source=self.source,
                episode=self.episode,
            )
        self._reset()
        return dialogue

    def _start_episode(self) -> Dialogue | None:
        finished = self._finish()
        self.episode += 1
        return finished

    def parse(self, handle: Iterable[bytes]) -> Iterator[Dialogue]:
        for lineno, raw in enumerate(handle, 1):
            line, trusted = self._decode(lineno, raw)
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            number, _, rest = line.partition(" ")
            num = int(number) if number.isascii() and number.isdigit() else None
            if num == 1:
                if (finished := self._start_episode()) is not None:
                    yield finished
                self.allowed = (2,)
            elif num is not None and num in self.allowed:
                self.allowed = (num + 1,)
            else:
                if trusted:  # an undecodable line is reported once, as such
                    self._problem(lineno, self._numbering_problem(num, line))
                self._resynchronise(num)
                continue
            if trusted:
                self._read_line(lineno, rest)
        if (finished := self._finish()) is not None:
            yield finished

    def _decode(self, lineno: int, raw: bytes) -> tuple[str, bool]:
        """The line's text, and whether it can be trusted (valid UTF-8)."""
        try:
            return raw.decode("utf-8"), True
        except UnicodeDecodeError as exc:
            self._problem(
                lineno,
                f"expected UTF-8 text, got byte 0x{raw[exc.start]:02x} at column "
                f"{exc.start + 1}; re-save the file as UTF-8",
            )
            return raw.decode("utf-8", errors="replace"), False

    def _numbering_problem(self, num: int | None, line: str) -> str:
        if num is None:
            return f"expected a line number and a space, got {_preview(line)}"
        if not self.allowed:
            return f"expected line number 1 (an episode starts at 1), got {num}"
        return f"expected line number {self.allowed[0]} (or 1 to start a new episode), got {num}"

    def _resynchronise(self, num: int | None) -> None:
        """After a skipped line, accept the numbering of either reading of the mistake.

        The skipped line either took the place of the expected number (a corrupted number:
        the next line continues from the expected one) or a line is missing (the next line
        continues from the skipped line's number); either way only one line is skipped.
        """
        if not self.allowed:  # no episode open yet: the skipped line opens one
            self.episode += 1
            self.allowed = (num + 1,) if num is not None else ()
            return
        following = {n + 1 for n in self.allowed}
        if num is not None:
            following.add(num + 1)
        self.allowed = tuple(sorted(following))

    def _read_line(self, lineno: int, rest: str) -> None:
        if rest.startswith(SELF_PREFIX):
            self.persona.append(rest[len(SELF_PREFIX) :].strip())
            return
        if rest.startswith(PARTNER_PREFIX):
            self.partner.append(rest[len(PARTNER_PREFIX) :].strip())
            return
        fields = rest.split("\t")
        if len(fields) < 2:
            self._problem(
                lineno,
                f"expected a persona line or a dialogue line {DIALOGUE_LINE}, "
                f"got no tab in {_preview(rest)}",
            )
            return
        text, response = fields[0], fields[1]
        candidates = fields[3].split("|") if len(fields) > 3 and fields[3].strip() else []
        self.history.append(text)
        try:
            if not candidates:
                self._problem(
                    lineno,
                    f"expected a non-empty candidate list as the 4th tab-separated field "
                    f"{DIALOGUE_LINE}, got {len(fields)} fields",
                )
                return
            label = true_index(candidates, response)
            if label is None:
                self._problem(
                    lineno,
                    f"expected the response {_preview(response)} among the "
                    f"{len(candidates)} candidates, but it is not one of them",
                )
                return
            self.examples.append(Example(tuple(self.history), tuple(candidates), label))
        finally:
            self.history.append(response)


def _preview(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def format_parlai(dialogues: Iterable[Dialogue]) -> Iterator[str]:
    """The lines (with newlines) of the ParlAI text form of ``dialogues``.

    Each dialogue's examples must form one conversation: example j's history is the previous
    history plus the previous response plus the new partner text, as :func:`read_parlai`
    builds it; otherwise the file could not be read back to the same examples.
    """
    for d_index, dialogue in enumerate(dialogues):
        number = 0

        def numbered(text: str) -> str:
            nonlocal number
            number += 1
            return f"{number} {text}\n"

        for sentence in dialogue.persona:
            yield numbered(f"{SELF_PREFIX} {_clean(sentence, d_index)}")
        for sentence in dialogue.partner_persona:
            yield numbered(f"{PARTNER_PREFIX} {_clean(sentence, d_index)}")
        previous: tuple[str, ...] = ()
        for j, ex in enumerate(dialogue.examples):
            if not ex.history or ex.history[:-1] != previous:
                raise MetanbError(
                    f"dialogue {d_index}, example {j}: its history does not continue the "
                    "previous example's history and response, so it has no ParlAI form"
                )
            for cand in ex.candidates:
                _clean(cand, d_index, "|")
            text = _clean(ex.history[-1], d_index)
            cands = "|".join(ex.candidates)
            yield numbered(f"{text}\t{_clean(ex.response, d_index)}\t\t{cands}")
            previous = (*ex.history, ex.response)


def _clean(text: str, d_index: int, extra: str = "") -> str:
    for bad in "\t\n\r" + extra:
        if bad in text:
            raise MetanbError(
                f"dialogue {d_index}: text {_preview(text)} contains {bad!r}, which the ParlAI "
                "format uses as a separator"
            )
    return text


def write_parlai(dialogues: Iterable[Dialogue], path: str | os.PathLike[str]) -> Path:
    """Write ``dialogues`` as a ParlAI text file, atomically (:func:`metanb.io.atomic_write`).

    Returns the path written. A crash midway leaves any previous file untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise MetanbError(f"cannot write {path}: folder {directory} does not exist")
    lines = format_parlai(dialogues)

    def write(out: IO[bytes]) -> None:
        for line in lines:  # streamed: a large corpus is never held as one string
            out.write(line.encode("utf-8"))

    return atomic_write(path, write)


