"""What a user calls a run: its display name, tags and note, checked before they are stored.

The app's forms and the CLI take tags as one comma-separated text (`parse_tags`); the store takes a
list and checks each tag (`check_tags`), so a tag never holds a comma and reads the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.core.errors import ConfigError, quoted

NAME_MAX_CHARS = 200
TAG_MAX_CHARS = 40
MAX_TAGS = 20
NOTE_MAX_CHARS = 10_000


def check_name(name: str) -> str:
    """A run's display name, without surrounding spaces; empty, multi-line or too long is refused."""
    if not isinstance(name, str):
        raise ConfigError(f"a run name must be text, got {quoted(name)}")
    text = name.strip()
    if not text:
        raise ConfigError("a run name must not be empty")
    if len(text) > NAME_MAX_CHARS:
        raise ConfigError(f"a run name has at most {NAME_MAX_CHARS} characters, got {len(text)}")
    if any(not c.isprintable() for c in text):
        raise ConfigError(f"a run name must be one line of printable text, got {quoted(text)}")
    return text


def check_tags(tags: Iterable[str]) -> list[str]:
    """The tags without surrounding spaces and repeats, in the order given; each tag is 1 to TAG_MAX_CHARS
    printable characters without a comma (the app and CLI separate tags with commas)."""
    if isinstance(tags, str):
        raise ConfigError(f"tags must be a list of texts, got the text {quoted(tags)} (split it with parse_tags)")
    out: list[str] = []
    for i, tag in enumerate(tags, 1):
        if not isinstance(tag, str):
            raise ConfigError(f"tag {i} must be text, got {quoted(tag)}")
        text = tag.strip()
        if not text:
            raise ConfigError(f"tag {i} is empty: a tag needs at least one character")
        if len(text) > TAG_MAX_CHARS:
            raise ConfigError(f"tag '{text[:TAG_MAX_CHARS]}...' has {len(text)} characters; a tag has at most "
                              f"{TAG_MAX_CHARS}")
        if "," in text:
            raise ConfigError(f"tag '{text}' contains a comma: commas separate tags")
        if any(not c.isprintable() for c in text):
            raise ConfigError(f"tag {quoted(text)} must be printable text on one line")
        if text not in out:
            out.append(text)
    if len(out) > MAX_TAGS:
        raise ConfigError(f"a run has at most {MAX_TAGS} tags, got {len(out)}")
    return out


def parse_tags(text: str | None) -> list[str]:
    """Tags typed as one text, separated by commas ("baseline, digits"); blank pieces are an error."""
    if text is None or not text.strip():
        return []
    pieces = text.split(",")
    if any(not p.strip() for p in pieces):
        raise ConfigError(f"tags {quoted(text)} have an empty tag between commas: write them as 'one, two'")
    return check_tags(pieces)


def read_labels(name: str | None, tag_texts: Iterable[str] = ()) -> tuple[str | None, list[str]]:
    """The name and tags a user typed for a new run (a form's fields, --name and each --tag): a blank name is
    None (the run gets its default), each tag text may hold several tags separated by commas."""
    named = check_name(name) if name is not None and name.strip() else None
    return named, check_tags([t for text in tag_texts for t in parse_tags(text)])


def check_note(note: str | None) -> str:
    """A run's free-text note (may be empty or span lines), up to NOTE_MAX_CHARS characters."""
    if note is None:
        return ""
    if not isinstance(note, str):
        raise ConfigError(f"a note must be text, got {quoted(note)}")
    if len(note) > NOTE_MAX_CHARS:
        raise ConfigError(f"a note has at most {NOTE_MAX_CHARS} characters, got {len(note)}")
    return note.strip()
