"""Lua scripts that move many stream entries per round trip, in replies that are cheap to parse.

redis-py parses replies in Python (hiredis is not a dependency), so what costs is the number of
reply elements, not bytes. ``APPEND`` adds a batch of events with one command and answers with
one string of ids; ``RANGE`` reads a batch and answers with three strings: the ids, the payload
lengths (-1: the entry has no event field) and the payloads end to end.
"""

from __future__ import annotations

__all__ = ["APPEND", "RANGE", "split_range"]

# KEYS[1] stream; ARGV[1] retention (MAXLEN ~), ARGV[2..] payloads.
APPEND = """
local ids = {}
for i = 2, #ARGV do
  ids[#ids + 1] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'e', ARGV[i])
end
return table.concat(ids, ' ')
"""

# KEYS[1] stream; ARGV[1] start ('-' or '(<id>' exclusive), ARGV[2] count.
RANGE = """
local entries = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', ARGV[2])
local ids, lengths, payloads = {}, {}, {}
for i, entry in ipairs(entries) do
  ids[i] = entry[1]
  local payload = nil
  local fields = entry[2]
  for j = 1, #fields, 2 do
    if fields[j] == 'e' then payload = fields[j + 1] end
  end
  if payload then
    lengths[i] = #payload
    payloads[#payloads + 1] = payload
  else
    lengths[i] = -1
  end
end
return {table.concat(ids, ' '), table.concat(lengths, ' '), table.concat(payloads)}
"""


def split_range(reply: list[bytes]) -> list[tuple[bytes, bytes | None]]:
    """The (stream id, payload or None) pairs of a ``RANGE`` reply."""
    ids, lengths, blob = reply
    if not ids:
        return []
    entries: list[tuple[bytes, bytes | None]] = []
    offset = 0
    for stream_id, length in zip(ids.split(), map(int, lengths.split()), strict=True):
        if length < 0:
            entries.append((stream_id, None))
        else:
            entries.append((stream_id, blob[offset : offset + length]))
            offset += length
    return entries
