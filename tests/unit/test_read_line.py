"""The output reader's line splitting (supervisor.child.read_line), on an in-memory stream.

A line longer than the stream's limit came back as the next 64 KiB of the buffer, whole
lines after it included: with a flood of 100 MB without a newline followed by 50,000
short lines, thousands of them became one "line" (the flood test saw 38,221 of 51,526).
"""

from __future__ import annotations

import asyncio

from haflowd.supervisor.child import read_line

LIMIT = 2**16


async def lines_of(chunks: list[bytes], limit: int = LIMIT) -> list[bytes]:
    stream = asyncio.StreamReader(limit=limit)
    for c in chunks:
        stream.feed_data(c)
    stream.feed_eof()
    out = []
    for _ in range(100_000):  # bounded: every call takes at least a byte or ends
        line = await read_line(stream)
        if not line:
            return out
        out.append(line)
    raise AssertionError("read_line made no progress")


def test_short_lines_come_one_by_one_with_the_last_one_unterminated() -> None:
    assert asyncio.run(lines_of([b"a\nbb\n", b"c"])) == [b"a\n", b"bb\n", b"c"]
    assert asyncio.run(lines_of([])) == []


def test_the_lines_after_a_too_long_line_stay_lines() -> None:
    flood = b"\0" * (3 * LIMIT + 123)
    got = asyncio.run(lines_of([flood + b"y\n" * 5000]))
    assert b"".join(got) == flood + b"y\n" * 5000  # nothing lost, nothing added
    assert got[-4999:] == [b"y\n"] * 4999  # the first "y" ends the long line
    assert got[-5000].endswith(b"\0y\n")


def test_a_too_long_line_arriving_in_pieces_keeps_the_next_lines_apart() -> None:
    chunks = [b"\0" * 5000] * 40 + [b"end of it\n"] + [b"y\n"] * 3000
    got = asyncio.run(lines_of(chunks))
    assert b"".join(got) == b"".join(chunks)
    assert got[-3000:] == [b"y\n"] * 3000
